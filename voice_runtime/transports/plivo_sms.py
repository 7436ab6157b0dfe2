"""Plivo SMS: ``get_sms_transport("plivo").send_sms(to, body)``, same result shape as Twilio's.

Configuration is read per call (never at import): ``PLIVO_AUTH_ID``, ``PLIVO_AUTH_TOKEN``,
``PLIVO_PHONE_NUMBER`` (the sender, Plivo's ``src``), optional ``PLIVO_HTTP_TIMEOUT`` (default 15 s) and
``PLIVO_API_URL`` (send the SDK's requests somewhere other than api.plivo.com — a proxy or a test fake).
The request is the SDK's ``messages.create``: ``POST /v1/Account/{auth_id}/Message/`` with JSON
``{"src", "dst", "text", "type": "sms", ...}``.
"""

from __future__ import annotations

import os
from typing import Any

from voice_runtime.errors import ConfigError
from voice_runtime.transports._plivo_client import build_plivo_client, credentials


def send_sms(
    to: str,
    body: str,
    *,
    from_number: str | None = None,
    auth_id: str | None = None,
    auth_token: str | None = None,
    api_base_url: str | None = None,
    timeout: float | None = None,
) -> dict[str, str]:
    """Send ``body`` to ``to``; returns ``{"message_sid", "status", "to"}`` (``status`` is Plivo's ``queued``).

    Raises :class:`ConfigError` when credentials or the sender number are missing, ``ValueError`` for an
    empty recipient or body, and the SDK's ``PlivoRestError`` subclasses when Plivo refuses the message.
    """
    if not to or not body:
        raise ValueError("send_sms needs a recipient and a body")
    src = from_number or os.environ.get("PLIVO_PHONE_NUMBER", "")
    if not src:
        raise ConfigError("PLIVO_PHONE_NUMBER is not set: Plivo needs a sender number (src) for SMS")
    client = build_plivo_client(credentials(auth_id, auth_token), api_base_url=api_base_url, timeout=timeout)
    try:
        response = client.messages.create(src=src, dst=to, text=body)
    finally:
        client.session.close()
        client.multipart_session.close()
    return {"message_sid": _first_uuid(response), "status": "queued", "to": to}


def _first_uuid(response: Any) -> str:
    """Plivo answers ``{"message_uuid": ["…"], "message": "message(s) queued", "api_id": …}``."""
    uuids = getattr(response, "message_uuid", None)
    if isinstance(uuids, (list, tuple)) and uuids:
        return str(uuids[0])
    if isinstance(uuids, str):
        return uuids
    return ""


__all__ = ["send_sms"]
