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
