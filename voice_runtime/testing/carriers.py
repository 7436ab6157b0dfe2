"""The *carrier's* side of each dialect, for the simulated phone.

The server-side dialects (``voice_runtime.protocols``) parse what a carrier sends and encode what we send.
This is the mirror image: it produces exactly what Twilio/Plivo put on the wire and parses what a server
sends them, strictly, so a test fails if the server emits something the real carrier would reject.
"""

from __future__ import annotations

import binascii
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class ServerMedia:
    payload: bytes  # μ-law 8 kHz (converted from the stream format by the carrier codec)


@dataclass(frozen=True)
class ServerMark:
    name: str


@dataclass(frozen=True)
class ServerClear:
    pass


@dataclass(frozen=True)
class ServerDtmf:
    digits: str


ServerMessage = ServerMedia | ServerMark | ServerClear | ServerDtmf


class CarrierViolation(AssertionError):
    """The server sent something the real carrier would reject (a test failure, not a runtime error)."""


@dataclass
class CarrierCodec:
    """Base for the carrier-side codec. One instance per simulated call."""

    name: ClassVar[str] = ""
    #: Does the carrier echo marks that were pending when a clear arrived? (Twilio yes, Plivo no.)
    echoes_marks_on_clear: ClassVar[bool] = True

    call_id: str = "CA00000000000000000000000000000001"
    stream_id: str = "MZ00000000000000000000000000000001"
    account_id: str = "AC00000000000000000000000000000001"
    custom_parameters: dict[str, str] = field(default_factory=dict)
    _sequence: int = 0

    def next_sequence(self) -> int:
        self._sequence += 1
        return self._sequence

    # messages to the server
    def opening(self) -> list[str]:
        raise NotImplementedError

    def media(self, payload: bytes, chunk: int, timestamp_ms: int) -> str:
        raise NotImplementedError

    def dtmf(self, digit: str) -> str:
        raise NotImplementedError

    def mark_echo(self, name: str) -> str:
        raise NotImplementedError

    def clear_ack(self) -> str | None:
        return None

    def stop(self) -> str | None:
        raise NotImplementedError

    # messages from the server
    def parse(self, text: str | bytes) -> ServerMessage:
        raise NotImplementedError


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _strict_b64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise CarrierViolation(f"payload must be a base64 string, got {type(value).__name__}")
    try:
        return binascii.a2b_base64(value, strict_mode=True)
    except binascii.Error as exc:
        raise CarrierViolation(f"invalid base64 payload: {exc}") from None


class TwilioCarrier(CarrierCodec):
    """Twilio Media Streams, bidirectional (telephony-protocols §1.2/§1.3)."""

    name = "twilio"
    echoes_marks_on_clear = True

    def opening(self) -> list[str]:
        start = {
            "event": "start",
            "sequenceNumber": str(self.next_sequence()),
            "start": {
                "accountSid": self.account_id,
                "streamSid": self.stream_id,
                "callSid": self.call_id,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": dict(self.custom_parameters),
            },
            "streamSid": self.stream_id,
        }
        return [json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}), json.dumps(start)]

    def media(self, payload: bytes, chunk: int, timestamp_ms: int) -> str:
        return json.dumps(
            {
                "event": "media",
                "sequenceNumber": str(self.next_sequence()),
                "media": {"track": "inbound", "chunk": str(chunk), "timestamp": str(timestamp_ms), "payload": _b64(payload)},
                "streamSid": self.stream_id,
            }
        )

    def dtmf(self, digit: str) -> str:
        return json.dumps(
            {
                "event": "dtmf",
                "streamSid": self.stream_id,
                "sequenceNumber": str(self.next_sequence()),
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )

    def mark_echo(self, name: str) -> str:
        return json.dumps(
            {"event": "mark", "sequenceNumber": str(self.next_sequence()), "streamSid": self.stream_id, "mark": {"name": name}}
        )

    def stop(self) -> str | None:
        return json.dumps(
            {
                "event": "stop",
                "sequenceNumber": str(self.next_sequence()),
                "stop": {"accountSid": self.account_id, "callSid": self.call_id},
                "streamSid": self.stream_id,
            }
        )

    def parse(self, text: str | bytes) -> ServerMessage:
        if isinstance(text, bytes):
            raise CarrierViolation("Twilio rejects binary frames (error 31950)")
        msg = json.loads(text)
        event = msg.get("event")
        if msg.get("streamSid") != self.stream_id:
            raise CarrierViolation(f"wrong or missing streamSid in {event!r} (error 31951)")
        if event == "media":
            media = msg.get("media")
            if not isinstance(media, dict) or set(media) != {"payload"}:
                raise CarrierViolation(f"outbound media must be exactly {{'payload'}}, got {media!r}")
            payload = _strict_b64(media["payload"])
            if not payload:
                raise CarrierViolation("empty media payload")
            return ServerMedia(payload)
        if event == "mark":
            mark = msg.get("mark")
            if not isinstance(mark, dict) or not isinstance(mark.get("name"), str):
                raise CarrierViolation("mark without a mark.name object")
            return ServerMark(mark["name"])
        if event == "clear":
            if set(msg) != {"event", "streamSid"}:
                raise CarrierViolation(f"unexpected fields in clear: {sorted(msg)}")
            return ServerClear()
        raise CarrierViolation(f"unknown outbound event {event!r} (error 31951)")


CARRIERS: dict[str, type[CarrierCodec]] = {"twilio": TwilioCarrier}


def carrier_codec(name: str, **kwargs: Any) -> CarrierCodec:
    try:
        cls = CARRIERS[name]
    except KeyError:
        raise ValueError(f"unknown carrier {name!r}; valid: {', '.join(sorted(CARRIERS))}") from None
    return cls(**kwargs)
