"""What every carrier dialect provides, and the shared parsing helpers.

A dialect is a *sans-I/O* codec in the manner of h11/wsproto: it turns one WebSocket text message into one
typed event and one intent into one text message. It never touches a socket, a clock or a session, so it can
be tested and fuzzed with plain strings, and one WebSocket loop can drive any carrier.

One dialect instance serves one stream: it remembers the stream id from ``start`` (outbound messages must
carry it) and counts what it had to drop.
"""

from __future__ import annotations

import binascii
from collections import Counter
from typing import Any, ClassVar

import orjson

from voice_runtime.errors import RemoteProtocolError
from voice_runtime.protocols.events import CarrierEvent, MediaFormat

#: Refuse any single inbound message larger than this. A 20 ms media frame is ~300 bytes of JSON; even a
#: generous start message is a few KB. Megabyte messages are either a bug or an attack.
DEFAULT_MAX_INBOUND_MESSAGE = 64 * 1024


def loads_object(text: str | bytes) -> dict[str, Any]:
    """Parse a JSON object or raise :class:`RemoteProtocolError` with a countable reason."""
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise RemoteProtocolError("invalid_json", str(exc)[:80]) from None
    if not isinstance(obj, dict):
        raise RemoteProtocolError("not_an_object", type(obj).__name__)
    return obj


def decode_base64(value: Any) -> bytes:
    """Strict base64 (no stray characters), as the carriers send it."""
    if not isinstance(value, str):
        raise RemoteProtocolError("bad_payload_type", type(value).__name__)
    try:
        return binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise RemoteProtocolError("invalid_base64", str(exc)[:80]) from None


def encode_base64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def require_dict(obj: dict[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    if not isinstance(value, dict):
        raise RemoteProtocolError(f"missing_{key}", f"{key!r} must be an object")
    return value


def require_str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise RemoteProtocolError(f"missing_{key}", f"{key!r} must be a non-empty string")
    return value


def optional_int(value: Any) -> int | None:
    """Sequence numbers arrive as strings (Twilio) or numbers (Plivo); accept both, reject junk."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise RemoteProtocolError("bad_number", repr(value)[:40])
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():  # "²".isdigit() is True; int("²") fails
        try:
            return int(value)
        except ValueError:  # over the interpreter's int digit limit (4,300 by default)
            raise RemoteProtocolError("bad_number", value[:40]) from None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise RemoteProtocolError("bad_number", repr(value)[:40])


class Dialect:
    """Base class for carrier codecs. Subclasses implement ``parse`` and the ``encode_*`` methods."""

    # Read (and ``last_sequence`` written) by every media message's parse: slots, next to each other, because a
    # call's dialect is out of the CPU caches by its next frame on a busy server (``VoiceSession.__slots__``).
    # Every other attribute, and a subclass's own, lives in the instance ``__dict__`` as before.
    __slots__ = ("stream_id", "last_sequence", "__dict__", "__weakref__")

    #: Registry name (``"twilio"``, ``"plivo"``).
    name: ClassVar[str] = ""
    #: Whether ``encode_dtmf`` can send digits to the far end over the stream.
    supports_dtmf_out: ClassVar[bool] = False
    #: Largest outbound message the carrier accepts (None: no documented limit).
    max_outbound_message: ClassVar[int | None] = None

    def __init__(self) -> None:
        self.stream_id: str | None = None
        self.call_id: str | None = None
        self.media_format = MediaFormat()
        self.dropped: Counter[str] = Counter()
        self.last_sequence: int | None = None
        self.sequence_gaps = 0
        self.sequence_repeats = 0

    @classmethod
    def matches(cls, message: dict[str, Any]) -> bool:
        """Does this (first) message look like this carrier's?"""
        raise NotImplementedError

    def parse(self, text: str | bytes) -> CarrierEvent:
        raise NotImplementedError

    def encode_media(self, payload: bytes) -> str:
        """``payload`` is already in the stream's negotiated encoding."""
        raise NotImplementedError

    def encode_mark(self, name: str) -> str:
        raise NotImplementedError

    def encode_clear(self) -> str:
        raise NotImplementedError

    def encode_dtmf(self, digits: str) -> str:
        from voice_runtime.errors import LocalProtocolError

        raise LocalProtocolError(f"{self.name} cannot send DTMF over the media stream")

    def max_media_payload(self) -> int:
        """Largest raw payload per media message that keeps the message under the carrier's limit."""
        if self.max_outbound_message is None:
            return 1 << 20
        # base64 inflates by 4/3; leave room for the JSON envelope.
        return (self.max_outbound_message - 512) * 3 // 4

    def track_sequence(self, sequence: int | None) -> None:
        """Count gaps and repeats; the carrier numbers every message it sends."""
        if sequence is None:
            return
        last = self.last_sequence
        if last is not None:
            if sequence <= last:
                self.sequence_repeats += 1
                return
            if sequence != last + 1:
                self.sequence_gaps += 1
        self.last_sequence = sequence
