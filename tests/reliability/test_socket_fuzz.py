"""Socket-level fuzzing: hostile message streams through the real WebSocket handler, every dialect.

A hostile carrier socket sends a seeded stream of malformed messages — invalid JSON, binary frames, wrong
types, missing fields, huge and invalid base64, unknown events, duplicate ``start``, out-of-order sequence
numbers, oversized messages — interleaved with valid DTMF and real mark echoes. A shadow dialect classifies
each message exactly as the server will, so the test knows how many drops to expect. Asserted:

* the call survives (below the protocol-error budget): every valid DTMF arrives, in order; marks still play;
* every drop is counted — the session's ``dropped_*`` counters sum to exactly the number of bad messages;
* past the budget (``max_protocol_errors``) the hostile call is closed cleanly (1008) and ends once;
* a concurrent clean call on the same server is unaffected.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from voice_runtime import CallHangupError, MarkOutcome
from voice_runtime.errors import RemoteProtocolError
from voice_runtime.protocols import Connected, DtmfReceived, StreamStarted, StreamStopped, UnknownEvent, get_dialect
from voice_runtime.server import ConnectionConfig
from voice_runtime.testing.carriers import carrier_codec

from ..conftest import CallHarness
from .conftest import CARRIERS, CallProbe, LeakCheck
from .test_codec_fuzz import real_messages

MESSAGES_PER_CALL = 800
TRIED: dict[str, int] = {"messages": 0}
MAX_INBOUND = ConnectionConfig().max_inbound_message


@pytest.fixture(scope="module", autouse=True)
def report_inputs(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    capman = request.config.pluginmanager.getplugin("capturemanager")
    if capman is not None:
        with capman.global_and_fixture_disabled():
            print(f"\n[socket fuzz] {TRIED['messages']} hostile messages sent through the real WebSocket handler")


def _random_value(rng: random.Random) -> Any:
    return rng.choice([None, True, 0, -1, 2**63, 1.5, "", "x" * rng.randint(1, 50), [], {}, [1, "a"], {"k": {"k": None}}])


def _mutate(rng: random.Random, message: dict[str, Any], carrier: str) -> str | bytes:
    kind = rng.choice(
        ["invalid_json", "binary", "wrong_type", "missing_field", "huge_base64", "invalid_base64", "unknown_event",
         "duplicate_start", "sequence", "oversized", "text"]
    )
    text = json.dumps(message)
    if kind == "invalid_json":
        return text[: rng.randint(0, max(0, len(text) - 1))]
    if kind == "binary":
        return rng.randbytes(rng.randint(0, 400))
    if kind == "oversized":
        return "x" * (MAX_INBOUND + rng.randint(1, 10_000))
    if kind == "text":
        return "".join(chr(rng.randint(1, 0x2FFF)) for _ in range(rng.randint(0, 60)))
    if kind in ("wrong_type", "missing_field"):
        keys = [k for k in message if k != "event"] or ["event"]
        key = rng.choice(keys)
        target = message
        if isinstance(message.get(key), dict) and message[key] and rng.random() < 0.6:
            target, key = message[key], rng.choice(list(message[key]))
        if kind == "missing_field":
            target.pop(key, None)
        else:
            target[key] = _random_value(rng)
        return json.dumps(message)
    if kind in ("huge_base64", "invalid_base64"):
        media = message.setdefault("media", {"track": "inbound"})
        if not isinstance(media, dict):
            message["media"] = media = {}
        if kind == "huge_base64":
            media["payload"] = "A" * rng.choice([4 * 12_000, 4 * 20_000, 4 * 200_000])
        else:
            media["payload"] = rng.choice(["***", "AAA", "A===", "QUJD\n", "🦜", "QUJD-_"])
        return json.dumps(message)
    if kind == "unknown_event":
        message["event"] = rng.choice(["whatever", "MEDIA", "", "connected ", "🦜", "clearAudio", "playAudio"])
        return json.dumps(message)
    if kind == "duplicate_start":
        codec = carrier_codec(carrier, stream_id=f"MZ{rng.randint(0, 10**31):032d}" if carrier == "twilio" else f"{rng.randint(0, 10**8):08d}-dup")
        return codec.opening()[-1]
    message["sequenceNumber"] = rng.choice([0, -3, 1, 2**31, "007", "x", None]) if carrier == "twilio" else rng.randint(-3, 10)
    return json.dumps(message)


def hostile_stream(carrier: str, seed: int, n: int) -> list[str | bytes]:
    """``n`` mutated messages; control messages that would legitimately change the call are re-drawn."""
    rng = random.Random(seed)
    base = [m for m in real_messages(carrier) if m.get("event") not in ("connected", "start")]
    shadow = _started(carrier)
    out: list[str | bytes] = []
    while len(out) < n:
        message = _mutate(rng, json.loads(json.dumps(rng.choice(base))), carrier)
        verdict = classify(shadow, message)
        if verdict in ("stop", "dtmf"):
            continue  # a valid stop would end the call, a valid digit would confuse the DTMF check
        out.append(message)
    return out


def _started(carrier: str) -> Any:
    dialect = get_dialect(carrier)
    for message in carrier_codec(carrier).opening():
        dialect.parse(message)
    return dialect


def classify(shadow: Any, message: str | bytes) -> str:
    """What the server's receive loop will do with ``message``: ``drop``, ``stop``, ``dtmf`` or ``ok``."""
    if len(message) > MAX_INBOUND or isinstance(message, bytes):
        return "drop"
    try:
        event = shadow.parse(message)
    except RemoteProtocolError:
        return "drop"
    if isinstance(event, (UnknownEvent, Connected, StreamStarted)):
        return "drop"
    if isinstance(event, StreamStopped):
        return "stop"
    if isinstance(event, DtmfReceived):
        return "dtmf"
    return "ok"


def _dropped(stats: dict[str, int]) -> int:
    return sum(v for k, v in stats.items() if k.startswith("dropped_"))


@pytest.mark.parametrize("carrier", CARRIERS)
def test_hostile_stream_is_counted_valid_messages_get_through_and_a_clean_call_is_unaffected(harness: CallHarness, carrier: str) -> None:
    results: dict[str, Any] = {}
    done = threading.Semaphore(0)

    def flow(session: Any) -> None:
        who = session.custom_parameters["who"]
        try:
            marks = []
            for i in range(3):
                session.put_outbound_sync(b"\x7f" * 1600)
                marks.append(session.send_mark_and_wait(f"m{i}", timeout=15))
            digits = ""
            while not digits.endswith("#"):
                digits += session.wait_for_dtmf(timeout=20)
            results[who] = {"marks": marks, "digits": digits, "stats": dict(session.stats)}
        except CallHangupError as exc:
            results[who] = {"error": str(exc)}
        finally:
            done.release()

    # Junk that parses as media is loud (zero bytes are full-scale μ-law): without this the mock STT would
    # rightly hear "speech" and barge in, clearing the marks this test wants played.
    # The rate budget is off here: this test is about *content* (every message sent at full speed must be
    # classified exactly); floods are tests/reliability/test_inbound_budget.py's business.
    _, running = harness.serve(flow, session_defaults={"barge_in": False}, connection_config=ConnectionConfig(inbound_budget=None))
    hostile = harness.phone(running, carrier=carrier, custom_parameters={"who": "hostile"}, call_id="CA" + "7" * 32)
    clean = harness.phone(running, carrier=carrier, custom_parameters={"who": "clean"}, call_id="CA" + "8" * 32)

    messages = hostile_stream(carrier, seed=1234 + len(carrier), n=MESSAGES_PER_CALL)
    shadow = _started(carrier)
    expected_drops = sum(classify(shadow, m) == "drop" for m in messages)
    pressed = ""
    for i, message in enumerate(messages):
        hostile.send_raw(message)
        if i % 100 == 99:
            digit = str((i // 100) % 10)
            hostile.press(digit)
            pressed += digit
    hostile.press("#")
    clean.press("42#")
    TRIED["messages"] += len(messages)

    assert done.acquire(timeout=30) and done.acquire(timeout=30)
    for who in ("hostile", "clean"):
        assert "error" not in results[who], (who, results[who])
        assert results[who]["marks"] == [MarkOutcome.PLAYED] * 3, who
    assert results["hostile"]["digits"] == pressed + "#"
    assert results["clean"]["digits"] == "42#"
    assert _dropped(results["hostile"]["stats"]) == expected_drops > MESSAGES_PER_CALL // 2
    assert _dropped(results["clean"]["stats"]) == 0
    assert hostile.violations == [] and clean.violations == []


@pytest.mark.parametrize("carrier", CARRIERS)
def test_past_the_error_budget_the_hostile_call_is_closed_cleanly_and_others_carry_on(harness: CallHarness, carrier: str) -> None:
    probe = CallProbe()
    clean_result: dict[str, Any] = {}
    clean_done = threading.Event()

    def flow(session: Any) -> None:
        if session.custom_parameters["who"] == "hostile":
            probe.attach(session)
            try:
                session.listen(timeout=30)
            except CallHangupError:
                pass
            return
        try:
            clean_result["digit"] = session.wait_for_dtmf(timeout=20)
            clean_result["heard"] = session.speak("Still fine.", wait=True, timeout=10).heard
        finally:
            clean_done.set()

    _, running = harness.serve(flow, connection_config=ConnectionConfig(max_protocol_errors=50), recordings_dir=None)
    leaks = LeakCheck(running)
    hostile = harness.phone(running, carrier=carrier, custom_parameters={"who": "hostile"}, call_id="CA" + "3" * 32)
    clean = harness.phone(running, carrier=carrier, custom_parameters={"who": "clean"}, call_id="CA" + "4" * 32)
    messages = hostile_stream(carrier, seed=99, n=400)
    sent = 0
    for message in messages:
        try:
            hostile.send_raw(message)
        except RuntimeError:  # the server closed it past its 50-error budget while we were still sending
            break
        sent += 1
    TRIED["messages"] += sent
    assert hostile.wait_closed(10)
    assert hostile.close_code == 1008
    assert probe.ended.wait(5) and probe.ended_events == 1 and probe.disconnected_calls == 1
    clean.press("3")
    assert clean_done.wait(15)
    assert clean_result == {"digit": "3", "heard": True}
    clean.hangup()
    hostile.close()
    leaks.assert_clean()
