"""SMS transports (prior-art import path ``voice_runtime.transport``).

``get_sms_transport(name)`` returns an object with ``send_sms(to, body) -> {"message_sid", "status", "to"}``.
``create_transport(provider)`` (the 0.1.x README's factory) returns a carrier's transport functions.
``"mock"`` records messages in memory (demos and tests); carrier transports live in
``voice_runtime.transports.<carrier>_sms`` and are imported lazily.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any



class MockSmsTransport:
    """Keeps sent messages in ``outbox``; the result has the same shape as the carriers'."""

    def __init__(self) -> None:
        self.outbox: list[dict[str, str]] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def send_sms(self, to: str, body: str) -> dict[str, str]:
        if not to or not body:
            raise ValueError("send_sms needs a recipient and a body")
        with self._lock:
            sid = f"SMMOCK{next(self._ids):026d}"
            self.outbox.append({"message_sid": sid, "to": to, "body": body})
        return {"message_sid": sid, "status": "queued", "to": to}


_mock = MockSmsTransport()


def get_sms_transport(provider: str = "twilio") -> Any:
    """The SMS transport named ``provider`` (``twilio``, ``plivo`` or ``mock``)."""
    from voice_runtime.carriers import CARRIERS

    if provider == "mock":
        return _mock
    carrier = CARRIERS.get(provider)
    if carrier is None or carrier.sms is None:
        valid = sorted(name for name, c in CARRIERS.items() if c.sms)
        raise ValueError(f"Unknown SMS transport: {provider!r}; valid: mock, {', '.join(valid)}")
    return carrier.load_sms()


@dataclass(frozen=True)
class Transport:
    """One carrier's transport, as 0.1.x's ``create_transport(provider=...)`` described it.

    The functions are the carrier's prior-art-level ones (environment-configured, blocking); ``call_control``
    builds the carrier's call control for a :class:`~voice_runtime.server.VoiceServer` (the new way).
    Members a carrier lacks are ``None``.
    """

    name: str
    register_voice_websocket: Callable[..., Any] | None = None
    initiate_outbound_call: Callable[..., Any] | None = None
    hangup_call: Callable[..., Any] | None = None
    send_sms: Callable[..., Any] | None = None
    call_control: Callable[..., Any] | None = None


def create_transport(provider: str = "twilio") -> Transport:
    """The transport named ``provider``: ``twilio``, ``plivo`` or ``mock`` (the 0.1.x mock bridge)."""
    if provider == "twilio":
        from voice_runtime.transports import twilio_call, twilio_sms
        from voice_runtime.transports.twilio_control import TwilioCallControl
        from voice_runtime.transports.twilio_ws import register_voice_websocket

        return Transport(
            "twilio", register_voice_websocket, twilio_call.initiate_outbound_call, twilio_call.hangup_call,
            twilio_sms.send_sms, TwilioCallControl,
        )
    if provider == "plivo":
        from voice_runtime.transports import plivo_sms
        from voice_runtime.transports.plivo_control import PlivoCallControl

        return Transport("plivo", send_sms=plivo_sms.send_sms, call_control=PlivoCallControl)
    if provider == "mock":
        from voice_runtime.transports import mock_bridge
        from voice_runtime.transports.twilio_ws import register_voice_websocket

        return Transport(
            "mock", register_voice_websocket, mock_bridge.initiate_mock_call, send_sms=_mock.send_sms,
        )
    raise ValueError(f"Unknown transport: {provider!r}; valid: mock, plivo, twilio")


__all__ = ["create_transport", "get_sms_transport", "MockSmsTransport", "Transport"]
