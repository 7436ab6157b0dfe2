"""The one place URL schemes are swapped: a carrier is given ``wss://`` for streams and ``https://`` for webhooks.

Users configure one public base URL (``public_url`` / ``VOICE_STREAM_URL``) in whichever form they have at
hand; these helpers derive the other form, keeping host, port and path.
"""

from __future__ import annotations

__all__ = ["to_ws_url", "to_http_url"]

_TO_WS = {"https://": "wss://", "http://": "ws://"}
_TO_HTTP = {"wss://": "https://", "ws://": "http://"}


def to_ws_url(url: str) -> str:
    for prefix, replacement in _TO_WS.items():
        if url.startswith(prefix):
            return replacement + url[len(prefix) :]
    return url


def to_http_url(url: str) -> str:
    for prefix, replacement in _TO_HTTP.items():
        if url.startswith(prefix):
            return replacement + url[len(prefix) :]
    return url
