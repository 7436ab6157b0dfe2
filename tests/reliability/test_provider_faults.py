"""Provider faults inside live calls: the flow always sees a clear outcome (a result, an error, a timeout,
a hangup), never a hang; audio is not lost where the provider promises buffering; nothing leaks.

ElevenLabs faults run against the loopback fake (``voice_runtime.testing.fake_elevenlabs``: real HTTP and
WebSocket servers speaking the vendor protocol). The other faults use small MockStt/MockTts subclasses that
fail in one precise way, because the fault *is* the provider: there is no network boundary to break.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from voice_runtime import CallHangupError, CallTimeoutError, MarkOutcome
from voice_runtime import call_events as ev
from voice_runtime.errors import ProviderError
from voice_runtime.providers.mock import MockStt, MockTts
from voice_runtime.testing import SimulatedPhone

from ..conftest import CallHarness, FlowResult
from .conftest import CARRIERS, CallProbe, LeakCheck

from voice_runtime.testing import fake_elevenlabs  # our own module on core dependencies: a failure is a bug, not a skip


class SttFailingToStart(MockStt):
    async def start(self, inbound_queue: Any) -> None:
        raise ProviderError("handshake refused (401)", provider="fake", retryable=False)


class TtsCutMidSentence(MockTts):
    """Streams a few chunks of real audio, then the connection "drops"."""

    def __init__(self, good_chunks: int = 3) -> None:
        super().__init__(chunk_ms=100)
        self.good_chunks = good_chunks

    def synthesize(self, text: str, stop_event: threading.Event) -> Iterator[bytes]:
        for i, chunk in enumerate(super().synthesize(text, stop_event)):
            if i == self.good_chunks:
                raise ConnectionResetError("peer closed the audio stream mid-sentence")
            yield chunk


class TtsStalled(MockTts):
    """Sends nothing at all until stopped (a provider that accepted the request and went silent)."""

    def synthesize(self, text: str, stop_event: threading.Event) -> Iterator[bytes]:
        stop_event.wait(120)
        return iter(())


class TtsGarbage(MockTts):
    """Yields one good chunk and then something that is not audio at all."""

    def synthesize(self, text: str, stop_event: threading.Event) -> Iterator[bytes]:
        yield b"\x7f" * 800
        yield {"not": "audio"}  # type: ignore[misc]


def test_stt_failing_to_start_is_reported_and_listen_times_out_cleanly(harness: CallHarness, flow_result: FlowResult) -> None:
    listened = threading.Event()

    def body(session: Any) -> None:
        started = time.monotonic()
        try:
            session.listen(timeout=1.0)
        except CallTimeoutError:
            flow_result.values["listen"] = time.monotonic() - started
        listened.set()
        flow_result.values["digit"] = session.wait_for_dtmf(timeout=5)  # the call itself goes on
        flow_result.values["stats"] = dict(session.stats)
        flow_result.values["errors"] = [e.data for e in session.events if e.kind == ev.STT_ERROR]

    _, running = harness.serve(flow_result.run(body), stt_factory=SttFailingToStart)
    leaks = LeakCheck(running)
    phone = harness.phone(running)
    assert listened.wait(5)
    phone.press("4")
    values = flow_result.wait(10)
    assert values["listen"] < 5
    assert values["digit"] == "4"
    assert values["stats"].get("stt_start_failed") == 1
    assert len(values["errors"]) == 1 and "401" in values["errors"][0]["error"]
    phone.hangup()
    leaks.assert_clean()


@pytest.mark.parametrize("carrier", CARRIERS)
def test_tts_cut_mid_sentence_reports_an_error_plays_what_arrived_and_the_call_goes_on(
    harness: CallHarness, flow_result: FlowResult, carrier: str
) -> None:
    def body(session: Any) -> None:
        cut = session.speak("A sentence that will be cut off by the provider halfway through.", wait=True, timeout=10)
        flow_result.values["cut"] = (cut.error, cut.audio_seconds, cut.heard)
        session.tts = MockTts()
        flow_result.values["next"] = session.speak("And yet we carry on.", wait=True, timeout=10).heard

    _, running = harness.serve(flow_result.run(body), tts_factory=lambda: TtsCutMidSentence(good_chunks=3))
    phone = harness.phone(running, carrier=carrier)
    values = flow_result.wait(20)
    error, seconds, heard = values["cut"]
    assert error is not None and "ConnectionResetError" in error
    assert seconds == pytest.approx(0.3, abs=0.01)  # the three chunks that did arrive
    assert heard is True  # ...were played and acknowledged, not dropped
    assert values["next"] is True
    assert phone.violations == []


@pytest.mark.parametrize("mode", ["drop", "hangup"])
def test_stalled_tts_returns_when_the_caller_hangs_up(harness: CallHarness, flow_result: FlowResult, mode: str) -> None:
    """A TTS that never sends a byte blocks ``speak`` only until the call ends — never forever."""
    probe = CallProbe()
    entered = threading.Event()

    def body(session: Any) -> None:
        probe.attach(session)
        entered.set()
        started = time.monotonic()
        result = session.speak("Anyone there?", wait=True, timeout=30)
        flow_result.values.update(disconnected=result.call_disconnected, elapsed=time.monotonic() - started)

    _, running = harness.serve(flow_result.run(body), tts_factory=TtsStalled, recordings_dir=None)
    phone = harness.phone(running)
    assert entered.wait(5)
    phone.drop() if mode == "drop" else phone.hangup()
    values = flow_result.wait(10)
    assert values["disconnected"] is True and values["elapsed"] < 10
    assert probe.ended.wait(5) and probe.ended_events == 1


def test_garbage_from_the_tts_is_an_error_not_a_crash(harness: CallHarness, flow_result: FlowResult) -> None:
    def body(session: Any) -> None:
        result = session.speak("garbage please", wait=True, timeout=10)
        flow_result.values["error"] = result.error
        flow_result.values["after"] = session.send_mark_and_wait("after", timeout=10)

    _, running = harness.serve(flow_result.run(body), tts_factory=TtsGarbage)
    phone = harness.phone(running)
    values = flow_result.wait(15)
    assert values["error"] and "TypeError" in values["error"]
    assert values["after"] is MarkOutcome.PLAYED
    assert phone.violations == []


# ------------------------------------------------------------------------------------------- ElevenLabs
@pytest.fixture
def eleven() -> Iterator[Any]:
    with fake_elevenlabs.FakeElevenLabs("test-key") as fake:
        yield fake


def _eleven_stt(fake: Any) -> Any:
    from voice_runtime.providers.elevenlabs_stt import ElevenLabsRealtimeStt

    return ElevenLabsRealtimeStt(api_key="test-key", base_url=fake.ws_url, backoff_initial=0.05, backoff_max=0.2)


def test_stt_socket_killed_mid_utterance_loses_no_audio(harness: CallHarness, flow_result: FlowResult, eleven: Any) -> None:
    """The provider promises replay across reconnects: the transcript must come out whole."""
    sentence = "the quick brown fox jumps over the lazy dog"

    def body(session: Any) -> None:
        flow_result.values["heard"] = session.listen(timeout=20)
        flow_result.values["stt_stats"] = dict(session.stt.stats)

    _, running = harness.serve(flow_result.run(body), stt_factory=lambda: _eleven_stt(eleven))
    leaks = LeakCheck(running)
    phone = harness.phone(running)
    assert eleven.wait_until(lambda: len(eleven.stt_sessions) == 1, 5)
    phone.say(fake_elevenlabs.encode_text_as_speech(sentence))
    first = eleven.stt_sessions[0]
    assert eleven.wait_until(lambda: len(fake_elevenlabs.decode_speech_text(bytes(first.audio))) >= 10, 10)
    eleven.stt_kill()  # mid-utterance, no close frame
    values = flow_result.wait(25)
    assert values["heard"] == sentence
    assert values["stt_stats"]["reconnects"] >= 1
    assert values["stt_stats"].get("audio_dropped_bytes", 0) == 0
    phone.hangup()
    leaks.assert_clean()


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize("mode", ["drop", "hangup"])
def test_carrier_drop_during_stt_reconnect_ends_once_and_leaks_nothing(
    harness: CallHarness, flow_result: FlowResult, eleven: Any, tmp_path: Path, carrier: str, mode: str
) -> None:
    probe = CallProbe()
    stts: list[Any] = []

    def factory() -> Any:
        stt = _eleven_stt(eleven)
        stts.append(stt)
        return stt

    def body(session: Any) -> None:
        probe.attach(session)
        started = time.monotonic()
        try:
            session.listen(timeout=30)
        except CallHangupError:
            flow_result.values["outcome"] = "hangup"
        flow_result.values["elapsed"] = time.monotonic() - started

    _, running = harness.serve(flow_result.run(body), stt_factory=factory, recordings_dir=tmp_path)
    leaks = LeakCheck(running)
    phone = SimulatedPhone(running.ws_url + "/stream", carrier=carrier)
    phone.connect()
    try:
        assert eleven.wait_until(lambda: len(eleven.stt_sessions) == 1, 5)
        eleven.reject_stt(times=50)  # every reconnect attempt is refused: the provider stays in backoff
        eleven.stt_kill()
        assert eleven.wait_until(lambda: eleven.stt_rejected >= 1, 5), "the provider never tried to reconnect"
        phone.drop() if mode == "drop" else phone.hangup()
        values = flow_result.wait(10)
    finally:
        phone.close()
    assert values["outcome"] == "hangup" and values["elapsed"] < 10
    probe.assert_ended_once()
    leaks.assert_clean()
    assert eleven.wait_until(lambda: not eleven.open_stt_sessions, 5)


def test_stalled_elevenlabs_tts_times_out_with_a_clear_error(harness: CallHarness, flow_result: FlowResult) -> None:
    """The service accepts the request and sends no bytes: the provider's read timeout ends ``speak``."""
    from voice_runtime.providers.elevenlabs_tts import ElevenLabsTts

    with fake_elevenlabs.FakeElevenLabs("test-key", tts_first_byte_delay=3.0) as fake:

        def body(session: Any) -> None:
            started = time.monotonic()
            result = session.speak("Hello?", wait=True, timeout=10)
            flow_result.values.update(error=result.error, elapsed=time.monotonic() - started)
            flow_result.values["after"] = session.send_mark_and_wait("after", timeout=5)

        tts = lambda: ElevenLabsTts(api_key="test-key", base_url=fake.http_url, read_timeout=0.3)  # noqa: E731
        _, running = harness.serve(flow_result.run(body), tts_factory=tts)
        harness.phone(running)
        values = flow_result.wait(20)
    assert values["error"], "a stalled provider must surface as an error"
    assert "timed out" in values["error"]
    assert values["elapsed"] < 10
    assert values["after"] is MarkOutcome.PLAYED
