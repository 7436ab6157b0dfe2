"""Property-based fuzzing of the carrier dialect codecs (hypothesis), every dialect in the tree.

The contract a dialect must keep for *any* input, however hostile: ``parse`` returns one of the typed carrier
events, or raises :class:`RemoteProtocolError` carrying a short, non-empty ``reason`` slug (which the
connection counts and logs). Any other exception would escape into the socket loop, so it is a failure here.

Inputs: arbitrary text and bytes; arbitrary JSON values; the carrier's real messages (built by the carrier
side codec the simulated phone uses) mutated by deleting fields, retyping values, renaming events, adding
junk keys and swapping payloads for invalid or huge base64; and whole message *sequences* fed to one
dialect instance (duplicate ``start``, media before ``start``, out-of-order or repeated sequence numbers).

The number of inputs tried is printed at the end of the module and recorded in docs/reliability.md; set
``VOICE_FUZZ_EXAMPLES`` to run more (the default keeps CI quick).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voice_runtime.errors import RemoteProtocolError
from voice_runtime.protocols import (
    AudioCleared,
    Connected,
    Dialect,
    DtmfReceived,
    MarkEchoed,
    MediaReceived,
    StreamStarted,
    StreamStopped,
    UnknownEvent,
    detect_dialect,
    get_dialect,
)
from voice_runtime.testing.carriers import carrier_codec

from .conftest import CARRIERS

EVENT_TYPES = (AudioCleared, Connected, DtmfReceived, MarkEchoed, MediaReceived, StreamStarted, StreamStopped, UnknownEvent)
EXAMPLES = int(os.environ.get("VOICE_FUZZ_EXAMPLES", "400"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

TRIED: dict[str, int] = {"inputs": 0}


@pytest.fixture(scope="module", autouse=True)
def report_inputs(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    capman = request.config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled() if capman else _null():
        print(f"\n[codec fuzz] {TRIED['inputs']} inputs parsed across {', '.join(CARRIERS)}; 0 unexpected exceptions")


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def check_parse(dialect: Dialect, message: str | bytes) -> Any:
    """The property: a typed event, or RemoteProtocolError with a reason. Anything else fails the test."""
    TRIED["inputs"] += 1
    try:
        event = dialect.parse(message)
    except RemoteProtocolError as exc:
        assert isinstance(exc.reason, str) and exc.reason, f"RemoteProtocolError without a reason for {message!r:.200}"
        assert len(exc.reason) <= 64 and len(str(exc)) <= 400, "reasons and details are short, countable slugs"
        return exc
    assert isinstance(event, EVENT_TYPES), f"parse returned {type(event).__name__} for {message!r:.200}"
    return event


def real_messages(carrier: str) -> list[dict[str, Any]]:
    """Every message kind the carrier really sends, as dicts (start first)."""
    codec = carrier_codec(carrier)
    messages = [json.loads(m) for m in codec.opening()]
    messages.append(json.loads(codec.media(b"\xff" * 160, 1, 0)))
    messages.append(json.loads(codec.dtmf("5")))
    messages.append(json.loads(codec.mark_echo("m-1")))
    ack = codec.clear_ack()
    if ack:
        messages.append(json.loads(ack))
    stop = codec.stop()
    if stop:
        messages.append(json.loads(stop))
    return messages


def started_dialect(carrier: str) -> Dialect:
    dialect = get_dialect(carrier)
    for message in carrier_codec(carrier).opening():
        dialect.parse(message)
    assert dialect.stream_id is not None
    return dialect


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=False), st.text(max_size=40)
)
#: Strings that look numeric to ``str.isdigit`` but not to ``int`` (superscripts, other scripts' digits).
digit_like = st.text(alphabet=st.characters(whitelist_categories=("Nd", "No")), min_size=1, max_size=4)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12
)
bad_payloads = st.one_of(
    st.text(max_size=60),  # mostly invalid base64
    st.integers(0, 300_000).map(lambda n: base64.b64encode(b"\x00" * n).decode()),  # up to huge
    st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode() + "="),  # bad padding
    st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode().replace("A", "-")),  # urlsafe alphabet
    json_values,
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            out.append(prefix + (key,))
            out.extend(_paths(value, prefix + (key,)))
    return out


@st.composite
def mutated(draw: st.DrawFn, carrier: str) -> str:
    """A real carrier message with one to three structural mutations."""
    message = json.loads(json.dumps(draw(st.sampled_from(real_messages(carrier)))))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(message)
        action = draw(st.sampled_from(["delete", "retype", "rename_event", "junk_key", "payload", "sequence"]))
        if action in ("delete", "retype") and paths:
            path = draw(st.sampled_from(paths))
            parent = message
            for key in path[:-1]:
                parent = parent[key]
            if action == "delete":
                del parent[path[-1]]
            else:
                parent[path[-1]] = draw(json_values)
        elif action == "rename_event":
            message["event"] = draw(st.one_of(st.text(max_size=20), json_values))
        elif action == "junk_key":
            message[draw(st.text(max_size=12))] = draw(json_values)
        elif action == "payload":
            message.setdefault("media", {})
            if isinstance(message["media"], dict):
                message["media"]["payload"] = draw(bad_payloads)
        else:
            number = draw(st.one_of(st.integers(-5, 2**40), st.text(max_size=8), digit_like, json_values))
            if isinstance(message.get("media"), dict) and draw(st.booleans()):
                message["media"][draw(st.sampled_from(["chunk", "timestamp"]))] = number
            else:
                message["sequenceNumber"] = number
    return json.dumps(message)


@pytest.mark.parametrize("carrier", CARRIERS)
@FUZZ
@given(data=st.data())
def test_arbitrary_text_and_bytes_never_escape_as_other_exceptions(carrier: str, data: st.DataObject) -> None:
    message = data.draw(st.one_of(st.text(max_size=300), st.binary(max_size=300), json_values.map(json.dumps)))
    check_parse(get_dialect(carrier), message)
    check_parse(started_dialect(carrier), message)


@pytest.mark.parametrize("carrier", CARRIERS)
@FUZZ
@given(data=st.data())
def test_mutated_carrier_messages_parse_or_are_rejected_with_a_reason(carrier: str, data: st.DataObject) -> None:
    message = data.draw(mutated(carrier))
    check_parse(get_dialect(carrier), message)
    check_parse(started_dialect(carrier), message)


@pytest.mark.parametrize("carrier", CARRIERS)
@FUZZ
@given(data=st.data())
def test_message_sequences_keep_the_contract_and_count_sequence_anomalies(carrier: str, data: st.DataObject) -> None:
    """Stateful: duplicate start, messages before start, shuffled and repeated sequence numbers."""
    real = [json.dumps(m) for m in real_messages(carrier)]
    pool = st.one_of(st.sampled_from(real), mutated(carrier))
    sequence = data.draw(st.lists(pool, min_size=1, max_size=25))
    dialect = get_dialect(carrier)
    starts = 0
    for message in sequence:
        result = check_parse(dialect, message)
        if isinstance(result, StreamStarted):
            starts += 1
        if isinstance(result, RemoteProtocolError) and result.reason == "duplicate_start":
            assert dialect.stream_id is not None
    assert starts <= 1, "a second start must be refused (duplicate_start), never accepted"
    # Each message counts at most one anomaly, and the first numbered one none (nothing came before it): a
    # fall-through from the inlined parse to the checked one must never count a message twice.
    assert dialect.sequence_gaps + dialect.sequence_repeats <= len(sequence) - 1


@pytest.mark.parametrize("carrier", CARRIERS)
@FUZZ
@given(data=st.data())
def test_first_message_detection_is_total(carrier: str, data: st.DataObject) -> None:
    """``detect_dialect`` on a hostile first message: a dialect, or RemoteProtocolError with a reason."""
    message = data.draw(st.one_of(mutated(carrier), st.text(max_size=200), json_values.map(json.dumps)))
    TRIED["inputs"] += 1
    try:
        dialect = detect_dialect(message)
    except RemoteProtocolError as exc:
        assert exc.reason
        return
    check_parse(dialect, message)


@pytest.mark.parametrize("carrier", CARRIERS)
def test_out_of_order_and_repeated_sequence_numbers_are_counted_not_fatal(carrier: str) -> None:
    codec = carrier_codec(carrier)
    dialect = get_dialect(carrier)
    for message in codec.opening():
        dialect.parse(message)
    media = [codec.media(b"\xff" * 160, i, 20 * i) for i in range(1, 6)]  # sequence numbers n..n+4
    for message in (media[0], media[2], media[1], media[1], media[3], media[4]):
        assert isinstance(check_parse(dialect, message), MediaReceived)
    assert dialect.sequence_gaps == 1  # 0 -> 2
    assert dialect.sequence_repeats == 2  # 1 after 2, then 1 again


@pytest.mark.parametrize("carrier", CARRIERS)
def test_duplicate_start_is_rejected_and_the_first_stream_kept(carrier: str) -> None:
    codec = carrier_codec(carrier)
    dialect = get_dialect(carrier)
    for message in codec.opening():
        dialect.parse(message)
    first = dialect.stream_id
    other = carrier_codec(carrier, stream_id="MZ" + "9" * 32 if carrier == "twilio" else "99999999-0000-0000-0000-000000000000")
    result = check_parse(dialect, other.opening()[-1])
    assert isinstance(result, RemoteProtocolError) and result.reason == "duplicate_start"
    assert dialect.stream_id == first
