"""The Twilio dialect as a pure codec: golden wire messages in, typed events out, exact JSON back."""

from __future__ import annotations

import base64
import json

import pytest

from voice_runtime.errors import LocalProtocolError, RemoteProtocolError
from voice_runtime.protocols import (
    Connected,
    DtmfReceived,
    MarkEchoed,
    MediaReceived,
    StreamStarted,
    StreamStopped,
    TwilioDialect,
    UnknownEvent,
    detect_dialect,
)

SID = "MZ" + "a" * 32
CALL = "CA" + "b" * 32

CONNECTED = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
START = {
    "event": "start",
    "sequenceNumber": "1",
    "start": {
        "accountSid": "AC" + "c" * 32,
        "streamSid": SID,
        "callSid": CALL,
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": {"from_number": "+15550001111", "token": "abc"},
    },
    "streamSid": SID,
}


def started() -> TwilioDialect:
    d = TwilioDialect()
    d.parse(json.dumps(CONNECTED))
    d.parse(json.dumps(START))
    return d


def media(seq: str, payload: bytes = b"\xff" * 160, chunk: str = "1", sid: str = SID) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": seq,
            "media": {"track": "inbound", "chunk": chunk, "timestamp": "20", "payload": base64.b64encode(payload).decode()},
            "streamSid": sid,
        }
    )


def test_detects_twilio_from_connected_and_from_start() -> None:
    assert isinstance(detect_dialect(json.dumps(CONNECTED)), TwilioDialect)
    assert isinstance(detect_dialect(START), TwilioDialect)
    with pytest.raises(RemoteProtocolError) as info:
        detect_dialect({"event": "hello"})
    assert info.value.reason == "unknown_dialect"


def test_start_is_parsed_with_custom_parameters_and_format() -> None:
    d = TwilioDialect()
    assert isinstance(d.parse(json.dumps(CONNECTED)), Connected)
    event = d.parse(json.dumps(START))
    assert isinstance(event, StreamStarted)
    assert (event.stream_id, event.call_id) == (SID, CALL)
    assert event.custom_parameters == {"from_number": "+15550001111", "token": "abc"}
    assert event.media_format.is_mulaw_8k
    assert d.stream_id == SID


def test_media_string_numbers_and_payload() -> None:
    d = started()
    event = d.parse(media("2", b"\x01\x02\x03", chunk="7"))
    assert isinstance(event, MediaReceived)
    assert event.payload == b"\x01\x02\x03"
    assert (event.sequence, event.chunk, event.timestamp_ms) == (2, 7, 20)


def test_mark_dtmf_stop() -> None:
    d = started()
    assert d.parse(json.dumps({"event": "mark", "sequenceNumber": "3", "streamSid": SID, "mark": {"name": "m1"}})) == MarkEchoed("m1")
    dtmf = {"event": "dtmf", "streamSid": SID, "sequenceNumber": "4", "dtmf": {"track": "inbound_track", "digit": "#"}}
    assert d.parse(json.dumps(dtmf)) == DtmfReceived("#")
    stop = {"event": "stop", "sequenceNumber": "5", "stop": {"accountSid": "AC", "callSid": CALL}, "streamSid": SID}
    assert isinstance(d.parse(json.dumps(stop)), StreamStopped)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("{not json", "invalid_json"),
        ("[1, 2]", "not_an_object"),
        (json.dumps({"no": "event"}), "missing_event"),
        (media("2", sid="MZwrong"), "wrong_stream_id"),
        (json.dumps({"event": "media", "streamSid": SID, "media": {"payload": "!!!notbase64"}}), "invalid_base64"),
        (json.dumps({"event": "media", "streamSid": SID, "media": {"payload": 12}}), "bad_payload_type"),
        (json.dumps({"event": "media", "streamSid": SID}), "missing_media"),
        (json.dumps({"event": "mark", "streamSid": SID, "mark": {}}), "missing_name"),
        (json.dumps({"event": "dtmf", "streamSid": SID, "dtmf": {"digit": "Z"}}), "bad_dtmf_digit"),
        (json.dumps(START), "duplicate_start"),
        (json.dumps({"event": "media", "streamSid": SID, "sequenceNumber": "x1", "media": {"payload": ""}}), "bad_number"),
    ],
)
def test_malformed_messages_raise_countable_reasons(message: str, reason: str) -> None:
    d = started()
    with pytest.raises(RemoteProtocolError) as info:
        d.parse(message)
    assert info.value.reason == reason


def test_media_before_start_is_rejected() -> None:
    d = TwilioDialect()
    with pytest.raises(RemoteProtocolError) as info:
        d.parse(media("1"))
    assert info.value.reason == "before_start"


def test_unknown_event_is_typed_not_an_error() -> None:
    d = started()
    assert d.parse(json.dumps({"event": "futureThing", "streamSid": SID})) == UnknownEvent("futureThing")


def test_sequence_gaps_and_repeats_are_counted() -> None:
    d = started()  # start had sequence 1
    d.parse(media("2"))
    d.parse(media("5"))  # gap
    d.parse(media("5"))  # repeat
    assert (d.sequence_gaps, d.sequence_repeats) == (1, 1)


def test_outbound_shapes_are_exactly_twilios() -> None:
    d = started()
    assert json.loads(d.encode_media(b"\x00\x01")) == {"event": "media", "streamSid": SID, "media": {"payload": "AAE="}}
    assert json.loads(d.encode_mark("m__1")) == {"event": "mark", "streamSid": SID, "mark": {"name": "m__1"}}
    assert json.loads(d.encode_clear()) == {"event": "clear", "streamSid": SID}


@pytest.mark.parametrize("sid", [SID, 'we"ird\\sid', "ünïcode\u2028sid", "MZ" + "9" * 60])
def test_the_prebuilt_media_envelope_is_byte_for_byte_the_serialized_object(sid: str) -> None:
    """``encode_media_bytes`` splices the base64 into an envelope made once per stream id; it must be exactly
    what serializing the object gives, for any stream id (escaping) and any audio, and follow a new id."""
    import orjson

    d = started()
    for stream_id in (sid, SID):  # a changed stream id rebuilds the envelope
        d.stream_id = stream_id
        for audio in (b"\x00", bytes(range(256)), b"\xff" * 160, b"\x7f" * 3200):
            expected = orjson.dumps(
                {"event": "media", "streamSid": stream_id, "media": {"payload": base64.b64encode(audio).decode()}}
            )
            assert d.encode_media_bytes(audio) == expected
            assert d.encode_media(audio) == expected.decode()
    d.stream_id = None
    with pytest.raises(LocalProtocolError):
        d.encode_media_bytes(b"\x00")


def test_outbound_refuses_illegal_messages() -> None:
    with pytest.raises(LocalProtocolError):
        TwilioDialect().encode_mark("x")  # before start: no streamSid to address
    d = started()
    with pytest.raises(LocalProtocolError):
        d.encode_media(b"")  # Twilio never gets an empty payload
    with pytest.raises(LocalProtocolError):
        d.encode_dtmf("1")  # not supported outbound on Twilio streams


def _variants() -> list[dict[str, object]]:
    """Media messages around the exact shape the hot path takes: each field missing, mistyped or odd."""
    good = json.loads(media("2"))
    out: list[dict[str, object]] = [good]

    def variant(**changes: object) -> None:
        msg = json.loads(json.dumps(good))
        for path, value in changes.items():
            target = msg["media"] if path.startswith("media_") else msg
            key = path.removeprefix("media_")
            if value is KeyError:
                del target[key]
            else:
                target[key] = value
        out.append(msg)

    for field in ("sequenceNumber", "streamSid", "media_track", "media_chunk", "media_timestamp", "media_payload"):
        variant(**{field: KeyError})
    for value in (7, 7.0, 7.5, True, None, "", "٣", "²", "+7", " 7", "9" * 5000):
        variant(sequenceNumber=value)
        variant(media_chunk=value)
        variant(media_timestamp=value)
    variant(streamSid=None)
    variant(streamSid="MZother")
    variant(media_track="outbound")
    variant(media_track=None)
    variant(media_payload="!!!")
    variant(media_payload="")
    variant(media_payload=["a"])
    variant(media_payload="/w==\n")
    variant(media="not an object")
    variant(media=None)
    return out


def _outcome(parse: object, message: object) -> object:
    try:
        return parse(message)  # type: ignore[operator]
    except RemoteProtocolError as exc:
        return ("error", exc.reason)


@pytest.mark.parametrize("started_first", [True, False])
def test_the_media_hot_path_gives_what_the_checked_path_gives_for_every_odd_message(started_first: bool) -> None:
    """``parse`` takes well-formed media on an inlined path and leaves everything else to ``_parse_media``: for
    each variant the event (or the error reason) and the sequence bookkeeping are those of the checked path."""
    variants = _variants()
    assert len(variants) > 40
    hot, checked = (started() if started_first else TwilioDialect()), (started() if started_first else TwilioDialect())
    for msg in variants:
        got = _outcome(hot.parse, json.dumps(msg))
        expected = _outcome(checked._parse_media, json.loads(json.dumps(msg)))
        assert got == expected, msg
        assert type(got) is type(expected)
        assert (hot.last_sequence, hot.sequence_gaps, hot.sequence_repeats) == (
            checked.last_sequence, checked.sequence_gaps, checked.sequence_repeats), msg
    if started_first:
        assert isinstance(_outcome(hot.parse, media("3")), MediaReceived)


def test_a_number_over_the_int_digit_limit_is_a_protocol_error_not_a_crash() -> None:
    d = started()
    with pytest.raises(RemoteProtocolError) as info:
        d.parse(media("9" * 5000))
    assert info.value.reason == "bad_number"
