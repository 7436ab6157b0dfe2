"""The *carrier's* side of each dialect, for the simulated phone.

The server-side dialects (``voice_runtime.protocols``) parse what a carrier sends and encode what we send.
This is the mirror image: it produces exactly what Twilio/Plivo put on the wire and parses what a server
sends them, strictly, so a test fails if the server emits something the real carrier would reject.
"""

from __future__ import annotations

import binascii
import json
import secrets
import time
import uuid
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

    # Fresh ids per simulated call, as a carrier gives each call its own: the server admits one session per
    # call id on the tokenless route, so two phones must never share one by accident.
    call_id: str = field(default_factory=lambda: "CA" + secrets.token_hex(16))
    stream_id: str = field(default_factory=lambda: "MZ" + secrets.token_hex(16))
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


_PLIVO_FORMATS = {"audio/x-mulaw;rate=8000", "audio/x-l16;rate=8000", "audio/x-l16;rate=16000"}
_PLIVO_MAX_MESSAGE = 64 * 1024
_PLIVO_DTMF_OUT = frozenset("0123456789*#ABCDwW")


@dataclass
class PlivoCarrier(CarrierCodec):
    """Plivo Audio Streaming, bidirectional (telephony-protocols §2.1/§2.2).

    Speaks μ-law 8 kHz or L16 at 8/16 kHz (``content_type``, as in the ``<Stream contentType>``). The phone
    works in μ-law 8 kHz; this codec converts at the edge with deliberately simple, *stateless per message*
    arithmetic (sample-pair interpolation / averaging) so every message maps to exactly 20 ms, unlike the
    server's streaming resampler — an independent implementation, so a byte-order or rate mistake on the
    server shows up as garbage here rather than cancelling out. L16 is little-endian (see docs/plivo.md).

    Plivo's behaviours reproduced: no ``connected`` (``start`` first, numeric ``sequenceNumber``/``chunk``,
    ``extra_headers`` in the chosen documented shape), a checkpoint ack (``playedStream`` or the support
    article's ``played``) only for audio that actually played, *no* ack for checkpoints pending at
    ``clearAudio`` but a ``clearedAudio`` reply, and an optional ``stop``.
    """

    name = "plivo"
    echoes_marks_on_clear = False

    call_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    stream_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    account_id: str = "MAXXXXXXXXXXXXXXXXXX"
    content_type: str = "audio/x-mulaw;rate=8000"
    extra_headers_style: str = "semicolon"  # semicolon | comma | json | omit
    ack_event: str = "playedStream"  # or "played"
    send_stop: bool = True
    epoch_timestamps: bool = True  # [PL-REF] "Unix timestamp in milliseconds" (the SDK says: from stream start)
    #: Largest base64 payload seen in a playAudio (Plivo recommends <= 16 KB; 64 KB per message is the hard cap).
    max_payload_b64: int = 0
    max_message_bytes: int = 0
    _t0_ms: int = 0

    def __post_init__(self) -> None:
        if self.content_type not in _PLIVO_FORMATS:
            raise ValueError(f"unsupported Plivo contentType {self.content_type!r}; valid: {sorted(_PLIVO_FORMATS)}")
        encoding, _, rate = self.content_type.partition(";rate=")
        self.encoding, self.rate = encoding, int(rate)
        self._t0_ms = int(time.time() * 1000)

    # -- conversions (μ-law 8 kHz <-> stream format) --------------------------------------------------
    def _to_stream(self, ulaw: bytes) -> bytes:
        if self.encoding == "audio/x-mulaw":
            return ulaw
        import numpy as np

        from voice_runtime.audio.g711 import ulaw_to_pcm16

        pcm = ulaw_to_pcm16(ulaw).astype(np.int32)
        if self.rate == 16000:
            following = np.append(pcm[1:], pcm[-1:])
            pcm = np.stack([pcm, (pcm + following) // 2], axis=1).reshape(-1)
        return pcm.astype("<i2").tobytes()

    def _from_stream(self, data: bytes) -> bytes:
        if self.encoding == "audio/x-mulaw":
            return data
        import numpy as np

        from voice_runtime.audio.g711 import pcm16_to_ulaw

        if len(data) % 2:
            raise CarrierViolation(f"L16 payload of odd length {len(data)}")
        pcm = np.frombuffer(data, dtype="<i2").astype(np.int32)
        if self.rate == 16000:
            if len(pcm) % 2:
                pcm = np.append(pcm, pcm[-1:])
            pcm = (pcm[0::2] + pcm[1::2]) // 2
        return pcm16_to_ulaw(pcm.astype(np.int16))

    def _extra_headers(self) -> str:
        params = self.custom_parameters
        if self.extra_headers_style == "json":
            return json.dumps(params)
        separator = "," if self.extra_headers_style == "comma" else ";"
        return separator.join(f"{k}={v}" for k, v in params.items())

    def _with_headers(self, msg: dict[str, Any]) -> str:
        if self.extra_headers_style != "omit":
            msg["extra_headers"] = self._extra_headers()
        return json.dumps(msg)

    # -- messages to the server ---------------------------------------------------------------------
    def opening(self) -> list[str]:
        start = {
            "event": "start",
            "sequenceNumber": self.next_sequence(),
            "start": {
                "callId": self.call_id,
                "streamId": self.stream_id,
                "accountId": self.account_id,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": self.encoding, "sampleRate": self.rate},
            },
        }
        return [self._with_headers(start)]

    def media(self, payload: bytes, chunk: int, timestamp_ms: int) -> str:
        stamp = self._t0_ms + timestamp_ms if self.epoch_timestamps else timestamp_ms
        return self._with_headers(
            {
                "event": "media",
                "sequenceNumber": self.next_sequence(),
                "streamId": self.stream_id,
                "media": {"track": "inbound", "timestamp": str(stamp), "chunk": chunk, "payload": _b64(self._to_stream(payload))},
            }
        )

    def dtmf(self, digit: str) -> str:
        return self._with_headers(
            {
                "event": "dtmf",
                "sequenceNumber": self.next_sequence(),
                "streamId": self.stream_id,
                "dtmf": {"track": "inbound", "digit": digit, "timestamp": str(self._t0_ms)},
            }
        )

    def mark_echo(self, name: str) -> str:
        return json.dumps({"event": self.ack_event, "sequenceNumber": self.next_sequence(), "streamId": self.stream_id, "name": name})

    def clear_ack(self) -> str | None:
        return json.dumps({"sequenceNumber": self.next_sequence(), "event": "clearedAudio", "streamId": self.stream_id})

    def stop(self) -> str | None:
        if not self.send_stop:
            return None
        return json.dumps({"event": "stop", "sequenceNumber": self.next_sequence(), "streamId": self.stream_id, "reason": "callEnded"})

    # -- messages from the server -------------------------------------------------------------------
    def parse(self, text: str | bytes) -> ServerMessage:
        if isinstance(text, bytes):
            raise CarrierViolation("Plivo audio streams carry JSON text frames, not binary")
        size = len(text.encode("utf-8"))
        self.max_message_bytes = max(self.max_message_bytes, size)
        if size > _PLIVO_MAX_MESSAGE:
            raise CarrierViolation(f"message of {size} bytes exceeds Plivo's 64 KB limit")
        msg = json.loads(text)
        if not isinstance(msg, dict):
            raise CarrierViolation("message is not a JSON object")
        event = msg.get("event")
        if event == "playAudio":
            extra = set(msg) - {"event", "media", "streamId"}
            if extra:
                raise CarrierViolation(f"unexpected fields in playAudio: {sorted(extra)}")
            if "streamId" in msg and msg["streamId"] != self.stream_id:
                raise CarrierViolation("playAudio for another stream")
            media = msg.get("media")
            if not isinstance(media, dict) or set(media) != {"contentType", "sampleRate", "payload"}:
                raise CarrierViolation(f"playAudio media must be exactly contentType/sampleRate/payload, got {media!r}"[:200])
            if media["contentType"] != self.encoding or media["sampleRate"] != self.rate or isinstance(media["sampleRate"], bool):
                raise CarrierViolation(
                    f"playAudio {media['contentType']!r}@{media['sampleRate']!r} does not match the stream's "
                    f"{self.encoding}@{self.rate}"
                )
            self.max_payload_b64 = max(self.max_payload_b64, len(media["payload"]) if isinstance(media["payload"], str) else 0)
            payload = _strict_b64(media["payload"])
            if not payload:
                raise CarrierViolation("empty playAudio payload")
            return ServerMedia(self._from_stream(payload))
        if event == "checkpoint":
            if set(msg) != {"event", "streamId", "name"}:
                raise CarrierViolation(f"checkpoint must be exactly event/streamId/name, got {sorted(msg)}")
            if msg["streamId"] != self.stream_id:
                raise CarrierViolation("checkpoint for another stream")
            if not isinstance(msg["name"], str) or not msg["name"]:
                raise CarrierViolation("checkpoint without a name")
            return ServerMark(msg["name"])
        if event == "clearAudio":
            if set(msg) != {"event", "streamId"} or msg["streamId"] != self.stream_id:
                raise CarrierViolation(f"clearAudio must be exactly event/streamId of this stream, got {msg!r}"[:200])
            return ServerClear()
        if event == "sendDTMF":
            digits = msg.get("dtmf")
            if set(msg) != {"event", "dtmf"} or not isinstance(digits, str) or not digits:
                raise CarrierViolation(f"sendDTMF must be exactly event/dtmf(string), got {msg!r}"[:200])
            if any(d not in _PLIVO_DTMF_OUT for d in digits):
                raise CarrierViolation(f"invalid DTMF digits {digits!r}")
            return ServerDtmf(digits)
        raise CarrierViolation(f"unknown outbound event {event!r}")


CARRIERS: dict[str, type[CarrierCodec]] = {"twilio": TwilioCarrier, "plivo": PlivoCarrier}


def carrier_codec(name: str, **kwargs: Any) -> CarrierCodec:
    try:
        cls = CARRIERS[name]
    except KeyError:
        raise ValueError(f"unknown carrier {name!r}; valid: {', '.join(sorted(CARRIERS))}") from None
    return cls(**kwargs)
