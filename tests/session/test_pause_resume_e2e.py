"""pause_playback / resume_playback and false barge-in recovery, checked against the phone's heard log."""

from __future__ import annotations

import threading

from voice_runtime import MarkOutcome, create_stt
from voice_runtime.providers.mock import tone_speech
from voice_runtime.testing import SimulatedPhone, locate

from ..conftest import CallHarness, FlowResult
from .conftest import numbered_audio


def _frames_apart(phone: SimulatedPhone, reference: bytes) -> list[tuple[int, int, str]]:
    """(start offset in reference, length, how it ended) of each heard segment; fails if one is not in it."""
    runs = []
    for segment in phone.heard_log():
        offset = locate(segment.audio, reference)
        assert offset is not None, "the phone heard audio that is not part of the prompt"
        runs.append((offset, len(segment.audio), segment.ended))
    return runs


def _after_echoes(phone: SimulatedPhone, n: int) -> None:
    phone.wait_for("mark_echoed", timeout=10, predicate=lambda _e: len(phone.marks_echoed) >= n)


def test_pause_then_resume_continues_from_the_first_unheard_frame(harness: CallHarness, flow_result: FlowResult) -> None:
    prompt = numbered_audio(3.0)
    pause_now, resume_now, paused = threading.Event(), threading.Event(), threading.Event()

    def body(session) -> None:
        result = session.play(prompt)
        assert pause_now.wait(10)
        flow_result.values["paused"] = session.pause_playback()
        paused.set()
        assert resume_now.wait(10)
        flow_result.values["resumed"] = session.resume_playback()
        flow_result.values["outcome"] = result.wait(10)
        flow_result.values["events"] = [e.kind for e in session.events]

    _, running = harness.serve(flow_result.run(body))
    phone = harness.phone(running)
    _after_echoes(phone, 6)  # ~0.8 s into the prompt
    pause_now.set()
    assert paused.wait(5)
    phone.wait_for("clear", timeout=5)
    silent_from = phone.wait_for("playback_end", timeout=5).at
    resume_now.set()
    values = flow_result.wait()
    assert values["paused"] and values["resumed"] and values["outcome"] is MarkOutcome.PLAYED
    assert "playback_paused" in values["events"] and "playback_resumed" in values["events"]
    runs = _frames_apart(phone, prompt)
    assert [r[2] for r in runs][0] == "clear" and len(runs) == 2
    (first_at, first_len, _), (second_at, second_len, _) = runs
    assert first_at == 0 and second_len + second_at == len(prompt)  # started at the start, ended at the end
    assert second_at == first_len, f"resumed at byte {second_at}, heard up to {first_len}"  # no repeat, no gap
    assert phone.heard_audio() == prompt
    assert all(not f.audio for f in phone.levels(silent_from, phone.heard_log()[1].started_at))  # truly paused


def test_false_barge_in_resumes_from_the_first_unheard_audio(harness: CallHarness, flow_result: FlowResult) -> None:
    prompt = numbered_audio(3.0, seed=11)

    def body(session) -> None:
        result = session.play(prompt)
        flow_result.values["outcome"] = result.wait(15)
        flow_result.values["events"] = [e.kind for e in session.events]
        flow_result.values["false"] = session.stats["false_barge_ins"]

    # No script: the mock STT hears the cough (speech start, barge-in) but commits no words.
    _, running = harness.serve(
        flow_result.run(body),
        stt_factory=lambda: create_stt("mock", script=[]),
        session_defaults={"false_barge_in_window": 1.0},
    )
    phone = harness.phone(running)
    _after_echoes(phone, 5)
    phone.say(tone_speech(0.25))  # a cough
    values = flow_result.wait(20)
    assert values["outcome"] is MarkOutcome.PLAYED and values["false"] == 1
    events = values["events"]
    assert events.index("barge_in") < events.index("barge_in_false") < events.index("playback_resumed")
    runs = _frames_apart(phone, prompt)
    assert [r[2] for r in runs][0] == "clear" and len(runs) == 2
    assert runs[1][0] == runs[0][1]  # resumed exactly where the caller stopped hearing it
    assert phone.heard_audio() == prompt


def test_barge_in_followed_by_words_stays_cut(harness: CallHarness, flow_result: FlowResult) -> None:
    prompt = numbered_audio(3.0, seed=12)

    def body(session) -> None:
        result = session.play(prompt)
        flow_result.values["outcome"] = result.wait(15)
        flow_result.values["said"] = session.listen(timeout=10)
        flow_result.values["events"] = [e.kind for e in session.events]

    _, running = harness.serve(
        flow_result.run(body),
        stt_factory=lambda: create_stt("mock", script=["operator please"]),
        session_defaults={"false_barge_in_window": 2.0},
    )
    phone = harness.phone(running)
    _after_echoes(phone, 5)
    phone.say(tone_speech(0.8))
    values = flow_result.wait(20)
    assert values["outcome"] is MarkOutcome.CLEARED and values["said"] == "operator please"
    assert "barge_in_confirmed" in values["events"] and "barge_in_false" not in values["events"]
    assert len(phone.heard_log()) == 1 and len(phone.heard_audio()) < len(prompt)


class _GatedTts:
    """A TTS boundary stand-in with frame-unique audio: the first ``at_once`` bytes come at once, the rest only
    after ``gate`` is set, so the test can check that synthesis carries on (and is kept) while paused."""

    def __init__(self, audio: bytes, *, at_once: int, gate: threading.Event) -> None:
        self.audio, self.at_once, self.gate = audio, at_once, gate
        self.finished = threading.Event()

    def synthesize(self, _text: str, stop_event: threading.Event):
        for offset in range(0, len(self.audio), 800):  # 100 ms chunks
            if offset >= self.at_once and not self.gate.wait(10):
                return
            if stop_event.is_set():
                return
            yield self.audio[offset : offset + 800]
        self.finished.set()


def test_pause_then_resume_continues_speech_from_the_first_unheard_frame(harness: CallHarness, flow_result: FlowResult) -> None:
    speech = numbered_audio(3.0, seed=21)
    rest = threading.Event()
    tts = _GatedTts(speech, at_once=12000, gate=rest)  # 1.5 s at once; the rest is synthesized during the pause
    pause_now, resume_now, paused = threading.Event(), threading.Event(), threading.Event()

    def body(session) -> None:
        result = session.speak("a long answer", resumable=True)
        after = session.speak("and then this", resumable=True)  # queued behind: waits out the pause
        assert pause_now.wait(10)
        flow_result.values["paused"] = session.pause_playback()
        paused.set()
        assert resume_now.wait(10)
        flow_result.values["resumed"] = session.resume_playback()
        flow_result.values["outcome"] = result.wait(10)
        flow_result.values["after"] = after.wait(10)
        flow_result.values["events"] = [e.kind for e in session.events]

    _, running = harness.serve(flow_result.run(body), tts_factory=lambda: tts)
    phone = harness.phone(running)
    _after_echoes(phone, 6)  # ~1 s into the speech
    pause_now.set()
    assert paused.wait(5)
    phone.wait_for("clear", timeout=5)
    silent_from = phone.wait_for("playback_end", timeout=5).at
    rest.set()  # the rest of the utterance is synthesized while the caller hears nothing
    assert tts.finished.wait(5)
    resume_now.set()
    values = flow_result.wait()
    assert values["paused"] and values["resumed"]
    assert values["outcome"] is MarkOutcome.PLAYED and values["after"] is MarkOutcome.PLAYED
    assert "playback_paused" in values["events"] and "playback_resumed" in values["events"]
    log = phone.heard_log()
    assert log[0].ended == "clear"
    heard = phone.heard_audio()
    # The first utterance, heard once and whole, in order: up to the pause, then from exactly there.
    assert heard[: len(speech)] == speech, "speech heard twice, skipped or out of order around the pause"
    first_len = len(log[0].audio)
    assert 0 < first_len < 12000 and locate(log[1].audio[:1600], speech) == first_len
    assert all(not f.audio for f in phone.levels(silent_from, log[1].started_at))  # truly paused
    # The speech queued behind it came after the rest of the first, not during the pause.
    assert heard[len(speech) :] == speech


def test_a_resume_that_comes_before_the_speech_worker_noticed_the_pause_feeds_the_speech_once(
    harness: CallHarness, flow_result: FlowResult
) -> None:
    """Regression (seen once in CI): the pause cut the speech while its worker was parked in the cut run's
    read, waiting for audio not yet synthesized. A resume that came before the worker noticed fed the item a
    second time and revived the parked feeder, which later queued its old segment inside the resumed run.
    Resuming at once, before the rest is synthesized, makes that window as wide as it gets."""
    speech = numbered_audio(3.0, seed=23)
    rest = threading.Event()
    tts = _GatedTts(speech, at_once=12000, gate=rest)
    pause_now = threading.Event()

    def body(session) -> None:
        result = session.speak("a long answer", resumable=True)
        assert pause_now.wait(10)
        flow_result.values["paused"] = session.pause_playback()
        flow_result.values["resumed"] = session.resume_playback()  # the worker is still parked in its read
        rest.set()
        flow_result.values["outcome"] = result.wait(10)

    _, running = harness.serve(flow_result.run(body), tts_factory=lambda: tts)
    phone = harness.phone(running)
    _after_echoes(phone, 6)
    pause_now.set()
    values = flow_result.wait()
    assert values["paused"] and values["resumed"] and values["outcome"] is MarkOutcome.PLAYED
    log = phone.heard_log()
    assert log[0].ended == "clear" and len(log) == 2
    assert locate(log[1].audio[:1600], speech) == len(log[0].audio)  # resumed where the caller stopped hearing
    assert phone.heard_audio() == speech, "a segment of the speech was heard twice or out of order"


def test_false_barge_in_resumes_speech_from_the_first_unheard_audio(harness: CallHarness, flow_result: FlowResult) -> None:
    speech = numbered_audio(3.0, seed=22)
    gate = threading.Event()
    gate.set()
    tts = _GatedTts(speech, at_once=len(speech), gate=gate)

    def body(session) -> None:
        result = session.speak("a long answer", resumable=True)
        flow_result.values["outcome"] = result.wait(15)
        flow_result.values["events"] = [e.kind for e in session.events]
        flow_result.values["false"] = session.stats["false_barge_ins"]

    _, running = harness.serve(
        flow_result.run(body),
        tts_factory=lambda: tts,
        stt_factory=lambda: create_stt("mock", script=[]),  # hears the cough, commits no words
        session_defaults={"false_barge_in_window": 1.0},
    )
    phone = harness.phone(running)
    _after_echoes(phone, 5)
    phone.say(tone_speech(0.25))  # a cough
    values = flow_result.wait(20)
    assert values["outcome"] is MarkOutcome.PLAYED and values["false"] == 1
    events = values["events"]
    assert events.index("barge_in") < events.index("barge_in_false") < events.index("playback_resumed")
    runs = _frames_apart(phone, speech)
    assert [r[2] for r in runs][0] == "clear" and len(runs) == 2
    assert runs[1][0] == runs[0][1]  # resumed exactly where the caller stopped hearing it
    assert phone.heard_audio() == speech


def test_speech_that_is_not_resumable_is_only_cleared_by_a_pause(harness: CallHarness, flow_result: FlowResult) -> None:
    speech = numbered_audio(2.0, seed=23)
    gate = threading.Event()
    gate.set()
    tts = _GatedTts(speech, at_once=len(speech), gate=gate)
    pause_now = threading.Event()

    def body(session) -> None:
        result = session.speak("plain speech")
        assert pause_now.wait(10)
        flow_result.values["paused"] = session.pause_playback()
        flow_result.values["resumed"] = session.resume_playback()
        flow_result.values["outcome"] = result.wait(10)

    _, running = harness.serve(flow_result.run(body), tts_factory=lambda: tts)
    phone = harness.phone(running)
    phone.wait_for("playback_start", timeout=10)
    pause_now.set()
    values = flow_result.wait()
    assert values["paused"] is False and values["resumed"] is False and values["outcome"] is MarkOutcome.CLEARED
    assert len(phone.heard_log()) == 1 and len(phone.heard_audio()) < len(speech)
