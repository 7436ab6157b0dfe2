"""Plivo Audio Streaming (bidirectional ``<Stream>``) as a pure codec.

Wire facts this follows (reference: telephony-protocols §2). Plivo sends no ``connected``: ``start`` comes
first and carries ``streamId``/``callId``/``accountId``/``mediaFormat``; ``sequenceNumber`` and
``media.chunk`` are *numbers*; field casing is mixed (camelCase fields, but the top-level ``extra_headers``
is snake_case). Where Plivo's own sources disagree we accept every documented variant on input and emit the
documented one on output:

* ``extra_headers``: a JSON object string, ``k=v;k=v`` (guide) or ``k=v,k=v`` (XML reference);
* the checkpoint ack: ``playedStream`` (docs, SDKs) or ``played`` (support article);
* ``stop``: absent from the reference, present in Plivo's Java SDK and transports — optional, and the socket
  closing is the authoritative end anyway.

Outbound ``playAudio`` carries ``contentType``/``sampleRate`` equal to the negotiated stream format (Plivo:
"must match what was specified in your Stream XML") and no ``streamId`` (as documented and as Plivo's SDKs
send it). Plivo acks a checkpoint only if the audio before it really played and never acks checkpoints that
were pending at ``clearAudio`` — the session resolves them itself when the clear goes out.
"""

from __future__ import annotations

from binascii import a2b_base64
from typing import Any

import orjson

from voice_runtime.errors import LocalProtocolError, RemoteProtocolError
from voice_runtime.protocols.base import (
    Dialect,
    decode_base64,
    encode_base64,
    optional_int,
    require_dict,
    require_str,
)
from voice_runtime.protocols.events import (
    AudioCleared,
    CarrierEvent,
    DtmfReceived,
    MarkEchoed,
    MediaFormat,
    MediaReceived,
    StreamStarted,
    StreamStopped,
    UnknownEvent,
)

DTMF_DIGITS = frozenset("0123456789*#ABCD")
#: What ``sendDTMF`` may carry: keypad digits plus Plivo's ``w``/``W`` pauses (as on its REST DTMF API).
DTMF_OUT_DIGITS = frozenset("0123456789*#ABCDwW")

MULAW = "audio/x-mulaw"
L16 = "audio/x-l16"
#: (encoding, rate) pairs Plivo streams (reference §2.2: μ-law at 8 kHz only, L16 at 8 or 16 kHz).
SUPPORTED_FORMATS = frozenset({(MULAW, 8000), (L16, 8000), (L16, 16000)})

#: Plivo's hard limit on one WebSocket message (reference §2.4 "max WS message 64 KB").
MAX_MESSAGE = 64 * 1024
#: Plivo's recommendation for one playAudio payload ("recommended chunk ≤ 16 KB base64").
RECOMMENDED_PAYLOAD_B64 = 16 * 1024

#: A ``media.timestamp`` above this (ms) is a Unix epoch time, not time since stream start (~3.2 years).
_EPOCH_MS_THRESHOLD = 100_000_000_000

#: Bytes of stream-format audio per byte of μ-law 8 kHz (the session's currency).
_EXPANSION = {(MULAW, 8000): 1, (L16, 8000): 2, (L16, 16000): 4}


def parse_content_type(value: str) -> MediaFormat:
    """``audio/x-l16;rate=16000`` (the XML ``contentType``) → :class:`MediaFormat`; ValueError if unsupported."""
    parts = [p.strip() for p in value.split(";") if p.strip()]
    if not parts:
        raise ValueError("empty contentType")
    encoding, rate = parts[0].lower(), 8000
    for param in parts[1:]:
        key, _, raw = param.partition("=")
        if key.strip().lower() == "rate":
            try:
                rate = int(raw.strip())
            except ValueError:
                raise ValueError(f"bad rate in contentType {value!r}") from None
    if (encoding, rate) not in SUPPORTED_FORMATS:
        raise ValueError(f"unsupported Plivo contentType {value!r}; valid: {', '.join(content_types())}")
    return MediaFormat(encoding=encoding, sample_rate=rate)


def content_type(fmt: MediaFormat) -> str:
    """The XML ``contentType`` string for ``fmt`` (``audio/x-mulaw;rate=8000``)."""
    return f"{fmt.encoding};rate={fmt.sample_rate}"


def content_types() -> list[str]:
    return sorted(f"{enc};rate={rate}" for enc, rate in SUPPORTED_FORMATS)


def parse_extra_headers(raw: Any) -> dict[str, str]:
    """Plivo's ``extra_headers`` in any documented shape → dict; junk gives ``{}`` (never raises).

    Shapes seen in Plivo's own sources: a JSON object string (stream SDK docstring, Rust transport), a dict
    (already decoded), ``userId=12345;sessionId=abc-xyz`` (guide/reference) and ``test1=12,test2=123``
    (XML reference).
    """
    if raw is None:
        return {}
    if isinstance(raw, dict):
        return {str(k): _scalar(v) for k, v in raw.items() if _is_scalar(v)}
    if not isinstance(raw, str):
        return {}
    text = raw.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError:
            return {}
        return parse_extra_headers(obj) if isinstance(obj, dict) else {}
    separator = ";" if ";" in text else ","
    out: dict[str, str] = {}
    for pair in text.split(separator):
        key, eq, value = pair.partition("=")
        key = key.strip()
        if eq and key:
            out[key] = value.strip()
    return out


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool))


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class PlivoDialect(Dialect):
    name = "plivo"
    supports_dtmf_out = True  # {"event": "sendDTMF", "dtmf": "..."}
    max_outbound_message = MAX_MESSAGE

    def __init__(self) -> None:
        super().__init__()
        self.account_id = ""
        self.extra_headers: dict[str, str] = {}
        self.clear_acks = 0
        self._epoch_base: int | None = None

    @classmethod
    def matches(cls, message: dict[str, Any]) -> bool:
        start = message.get("start")
        return message.get("event") == "start" and isinstance(start, dict) and "streamId" in start and "callId" in start

    # -- inbound --------------------------------------------------------------------------------------
    def parse(self, text: str | bytes) -> CarrierEvent:
        try:  # loads_object, inlined: this runs 50 times a second per call
            msg = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise RemoteProtocolError("invalid_json", str(exc)[:80]) from None
        # The hot path, as in the Twilio dialect: a media message of exactly the shape Plivo documents (every
        # field there, the sequence and chunk numbers as JSON integers, the timestamp as a digit string, this
        # stream, the inbound track) is read field by field with nothing called but the decoders. Anything else
        # falls through to the checked path below, which makes the same event or raises the precise error.
        try:
            if msg["event"] == "media":
                media = msg["media"]
                sequence, chunk, stamp = msg["sequenceNumber"], media["chunk"], media["timestamp"]
                sid = self.stream_id
                if (
                    sid is not None and msg["streamId"] == sid and media["track"] == "inbound"
                    and type(sequence) is int and type(chunk) is int
                    and type(stamp) is str and len(stamp) < 19 and stamp.isascii() and stamp.isdigit()
                ):
                    # Everything that can raise comes before the bookkeeping, so a fall-through counts nothing twice.
                    payload = a2b_base64(media["payload"], strict_mode=True)
                    ms = int(stamp)
                    if ms >= _EPOCH_MS_THRESHOLD:  # _stream_time, inlined: an epoch stamp, rebased on the first
                        base = self._epoch_base
                        if base is None:
                            base = self._epoch_base = ms
                        ms = ms - base if ms > base else 0
                    last = self.last_sequence
                    if last is not None and sequence != last + 1:
                        self.track_sequence(sequence)  # a gap or a repeat: the generic bookkeeping counts it
                    else:
                        self.last_sequence = sequence
                    return tuple.__new__(MediaReceived, (payload, sequence, chunk, ms))
        except (KeyError, TypeError, AttributeError, ValueError):  # ValueError: bad base64
            pass
        if type(msg) is not dict:
            raise RemoteProtocolError("not_an_object", type(msg).__name__)
        event = msg.get("event")
        if not isinstance(event, str):
            raise RemoteProtocolError("missing_event", "no string 'event' field")
        if event == "media":
            return self._parse_media(msg)
        if event in ("playedStream", "played"):
            self._check_stream(msg)
            self._sequence(msg)
            return MarkEchoed(require_str(msg, "name"))
        if event == "dtmf":
            self._check_stream(msg)
            self._sequence(msg)
            digit = require_str(require_dict(msg, "dtmf"), "digit")
            if digit not in DTMF_DIGITS:
                raise RemoteProtocolError("bad_dtmf_digit", digit[:8])
            return DtmfReceived(digit)
        if event == "clearedAudio":
            self._check_stream(msg)
            self._sequence(msg)
            self.clear_acks += 1
            return AudioCleared()
        if event == "start":
            return self._parse_start(msg)
        if event == "stop":
            self._sequence(msg)
            reason = msg.get("reason")
            stop = msg.get("stop")
            if reason is None and isinstance(stop, dict):
                reason = stop.get("reason")
            return StreamStopped(str(reason)[:80] if reason else "stop")
        return UnknownEvent(event[:40])

    def _sequence(self, msg: dict[str, Any]) -> int | None:
        sequence = optional_int(msg.get("sequenceNumber"))
        self.track_sequence(sequence)
        return sequence

    def _check_stream(self, msg: dict[str, Any]) -> None:
        if self.stream_id is None:
            raise RemoteProtocolError("before_start", "message before 'start'")
        sid = msg.get("streamId")
        if sid is not None and sid != self.stream_id:
            raise RemoteProtocolError("wrong_stream_id", str(sid)[:40])

    def _parse_media(self, msg: dict[str, Any]) -> MediaReceived:
        self._check_stream(msg)
        media = require_dict(msg, "media")
        track = media.get("track", "inbound")
        if track != "inbound":
            raise RemoteProtocolError("unexpected_track", str(track)[:20])
        payload = decode_base64(media.get("payload"))
        sequence = self._sequence(msg)
        return MediaReceived(
            payload, sequence=sequence, chunk=optional_int(media.get("chunk")), timestamp_ms=self._stream_time(media.get("timestamp"))
        )

    def _stream_time(self, raw: Any) -> int | None:
        """Milliseconds since the stream started, whichever way Plivo meant ``media.timestamp``.

        DISAGREE: the reference says Unix epoch milliseconds, Plivo's stream SDK says "from stream start".
        An epoch value (after 1973) is rebased on the first one seen; junk is ignored, never worth dropping
        audio for.
        """
        try:
            value = optional_int(raw)
        except RemoteProtocolError:
            return None
        if value is None or value < _EPOCH_MS_THRESHOLD:
            return value
        if self._epoch_base is None:
            self._epoch_base = value
        return max(0, value - self._epoch_base)

    def _parse_start(self, msg: dict[str, Any]) -> StreamStarted:
        if self.stream_id is not None:
            raise RemoteProtocolError("duplicate_start", "stream already started")
        start = require_dict(msg, "start")
        stream_id = require_str(start, "streamId")
        call_id = require_str(start, "callId")
        media_format = self._media_format(start.get("mediaFormat"))
        headers = parse_extra_headers(msg.get("extra_headers", start.get("extra_headers")))
        tracks_raw = start.get("tracks")
        tracks = tuple(str(t) for t in tracks_raw) if isinstance(tracks_raw, list) else ("inbound",)
        self.stream_id, self.call_id, self.media_format = stream_id, call_id, media_format
        self.account_id = str(start.get("accountId", ""))
        self.extra_headers = headers
        self._sequence(msg)
        return StreamStarted(
            stream_id=stream_id,
            call_id=call_id,
            account_id=self.account_id,
            media_format=media_format,
            custom_parameters=dict(headers),
            tracks=tracks,
        )

    @staticmethod
    def _media_format(raw: Any) -> MediaFormat:
        """Absent → μ-law 8 kHz; ``encoding`` may carry ``;rate=`` itself; unsupported → protocol error."""
        if raw is None:
            return MediaFormat()
        if not isinstance(raw, dict):
            raise RemoteProtocolError("bad_mediaFormat", type(raw).__name__)
        encoding = str(raw.get("encoding", MULAW))
        rate_raw = raw.get("sampleRate")
        try:
            fmt = parse_content_type(encoding if rate_raw is None else f"{encoding.split(';')[0]};rate={int(rate_raw)}")
        except (ValueError, TypeError):
            raise RemoteProtocolError("unsupported_format", f"{encoding}@{rate_raw}"[:60]) from None
        return fmt

    # -- outbound -------------------------------------------------------------------------------------
    def _sid(self) -> str:
        if self.stream_id is None:
            raise LocalProtocolError("cannot send before the stream started")
        return self.stream_id

    def max_media_payload(self) -> int:
        """Largest μ-law 8 kHz batch whose encoding stays within Plivo's recommended 16 KB base64 payload.

        The connection sizes batches in μ-law bytes and converts them to the stream format afterwards, so
        the budget is divided by the format's expansion (L16 16 kHz: 4 bytes per μ-law byte). A resampling
        format also releases audio it held back from earlier batches (soxr: up to ~100 ms), so 125 ms of
        slack is kept for it. 16 KB of base64 is far below the 64 KB message limit.
        """
        key = (self.media_format.encoding, self.media_format.sample_rate)
        expansion = _EXPANSION.get(key, 4)
        slack = 1000 if self.media_format.sample_rate != 8000 else 0
        return max(160, (RECOMMENDED_PAYLOAD_B64 * 3 // 4) // expansion - slack)

    def encode_media(self, payload: bytes) -> str:
        """``payload`` is already in the negotiated encoding (the connection converts μ-law → L16)."""
        self._sid()
        if not payload:
            raise LocalProtocolError("empty media payload")
        fmt = self.media_format
        text = orjson.dumps(
            {
                "event": "playAudio",
                "media": {"contentType": fmt.encoding, "sampleRate": fmt.sample_rate, "payload": encode_base64(payload)},
            }
        ).decode()
        if len(text) > MAX_MESSAGE:
            raise LocalProtocolError(f"playAudio of {len(text)} bytes exceeds Plivo's 64 KB message limit")
        return text

    def encode_mark(self, name: str) -> str:
        if not name:
            raise LocalProtocolError("checkpoint needs a name")
        return orjson.dumps({"event": "checkpoint", "streamId": self._sid(), "name": name}).decode()

    def encode_clear(self) -> str:
        return orjson.dumps({"event": "clearAudio", "streamId": self._sid()}).decode()

    def encode_dtmf(self, digits: str) -> str:
        self._sid()
        digits = "".join(d.upper() if d in "abcd" else d for d in digits)
        if not digits or any(d not in DTMF_OUT_DIGITS for d in digits):
            raise LocalProtocolError(f"invalid DTMF digits {digits!r}")
        return orjson.dumps({"event": "sendDTMF", "dtmf": digits}).decode()
