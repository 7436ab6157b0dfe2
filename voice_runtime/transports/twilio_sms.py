"""Twilio SMS (prior-art API): ``send_sms(to, body) -> {"message_sid", "status", "to"}``.

Reached as ``get_sms_transport("twilio").send_sms(...)``. Configuration comes from ``TWILIO_ACCOUNT_SID``,
``TWILIO_AUTH_TOKEN`` (or ``TWILIO_API_KEY``/``TWILIO_API_SECRET``) and ``TWILIO_PHONE_NUMBER`` (the sender)
unless a client / sender is passed. Twilio's refusals (invalid number 21211, unverified trial number 21608,
body too long 21617, throttling 20429, ...) raise :class:`~voice_runtime.errors.CarrierApiError` carrying
Twilio's ``code`` and the HTTP ``status`` so callers can branch on them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from voice_runtime.transports.twilio_client import TwilioCredentials, build_twilio_client, carrier_error

log = logging.getLogger(__name__)


def send_sms_with_client(
    client: Any, *, to: str, body: str, from_: str, status_callback: str | None = None
) -> dict[str, str]:
    """Send one message with an existing SDK client (used by call control and :func:`send_sms`)."""
    if not to or not body:
        raise ValueError("send_sms needs a recipient and a body")
    kwargs: dict[str, Any] = {"to": to, "body": body}
    if from_.startswith("MG"):  # a Messaging Service picks the sender itself
        kwargs["messaging_service_sid"] = from_
    else:
        kwargs["from_"] = from_
    if status_callback:
        kwargs["status_callback"] = status_callback
    try:
        message = client.messages.create(**kwargs)
    except Exception as exc:
        raise carrier_error(exc, "SMS send") from None
    log.info("sent SMS %s (status %s)", message.sid, message.status)
    # "to" is the number as the caller gave it (0.1.x shape), so callers can match results to requests.
    return {"message_sid": str(message.sid), "status": str(message.status), "to": to}


def send_sms(
    to: str,
    body: str,
    *,
    from_number: str | None = None,
    client: Any = None,
    status_callback: str | None = None,
    environ: Mapping[str, str] | None = None,
    from_: str | None = None,
) -> dict[str, str]:
    """Send ``body`` to ``to``; returns ``{"message_sid", "status", "to"}`` (blocking, bounded timeout).

    ``from_number`` (or its 0.1.x spelling ``from_``; default ``TWILIO_PHONE_NUMBER``) may also be a
    Messaging Service SID (``MG…``). With an explicit sender, ``TWILIO_PHONE_NUMBER`` is not needed.
    """
    if not to or not body:
        raise ValueError("send_sms needs a recipient and a body")
    sender = from_number or from_
    if client is None:
        credentials = TwilioCredentials.from_env(environ)
        client = build_twilio_client(credentials)
        sender = sender or credentials.require_from_number()
    if not sender:
        from voice_runtime.errors import ConfigError

        raise ConfigError("TWILIO_PHONE_NUMBER is not set: it is the SMS sender")
    return send_sms_with_client(client, to=to, body=body, from_=sender, status_callback=status_callback)


__all__ = ["send_sms", "send_sms_with_client"]
