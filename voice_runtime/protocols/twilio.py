"""Twilio Media Streams (bidirectional ``<Connect><Stream>``) as a pure codec.

Wire facts this follows (reference: telephony-protocols §1): text frames only, never binary; the first
message is ``connected`` (no streamSid); ``sequenceNumber``, ``media.chunk`` and ``media.timestamp`` are
*strings*; ``dtmf.track`` is ``inbound_track``; outbound ``media`` carries only ``payload`` (μ-law 8 kHz,
any size, never empty), ``mark`` must carry a ``mark`` object, and ``clear`` empties Twilio's buffer and
makes it echo every pending mark — indistinguishable from a played echo, so the session keeps track.
"""

from __future__ import annotations

from binascii import Error as BinasciiError
from binascii import a2b_base64, b2a_base64
from typing import Any

import orjson

from voice_runtime.errors import LocalProtocolError, RemoteProtocolError
from voice_runtime.protocols.base import (
    Dialect,
    decode_base64,
    optional_int,
    require_dict,
    require_str,
)
from voice_runtime.protocols.events import (
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

DTMF_DIGITS = frozenset("0123456789*#ABCD")


class TwilioDialect(Dialect):
    name = "twilio"
    supports_dtmf_out = False  # Twilio: "Sending DTMF outbound ... is not supported"
    max_outbound_message = None
    # encode_media_bytes reads both for every outbound frame: slots, beside the base class's stream_id.
    __slots__ = ("_media_prefix_sid", "_media_prefix")

    def __init__(self) -> None:
        super().__init__()
        self._media_prefix_sid: str | None = None  # the stream id _media_prefix was made for (encode_media_bytes)
        self._media_prefix = b""

    @classmethod
    def matches(cls, message: dict[str, Any]) -> bool:
        event = message.get("event")
        if event == "connected":  # Twilio's exact opening; any other "connected" is some other carrier's
            return message.get("protocol") == "Call" and isinstance(message.get("version"), str)
        start = message.get("start")
        return event == "start" and isinstance(start, dict) and ("streamSid" in start or "streamSid" in message)

    def parse(self, text: str | bytes) -> CarrierEvent:
        try:  # loads_object, inlined: this runs 50 times a second per call
            msg = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise RemoteProtocolError("invalid_json", str(exc)[:80]) from None
        # The hot path, 50 times a second per call: a media message of exactly the shape Twilio sends (every
        # field there, the numbers as ASCII digit strings, this stream, the inbound track). Each field is read
        # once and nothing is called but the decoders. Anything else, however odd (a missing or mistyped field,
        # bad base64, not an object, another event), falls through to the checked path below, which makes the
        # same event or raises the precise error.
        try:
            if msg["event"] == "media":
                media = msg["media"]
                sequence, chunk, timestamp = msg["sequenceNumber"], media["chunk"], media["timestamp"]
                digits = sequence + chunk + timestamp  # one ASCII-digits test for all three ("²".isdigit() is True)
                sid = self.stream_id
                if (
                    sid is not None and msg["streamSid"] == sid and media["track"] == "inbound"
                    and digits.isascii() and digits.isdigit()
                ):
                    # Everything that can raise comes before the bookkeeping, so a fall-through counts nothing twice.
                    received = tuple.__new__(
                        MediaReceived, (a2b_base64(media["payload"], strict_mode=True), int(sequence), int(chunk), int(timestamp))
                    )
                    number, last = received[1], self.last_sequence
                    if last is not None and number != last + 1:
                        self.track_sequence(number)  # a gap or a repeat: the generic bookkeeping counts it
                    else:
                        self.last_sequence = number
                    return received
        except (KeyError, TypeError, AttributeError, ValueError):  # ValueError: bad base64, or an empty number
            pass
        if type(msg) is not dict:
            raise RemoteProtocolError("not_an_object", type(msg).__name__)
        event = msg.get("event")
        if event == "media":
            return self._parse_media(msg)
        if not isinstance(event, str):
            raise RemoteProtocolError("missing_event", "no string 'event' field")
        if event == "mark":
            self._check_stream(msg)
            self.track_sequence(optional_int(msg.get("sequenceNumber")))
            return MarkEchoed(require_str(require_dict(msg, "mark"), "name"))
        if event == "start":
            return self._parse_start(msg)
        if event == "connected":
            return Connected(str(msg.get("protocol", "")), str(msg.get("version", "")))
        if event == "dtmf":
            self._check_stream(msg)
            self.track_sequence(optional_int(msg.get("sequenceNumber")))
            digit = require_str(require_dict(msg, "dtmf"), "digit")
            if digit not in DTMF_DIGITS:
                raise RemoteProtocolError("bad_dtmf_digit", digit[:8])
            return DtmfReceived(digit)
        if event == "stop":
            self.track_sequence(optional_int(msg.get("sequenceNumber")))
            return StreamStopped("stop")
        return UnknownEvent(event[:40])

    def _check_stream(self, msg: dict[str, Any]) -> None:
        sid = msg.get("streamSid")
        if self.stream_id is None:
            raise RemoteProtocolError("before_start", "message before 'start'")
        if sid is not None and sid != self.stream_id:
            raise RemoteProtocolError("wrong_stream_id", str(sid)[:40])

    def _parse_media(self, msg: dict[str, Any]) -> MediaReceived:
        """A media message off the hot path in :meth:`parse`: every field checked, and the precise error.

        The numbers go through :func:`optional_int`, which accepts digit strings and ints and rejects junk.
        """
        if self.stream_id is None:
            raise RemoteProtocolError("before_start", "message before 'start'")
        sid = msg.get("streamSid")
        if sid is not None and sid != self.stream_id:
            raise RemoteProtocolError("wrong_stream_id", str(sid)[:40])
        media = msg.get("media")
        if type(media) is not dict:
            raise RemoteProtocolError("missing_media", "'media' must be an object")
        track = media.get("track", "inbound")
        if track != "inbound":
            raise RemoteProtocolError("unexpected_track", str(track)[:20])
        raw = media.get("payload")
        if type(raw) is str:
            try:
                payload = a2b_base64(raw, strict_mode=True)
            except (BinasciiError, ValueError) as exc:
                raise RemoteProtocolError("invalid_base64", str(exc)[:80]) from None
        else:
            payload = decode_base64(raw)  # raises the usual bad_payload_type
        sequence = optional_int(msg.get("sequenceNumber"))
        self.track_sequence(sequence)
        chunk = optional_int(media.get("chunk"))
        timestamp = optional_int(media.get("timestamp"))
        return MediaReceived(payload, sequence, chunk, timestamp)

    def _parse_start(self, msg: dict[str, Any]) -> StreamStarted:
        if self.stream_id is not None:
            raise RemoteProtocolError("duplicate_start", "stream already started")
        start = require_dict(msg, "start")
        # Twilio puts streamSid both in "start" and at the top level; hand-written 0.1.x-style fakes often
        # send only the top-level one, which identifies the stream just as well.
        stream_id = require_str(start if "streamSid" in start else msg, "streamSid")
        call_id = require_str(start, "callSid")
        raw_fmt = start.get("mediaFormat")
        fmt: dict[str, Any] = raw_fmt if isinstance(raw_fmt, dict) else {}
        media_format = MediaFormat(
            encoding=str(fmt.get("encoding", "audio/x-mulaw")),
            sample_rate=_int_or(fmt.get("sampleRate"), 8000),
            channels=_int_or(fmt.get("channels"), 1),
        )
        if not media_format.is_mulaw_8k:
            raise RemoteProtocolError("unsupported_format", f"{media_format.encoding[:40]}@{media_format.sample_rate}")
        params_raw = start.get("customParameters")
        params = (
            {str(k): str(v) for k, v in params_raw.items() if isinstance(v, (str, int, float))}
            if isinstance(params_raw, dict)
            else {}
        )
        tracks_raw = start.get("tracks")
        tracks = tuple(str(t) for t in tracks_raw) if isinstance(tracks_raw, list) else ("inbound",)
        self.stream_id, self.call_id, self.media_format = stream_id, call_id, media_format
        self.track_sequence(optional_int(msg.get("sequenceNumber")))
        return StreamStarted(
            stream_id=stream_id,
            call_id=call_id,
            account_id=str(start.get("accountSid", "")),
            media_format=media_format,
            custom_parameters=params,
            tracks=tracks,
        )

    # -- outbound -------------------------------------------------------------------------------------
    def _sid(self) -> str:
        if self.stream_id is None:
            raise LocalProtocolError("cannot send before the stream started")
        return self.stream_id

    def encode_media(self, payload: bytes) -> str:
        return self.encode_media_bytes(payload).decode()

    def encode_media_bytes(self, payload: bytes) -> bytes:
        """``encode_media`` as UTF-8 bytes, for wires that send bytes (no decode/encode round trip per frame).

        Once per outbound message of every call, so the envelope is not rebuilt each time: the bytes before the
        payload (event and the JSON-escaped stream id) are made once per stream id, and the message is that
        prefix, the base64 and a constant tail, byte for byte what ``orjson.dumps`` of the object gives (base64
        never needs escaping). No dict, no str and no serializer call per frame.
        """
        if not payload:
            raise LocalProtocolError("empty media payload")
        sid = self.stream_id
        if sid is not self._media_prefix_sid:
            if sid is None:
                raise LocalProtocolError("cannot send before the stream started")
            self._media_prefix = b'{"event":"media","streamSid":' + orjson.dumps(sid) + b',"media":{"payload":"'
            self._media_prefix_sid = sid
        return self._media_prefix + b2a_base64(payload, newline=False) + b'"}}'

    def encode_mark(self, name: str) -> str:
        return orjson.dumps({"event": "mark", "streamSid": self._sid(), "mark": {"name": name}}).decode()

    def encode_clear(self) -> str:
        return orjson.dumps({"event": "clear", "streamSid": self._sid()}).decode()


def _int_or(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
