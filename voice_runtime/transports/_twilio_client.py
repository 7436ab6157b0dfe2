"""Prior-art import path (0.1.11+): ``build_twilio_client(sid, token)`` and ``build_explicit_twilio_client(region)``.

Both are thin adapters over :mod:`voice_runtime.transports.twilio_client`, the one place a Twilio REST client
is built, so they get the same bounded HTTP timeout (``TWILIO_HTTP_TIMEOUT``, default 15 s).
"""

from __future__ import annotations

import os
from typing import Any

from voice_runtime.transports import twilio_client as _clients
from voice_runtime.transports.twilio_regions import TwilioRegion


def build_twilio_client(account_sid: str, auth_token: str) -> Any:
    """A client for the ambient account (the SDK's own ``TWILIO_REGION``/``TWILIO_EDGE`` routing applies)."""
    env = os.environ
    credentials = _clients.TwilioCredentials(
        account_sid=account_sid,
        auth_token=auth_token,
        region=env.get("TWILIO_REGION") or None,
        edge=env.get("TWILIO_EDGE") or None,
        http_timeout=_clients.http_timeout_from_env(),
    )
    return _clients.build_twilio_client(credentials)


def build_explicit_twilio_client(region: TwilioRegion) -> Any:
    """A client that talks to ``region.api_host`` only, authenticated with ``region.auth``.

    The region is handed to the SDK's region/edge routing; the ambient ``TWILIO_REGION``/``TWILIO_EDGE`` are
    ignored (the SDK gets an empty environment) and ``os.environ`` is never modified.
    """
    from twilio.rest import Client

    timeout = _clients.http_timeout_from_env()
    edge, region_code = region.edge_and_region
    username, password = region.auth
    return Client(
        username,
        password,
        account_sid=region.account_sid,
        region=region_code,
        edge=edge,
        environment={},
        http_client=_clients.build_http_client(timeout),
    )


__all__ = ["build_explicit_twilio_client", "build_twilio_client"]
