"""The 0.1.x mock transport (NC-271): two processes talk through text, with real media-stream sockets.

``TRANSPORT=mock`` setups used this to run a bot against a simulated caller without a carrier:

* :func:`initiate_mock_call(target_url)` plays Twilio's part of an inbound call: it POSTs the ``/incoming``
  webhook (``CallSid``, ``From``) to the target, reads the ``<Stream url>`` from the TwiML it answers
  (falling back to ``{target}/voice``) and connects a :class:`FakeWsBridge` there. With ``caller_url`` (or
  ``VOICE_STREAM_URL``) a second bridge connects to the caller's own ``/voice``, so both sides' marks echo.
* :func:`create_text_relay(peer_url)` is an ``on_spoken`` callback for ``MockTts``: it POSTs the spoken
  text to the peer's ``/test/inject`` (or the routed ``/test/inject/{token}`` learned from the TwiML), where
  the peer hands it to its ``MockStt``. Serving that route, and refusing it unless :func:`is_mock_transport`,
  is the application's job, as in 0.1.x.

What changed underneath: :class:`FakeWsBridge` is a :class:`~voice_runtime.testing.SimulatedPhone`, so the
far end behaves like Twilio — 20 ms caller frames in real time, marks echoed only when the audio before them
has played, ``clear`` honoured — instead of echoing marks instantly and ignoring audio. Bridges are stopped
with :func:`cleanup_bridges` (or each bridge's :meth:`~FakeWsBridge.stop`).
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable
from html.parser import HTMLParser
from urllib.parse import urlsplit

import httpx

from voice_runtime.transports.twilio_call import to_ws_url

log = logging.getLogger(__name__)

__all__ = ["FakeWsBridge", "cleanup_bridges", "create_text_relay", "initiate_mock_call", "is_mock_transport"]

#: Bridges started by :func:`initiate_mock_call` and not yet cleaned up.
_active_bridges: list[FakeWsBridge] = []
#: Peer base URL → the inject URL its TwiML routed us to.
_relay_url_by_peer: dict[str, str] = {}
_state_lock = threading.Lock()

MOCK_CALLER = "+358400000000"


def is_mock_transport() -> bool:
    """True when ``TRANSPORT=mock`` (any case): the switch 0.1.x apps read to enable the mock routes."""
    return os.environ.get("TRANSPORT", "").strip().lower() == "mock"


def _hex8() -> str:
    return uuid.uuid4().hex[:8]


class FakeWsBridge:
    """The carrier side of one media stream (Twilio protocol), connected to ``ws_url`` by :meth:`start`."""

    def __init__(self, call_sid: str | None = None) -> None:
        self._call_sid = call_sid or f"CAMOCK_{_hex8()}"
        self._stream_sid = f"MZ{_hex8()}"
        self.phone: object | None = None

    @property
    def call_sid(self) -> str:
        return self._call_sid

    def start(self, ws_url: str, *, timeout: float = 5.0) -> FakeWsBridge:
        """Connect and start streaming (``connected`` + ``start``, then caller frames). Raises on failure."""
        from voice_runtime.testing.phone import SimulatedPhone

        phone = SimulatedPhone(ws_url, carrier="twilio", call_id=self._call_sid, stream_id=self._stream_sid)
        self.phone = phone.connect(timeout)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Hang up like the carrier (``stop``, then close) and stop the bridge's thread."""
        phone = self.phone
        if phone is not None:
            phone.hangup(timeout)  # type: ignore[attr-defined]


class _StreamUrl(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.url: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag.lower() == "stream" and self.url is None:
            self.url = dict(attrs).get("url")

    handle_startendtag = handle_starttag


def _stream_url_from(twiml: str) -> str | None:
    parser = _StreamUrl()
    try:
        parser.feed(twiml or "")
    except Exception:
        return None
    return parser.url


def _inject_url(target: str, stream_url: str) -> str:
    path = urlsplit(stream_url).path.rstrip("/")
    head, _, token = path.rpartition("/")
    if head.endswith("/voice") and token:
        return f"{target}/test/inject/{token}"
    return f"{target}/test/inject"


def initiate_mock_call(target_url: str, caller_url: str | None = None, *, timeout: float = 10.0) -> str:
    """Start a mock inbound call to ``target_url``; returns its fake CallSid (``CAMOCK_…``). Blocking."""
    target = target_url.rstrip("/")
    call_sid = f"CAMOCK_{_hex8()}"
    response = httpx.post(f"{target}/incoming", data={"CallSid": call_sid, "From": MOCK_CALLER}, timeout=timeout)
    response.raise_for_status()
    stream_url = _stream_url_from(response.text) or f"{to_ws_url(target)}/voice"
    stream_url = to_ws_url(stream_url)
    bridge = FakeWsBridge(call_sid=call_sid)
    with _state_lock:
        _relay_url_by_peer[target] = _inject_url(target, stream_url)
        _active_bridges.append(bridge)
    bridge.start(stream_url)
    caller = caller_url or os.environ.get("VOICE_STREAM_URL")
    if caller:
        own = FakeWsBridge(call_sid=call_sid)
        with _state_lock:
            _active_bridges.append(own)
        own.start(f"{to_ws_url(caller.rstrip('/'))}/voice")
    return call_sid


def create_text_relay(peer_url: str, *, timeout: float = 5.0) -> Callable[[str], None]:
    """An ``on_spoken`` callback that POSTs ``{"text": ...}`` to the peer's inject URL (errors logged)."""
    peer = peer_url.rstrip("/")

    def relay(text: str) -> None:
        with _state_lock:
            url = _relay_url_by_peer.get(peer, f"{peer}/test/inject")
        client = httpx.Client(timeout=timeout)
        try:
            client.post(url, json={"text": text}).raise_for_status()
        except Exception as exc:
            log.warning("text relay to %s failed: %s", url, exc)
        finally:
            client.close()

    return relay


def cleanup_bridges(timeout: float = 5.0) -> None:
    """Stop every bridge :func:`initiate_mock_call` started."""
    with _state_lock:
        bridges = list(_active_bridges)
        _active_bridges.clear()
    for bridge in bridges:
        try:
            bridge.stop(timeout)
        except Exception:
            log.exception("stopping a mock bridge failed")
