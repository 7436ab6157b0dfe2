"""Carrier dialects: pure codecs from wire JSON to typed events and back.

``detect_dialect`` picks the codec from the first message, so one WebSocket endpoint serves every carrier.
Dialects register themselves in :data:`DIALECTS` (name → class).
"""

from __future__ import annotations

from typing import Any

from voice_runtime.errors import RemoteProtocolError
from voice_runtime.protocols.base import Dialect, loads_object
from voice_runtime.protocols.events import (
    AudioCleared,
    CarrierEvent,
    Connected,
    DtmfReceived,
    MarkEchoed,
    MediaFormat,
    MediaReceived,
    StreamStarted,
    StreamStopped,
    UnknownEvent,
)
from voice_runtime.protocols.twilio import TwilioDialect

DIALECTS: dict[str, type[Dialect]] = {"twilio": TwilioDialect}

try:  # Plivo lives in its own module; optional so a partial install still serves Twilio.
    from voice_runtime.protocols.plivo import PlivoDialect

    DIALECTS["plivo"] = PlivoDialect
except ImportError:  # pragma: no cover
    pass


def detect_dialect(first_message: str | bytes | dict[str, Any]) -> Dialect:
    """Return a fresh codec for the carrier that sent ``first_message``."""
    message = first_message if isinstance(first_message, dict) else loads_object(first_message)
    for cls in DIALECTS.values():
        if cls.matches(message):
            return cls()
    raise RemoteProtocolError("unknown_dialect", str(message.get("event", "?"))[:40])


def get_dialect(name: str) -> Dialect:
    try:
        return DIALECTS[name]()
    except KeyError:
        raise ValueError(f"unknown dialect {name!r}; valid: {', '.join(sorted(DIALECTS))}") from None


__all__ = [
    "DIALECTS",
    "Dialect",
    "TwilioDialect",
    "detect_dialect",
    "get_dialect",
    "AudioCleared",
    "CarrierEvent",
    "Connected",
    "DtmfReceived",
    "MarkEchoed",
    "MediaFormat",
    "MediaReceived",
    "StreamStarted",
    "StreamStopped",
    "UnknownEvent",
]
