"""PlivoDialect (server side) and PlivoCarrier (the phone's side): every documented input variant, exact output."""

from __future__ import annotations

import base64
import json

import orjson
import pytest

from voice_runtime.errors import LocalProtocolError, RemoteProtocolError
from voice_runtime.protocols import (
    AudioCleared,
    DtmfReceived,
    MarkEchoed,
    MediaReceived,
    StreamStarted,
    StreamStopped,
    UnknownEvent,
    detect_dialect,
)
from voice_runtime.protocols.plivo import PlivoDialect, parse_content_type, parse_extra_headers
from voice_runtime.protocols.twilio import TwilioDialect
from voice_runtime.testing.carriers import CarrierViolation, PlivoCarrier, ServerClear, ServerDtmf, ServerMark, ServerMedia

SID = "87654321-4321-4321-4321-cba987654321"


def start(extra_headers: object = "userId=12345;sessionId=abc-xyz", encoding: str = "audio/x-mulaw", rate: object = 8000) -> str:
    """The [PL-REF] start message, verbatim shape."""
    msg = {
        "event": "start",
        "sequenceNumber": 1,
        "start": {
            "callId": "12345678-1234-1234-1234-123456789abc",
            "streamId": SID,
            "accountId": "MAXXXXXXXXXXXXXXXXXX",
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": encoding, "sampleRate": rate},
        },
        "extra_headers": extra_headers,
    }
    return json.dumps(msg)


def started(**kwargs: object) -> PlivoDialect:
    dialect = PlivoDialect()
    event = dialect.parse(start(**kwargs))  # type: ignore[arg-type]
    assert isinstance(event, StreamStarted)
    return dialect


# ------------------------------------------------------------------------------------------- inbound
def test_detects_plivo_from_start_and_not_twilio() -> None:
    assert isinstance(detect_dialect(start()), PlivoDialect)
    assert not TwilioDialect.matches(json.loads(start()))
    assert not PlivoDialect.matches({"event": "connected", "protocol": "Call"})


def test_start_fields() -> None:
    dialect = PlivoDialect()
    event = dialect.parse(start())
    assert isinstance(event, StreamStarted)
    assert event.stream_id == SID and event.call_id == "12345678-1234-1234-1234-123456789abc"
    assert event.account_id == "MAXXXXXXXXXXXXXXXXXX"
    assert event.media_format.is_mulaw_8k
    assert event.custom_parameters == {"userId": "12345", "sessionId": "abc-xyz"}
    assert event.tracks == ("inbound",)
    with pytest.raises(RemoteProtocolError) as err:
        dialect.parse(start())
    assert err.value.reason == "duplicate_start"


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("userId=12345;sessionId=abc-xyz", {"userId": "12345", "sessionId": "abc-xyz"}),  # guide / reference
        ("test1=12,test2=123", {"test1": "12", "test2": "123"}),  # XML reference
        ('{"userId": "12345", "n": 7, "ok": true}', {"userId": "12345", "n": "7", "ok": "true"}),  # stream SDK: JSON
        ({"userId": "12345"}, {"userId": "12345"}),  # already an object
        ("{}", {}),
        ("", {}),
        (None, {}),
        ("{not json", {}),
        ('["a"]', {}),
        (42, {}),
        ("novalue;=x;k=v", {"k": "v"}),
    ],
)
def test_extra_headers_every_documented_shape(raw: object, expected: dict[str, str]) -> None:
    assert parse_extra_headers(raw) == expected
    assert started(extra_headers=raw).extra_headers == expected


@pytest.mark.parametrize(
    "encoding, rate, expect",
    [
        ("audio/x-mulaw", 8000, ("audio/x-mulaw", 8000)),
        ("audio/x-l16", 8000, ("audio/x-l16", 8000)),
        ("audio/x-l16", 16000, ("audio/x-l16", 16000)),
        ("audio/x-l16", "16000", ("audio/x-l16", 16000)),
        ("audio/x-l16;rate=16000", None, ("audio/x-l16", 16000)),
    ],
)
def test_start_media_formats(encoding: str, rate: object, expect: tuple[str, int]) -> None:
    dialect = PlivoDialect()
    event = dialect.parse(start(encoding=encoding, rate=rate) if rate is not None else _start_without_rate(encoding))
    assert isinstance(event, StreamStarted)
    assert (event.media_format.encoding, event.media_format.sample_rate) == expect


def _start_without_rate(encoding: str) -> str:
    msg = json.loads(start(encoding=encoding))
    del msg["start"]["mediaFormat"]["sampleRate"]
    return json.dumps(msg)


@pytest.mark.parametrize("encoding, rate", [("audio/x-mulaw", 16000), ("audio/x-l16", 44100), ("audio/opus", 8000), ("audio/x-l16", "x")])
def test_start_unsupported_format_is_refused(encoding: str, rate: object) -> None:
    with pytest.raises(RemoteProtocolError) as err:
        PlivoDialect().parse(start(encoding=encoding, rate=rate))
    assert err.value.reason == "unsupported_format"


def test_media_numeric_fields_and_epoch_timestamp_rebased() -> None:
    dialect = started()
    payload = bytes(range(160))

    def media(seq: object, chunk: object, ts: object) -> str:
        return json.dumps(
            {
                "event": "media",
                "sequenceNumber": seq,
                "streamId": SID,
                "media": {"track": "inbound", "timestamp": ts, "chunk": chunk, "payload": base64.b64encode(payload).decode()},
                "extra_headers": "userId=12345;sessionId=abc-xyz",
            }
        )

    first = dialect.parse(media(2, 1, "1705312200000"))
    second = dialect.parse(media(3, 2, "1705312200020"))
    assert isinstance(first, MediaReceived) and isinstance(second, MediaReceived)
    assert first.payload == payload and first.sequence == 2 and first.chunk == 1
    assert (first.timestamp_ms, second.timestamp_ms) == (0, 20)  # epoch ms ([PL-REF]) rebased to stream time
    relative = dialect.parse(media(4, 3, 40))  # "from stream start" ([PL-SSDK]) passes through
    assert isinstance(relative, MediaReceived) and relative.timestamp_ms == 40
    junk = dialect.parse(media(5, 4, "soon"))
    assert isinstance(junk, MediaReceived) and junk.timestamp_ms is None  # never drop audio over a timestamp
    dialect.parse(media(9, 5, 100))
    assert dialect.sequence_gaps == 1


def test_media_errors_are_countable_reasons() -> None:
    with pytest.raises(RemoteProtocolError) as err:
        PlivoDialect().parse(json.dumps({"event": "media", "media": {"payload": ""}}))
    assert err.value.reason == "before_start"
    dialect = started()
    cases = {
        "wrong_stream_id": {"event": "media", "streamId": "other", "media": {"payload": "AA=="}},
        "invalid_base64": {"event": "media", "streamId": SID, "media": {"payload": "!!"}},
        "missing_media": {"event": "media", "streamId": SID},
        "unexpected_track": {"event": "media", "streamId": SID, "media": {"track": "outbound", "payload": "AA=="}},
        "bad_number": {"event": "media", "streamId": SID, "sequenceNumber": True, "media": {"payload": "AA=="}},
    }
    for reason, msg in cases.items():
        with pytest.raises(RemoteProtocolError) as err:
            dialect.parse(json.dumps(msg))
        assert err.value.reason == reason
    for text, reason in (("[1]", "not_an_object"), ("{", "invalid_json"), ('{"x": 1}', "missing_event")):
        with pytest.raises(RemoteProtocolError) as err:
            dialect.parse(text)
        assert err.value.reason == reason


@pytest.mark.parametrize("digit", list("0123456789*#ABCD"))
def test_dtmf_digits(digit: str) -> None:
    msg = {"event": "dtmf", "sequenceNumber": 50, "streamId": SID, "dtmf": {"track": "inbound", "digit": digit, "timestamp": "1705312250000"}, "extra_headers": ""}
    assert started().parse(json.dumps(msg)) == DtmfReceived(digit)


def test_dtmf_bad_digit() -> None:
    msg = {"event": "dtmf", "streamId": SID, "dtmf": {"digit": "E"}}
    with pytest.raises(RemoteProtocolError) as err:
        started().parse(json.dumps(msg))
    assert err.value.reason == "bad_dtmf_digit"


@pytest.mark.parametrize("event", ["playedStream", "played"])
def test_checkpoint_ack_both_spellings(event: str) -> None:
    msg = {"event": event, "sequenceNumber": 75, "streamId": SID, "name": "greeting-complete"}
    assert started().parse(json.dumps(msg)) == MarkEchoed("greeting-complete")


def test_cleared_audio_and_optional_stop() -> None:
    dialect = started()
    assert dialect.parse(json.dumps({"sequenceNumber": 0, "event": "clearedAudio", "streamId": SID})) == AudioCleared()
    assert dialect.clear_acks == 1
    assert dialect.parse(json.dumps({"event": "stop", "sequenceNumber": 90, "streamId": SID, "reason": "callEnded"})) == StreamStopped("callEnded")
    assert dialect.parse(json.dumps({"event": "stop"})) == StreamStopped("stop")


@pytest.mark.parametrize("event", ["playFailed", "error", "muteStream", "unmuteStream", "somethingNew"])
def test_unknown_events_are_reported_for_counting(event: str) -> None:
    parsed = started().parse(json.dumps({"event": event, "streamId": SID, "reason": "x"}))
    assert parsed == UnknownEvent(event)


# ------------------------------------------------------------------------------------------- outbound
@pytest.mark.parametrize("encoding, rate", [("audio/x-mulaw", 8000), ("audio/x-l16", 8000), ("audio/x-l16", 16000)])
def test_encode_play_audio_matches_the_stream_format(encoding: str, rate: int) -> None:
    dialect = started(encoding=encoding, rate=rate)
    msg = json.loads(dialect.encode_media(b"\x01\x02\x03\x04"))
    assert msg == {"event": "playAudio", "media": {"contentType": encoding, "sampleRate": rate, "payload": "AQIDBA=="}}


def test_encode_checkpoint_clear_dtmf_exact() -> None:
    dialect = started()
    assert json.loads(dialect.encode_mark("greeting-complete")) == {"event": "checkpoint", "streamId": SID, "name": "greeting-complete"}
    assert json.loads(dialect.encode_clear()) == {"event": "clearAudio", "streamId": SID}
    assert json.loads(dialect.encode_dtmf("1234#")) == {"event": "sendDTMF", "dtmf": "1234#"}
    assert json.loads(dialect.encode_dtmf("a1w")) == {"event": "sendDTMF", "dtmf": "A1w"}
    for bad in ("", "12x", "1 2"):
        with pytest.raises(LocalProtocolError):
            dialect.encode_dtmf(bad)
    with pytest.raises(LocalProtocolError):
        dialect.encode_media(b"")
    with pytest.raises(LocalProtocolError):
        PlivoDialect().encode_clear()  # before start


def test_dialect_flags() -> None:
    assert PlivoDialect.supports_dtmf_out is True
    assert PlivoDialect.max_outbound_message == 64 * 1024


@pytest.mark.parametrize("encoding, rate, per_ulaw", [("audio/x-mulaw", 8000, 1), ("audio/x-l16", 8000, 2), ("audio/x-l16", 16000, 4)])
def test_max_media_payload_keeps_messages_within_limits(encoding: str, rate: int, per_ulaw: int) -> None:
    dialect = started(encoding=encoding, rate=rate)
    ulaw_batch = dialect.max_media_payload()
    worst = ulaw_batch * per_ulaw + (3200 if rate == 16000 else 0)  # + a resampler's held-back ~100 ms
    text = dialect.encode_media(b"\x55" * worst)
    assert len(text) <= 64 * 1024
    assert len(json.loads(text)["media"]["payload"]) <= 16 * 1024
    with pytest.raises(LocalProtocolError):
        dialect.encode_media(b"\x55" * 50_000)  # anything over 64 KB is refused, never sent


def test_parse_content_type() -> None:
    assert parse_content_type("audio/x-l16;rate=16000").sample_rate == 16000
    assert parse_content_type("audio/x-mulaw; rate=8000").encoding == "audio/x-mulaw"
    for bad in ("audio/x-mulaw;rate=16000", "audio/x-l16;rate=abc", "", "audio/pcm"):
        with pytest.raises(ValueError):
            parse_content_type(bad)


# ------------------------------------------------------------------------------------------- the phone's codec
@pytest.mark.parametrize("content_type", ["audio/x-mulaw;rate=8000", "audio/x-l16;rate=8000", "audio/x-l16;rate=16000"])
def test_carrier_codec_roundtrips_with_the_dialect(content_type: str) -> None:
    carrier = PlivoCarrier(content_type=content_type, custom_parameters={"userId": "42"})
    dialect = PlivoDialect()
    event = dialect.parse(carrier.opening()[0])
    assert isinstance(event, StreamStarted) and event.custom_parameters == {"userId": "42"}
    frame = bytes([0x10, 0x90, 0x30, 0xB0] * 40)  # 160 μ-law bytes, 20 ms
    media = dialect.parse(carrier.media(frame, 1, 0))
    assert isinstance(media, MediaReceived)
    assert len(media.payload) == 160 * {"audio/x-mulaw;rate=8000": 1, "audio/x-l16;rate=8000": 2, "audio/x-l16;rate=16000": 4}[content_type]
    back = carrier.parse(dialect.encode_media(media.payload))
    assert isinstance(back, ServerMedia) and len(back.payload) == 160
    if content_type != "audio/x-l16;rate=16000":
        assert back.payload == frame  # lossless at 8 kHz (μ-law -> L16 -> μ-law)
    assert carrier.parse(dialect.encode_mark("m1")) == ServerMark("m1")
    assert carrier.parse(dialect.encode_clear()) == ServerClear()
    assert carrier.parse(dialect.encode_dtmf("12#")) == ServerDtmf("12#")
    assert dialect.parse(carrier.mark_echo("m1")) == MarkEchoed("m1")
    assert dialect.parse(carrier.clear_ack() or "") == AudioCleared()
    assert isinstance(dialect.parse(carrier.stop() or ""), StreamStopped)


def test_carrier_codec_is_strict() -> None:
    carrier = PlivoCarrier(content_type="audio/x-l16;rate=16000")
    good_media = {"contentType": "audio/x-l16", "sampleRate": 16000, "payload": "AAAA"}
    bad = [
        {"event": "playAudio", "media": {**good_media, "sampleRate": 8000}},  # rate does not match the stream
        {"event": "playAudio", "media": {**good_media, "contentType": "audio/x-mulaw"}},
        {"event": "playAudio", "media": {**good_media, "sampleRate": "16000"}},
        {"event": "playAudio", "media": {**good_media, "extra": 1}},
        {"event": "playAudio", "media": {**good_media, "payload": ""}},
        {"event": "playAudio", "media": good_media, "streamId": "other"},
        {"event": "checkpoint", "streamId": carrier.stream_id},
        {"event": "checkpoint", "streamId": "other", "name": "x"},
        {"event": "clearAudio"},
        {"event": "sendDTMF", "dtmf": "12x"},
        {"event": "sendDTMF", "digits": "12"},
        {"event": "media", "media": {"payload": "AAAA"}},  # Twilio's shape
    ]
    for msg in bad:
        with pytest.raises(CarrierViolation):
            carrier.parse(json.dumps(msg))
    with pytest.raises(CarrierViolation):
        carrier.parse(b"binary")
    with pytest.raises(CarrierViolation):
        carrier.parse(json.dumps({"event": "playAudio", "media": {**good_media, "payload": "A" * 70_000}}))
    with pytest.raises(CarrierViolation):  # "AAAA" is 3 bytes: not whole 16-bit samples
        carrier.parse(json.dumps({"event": "playAudio", "media": good_media}))
    # pipecat-style playAudio with this stream's streamId is tolerated (reference §2.3); 2 samples at 16k -> 1 at 8k
    four_bytes = {**good_media, "payload": "AAAAAA=="}
    parsed = carrier.parse(json.dumps({"event": "playAudio", "media": four_bytes, "streamId": carrier.stream_id}))
    assert isinstance(parsed, ServerMedia) and len(parsed.payload) == 1


@pytest.mark.parametrize("style", ["semicolon", "comma", "json", "omit"])
def test_carrier_extra_header_styles_all_parse(style: str) -> None:
    carrier = PlivoCarrier(custom_parameters={"a": "1", "b": "2"}, extra_headers_style=style)
    event = PlivoDialect().parse(carrier.opening()[0])
    assert isinstance(event, StreamStarted)
    assert event.custom_parameters == ({} if style == "omit" else {"a": "1", "b": "2"})


def test_carrier_played_variant_and_no_stop() -> None:
    carrier = PlivoCarrier(ack_event="played", send_stop=False)
    assert json.loads(carrier.mark_echo("x"))["event"] == "played"
    assert carrier.stop() is None
    assert PlivoCarrier.echoes_marks_on_clear is False


def _media_variants() -> list[dict[str, object]]:
    """Media messages around the exact shape the hot path takes: each field missing, mistyped or odd."""
    good: dict[str, object] = {
        "event": "media",
        "sequenceNumber": 2,
        "streamId": SID,
        "media": {"track": "inbound", "timestamp": "1705312200000", "chunk": 1, "payload": base64.b64encode(bytes(range(160))).decode()},
        "extra_headers": "userId=12345;sessionId=abc-xyz",
    }
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

    for field in ("sequenceNumber", "streamId", "media_track", "media_chunk", "media_timestamp", "media_payload"):
        variant(**{field: KeyError})
    for value in (7, 7.0, 7.5, True, None, "", "7", "٣", "²", "+7", " 7", "9" * 5000, 10**30, -3):
        variant(sequenceNumber=value)
        variant(media_chunk=value)
        variant(media_timestamp=value)
    for stamp in ("40", "1705312200020", "1705312199980", "99999999999", "100000000000", "9" * 19):
        variant(media_timestamp=stamp)  # relative, epoch after and before the base, both sides of the threshold
    variant(sequenceNumber=3)
    variant(sequenceNumber=9)  # a gap
    variant(sequenceNumber=1)  # a repeat
    variant(streamId=None)
    variant(streamId="other")
    variant(media_track="outbound")
    variant(media_track=None)
    for payload in ("!!!", "", ["a"], "/w==\n", "AAE", "é"):
        variant(media_payload=payload)
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
    each variant, in order, the event (or the error reason), the sequence bookkeeping and the epoch base are those
    of the checked path."""
    variants = _media_variants()
    assert len(variants) > 60
    hot, checked = (started() if started_first else PlivoDialect()), (started() if started_first else PlivoDialect())
    for msg in variants:
        got = _outcome(hot.parse, json.dumps(msg))
        expected = _outcome(checked._parse_media, orjson.loads(json.dumps(msg)))  # parsed as parse does (10**30: a float)
        assert got == expected, msg
        assert type(got) is type(expected)
        assert (hot.last_sequence, hot.sequence_gaps, hot.sequence_repeats, hot._epoch_base) == (
            checked.last_sequence, checked.sequence_gaps, checked.sequence_repeats, checked._epoch_base), msg
    if started_first:
        assert hot.sequence_gaps >= 1 and hot.sequence_repeats >= 1 and hot._epoch_base == 1705312200000
