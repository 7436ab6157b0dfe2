"""Background bed, thinking sound and hold over real sockets: what the phone's line carries in silences."""

from __future__ import annotations

import statistics
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from voice_runtime import MarkOutcome
from voice_runtime.audio.g711 import pcm16_to_ulaw
from voice_runtime.providers.mock import frame_level, tone_speech

from ..conftest import CallHarness, FlowResult
from .conftest import write_wav

BED_SECONDS = 2.0


def bed_wav(tmp_path: Path) -> Path:
    return write_wav(tmp_path / "bed.wav", tone_speech(BED_SECONDS, frequency=110, rate=22050), 22050)




def test_bed_fills_silence_mixes_under_speech_and_survives_a_clear(any_mode: CallHarness, flow_result: FlowResult, tmp_path: Path) -> None:
    harness = any_mode
    bed_level = frame_level(pcm16_to_ulaw(tone_speech(BED_SECONDS, frequency=110))) * 0.2
    speak_now, clear_now, bed_off = threading.Event(), threading.Event(), threading.Event()

    def body(session) -> None:
        session.set_background(str(bed_wav(tmp_path)), volume=0.2)
        session.send_mark_and_wait("bed_only", timeout=5)
        assert speak_now.wait(10)
        flow_result.values["speech"] = session.speak("Your appointment is confirmed for Tuesday at nine.").wait(10)
        long_one = session.speak("This second sentence will be cut off by a clear in the middle of it, on purpose.")
        assert clear_now.wait(10)
        session.request_clear_buffer()
        flow_result.values["cut"] = long_one.wait(10)
        session.send_mark_and_wait("after_clear", timeout=5)
        assert bed_off.wait(10)
        session.clear_background()
        flow_result.values["end"] = session.send_mark_and_wait("bed_off", timeout=5)

    _, running = harness.serve(flow_result.run(body))
    phone = harness.phone(running)
    first = phone.wait_for("mark_echoed", timeout=10, predicate=lambda e: e.data["name"].startswith("bed_only"))
    spoken_at = phone.wait_for("media", timeout=10, after=first.at + 1.2).at  # 1.2 s of bed alone
    speak_now.set()
    speech_end = phone.wait_for("mark_echoed", timeout=10, predicate=lambda e: e.data["name"].startswith("speech"))
    cut_at = phone.wait_for("media", timeout=10, after=speech_end.at + 1.5).at  # well into the long sentence
    clear_now.set()
    clear = phone.wait_for("clear", timeout=10, after=cut_at)
    phone.wait_for("media", timeout=10, after=clear.at + 0.7)
    bed_off.set()
    values = flow_result.wait(20)
    assert values["speech"] is MarkOutcome.PLAYED and values["cut"] is MarkOutcome.CLEARED
    # 1) before any speech, the line carries the bed at its volume, with no silent ticks
    bed_only = phone.levels(first.at + 0.2, spoken_at)
    assert len(bed_only) > 40 and all(f.audio for f in bed_only)
    assert 0.7 * bed_level < statistics.median(f.level for f in bed_only) < 1.4 * bed_level
    # 2) under speech the line is louder than the bed alone
    speaking = phone.levels(speech_end.at + 0.3, cut_at)
    assert statistics.median(f.level for f in speaking) > 2 * bed_level
    # 3) across the clear the bed keeps playing: at most one silent tick while the carrier's buffer refills,
    #    and afterwards the line is back to the bed's level (the speech is gone, the bed is not)
    around = phone.levels(clear.at - 0.2, clear.at + 0.6)
    assert sum(1 for f in around if not f.audio) <= 1
    after = phone.levels(clear.at + 0.15, clear.at + 0.6)
    assert 0.7 * bed_level < statistics.median(f.level for f in after) < 1.4 * bed_level
    # 4) once cleared, the line goes silent
    end = phone.wait_for("mark_echoed", timeout=5, predicate=lambda e: e.data["name"].startswith("bed_off"))
    phone.wait_for("playback_end", timeout=5, after=end.at)
    assert values["end"] is MarkOutcome.PLAYED


def test_thinking_sound_plays_between_the_callers_turn_and_the_next_speak(harness: CallHarness, flow_result: FlowResult) -> None:
    thinking = pcm16_to_ulaw((np.sin(2 * np.pi * 500 * np.arange(4000) / 8000) * 8000).astype(np.int16))
    busy, reply_now = threading.Event(), threading.Event()

    def body(session) -> None:
        session.set_thinking_sound(thinking, volume=0.5)
        flow_result.values["heard"] = session.listen(timeout=10)
        busy.set()
        assert reply_now.wait(10)  # the flow "works" (an LLM call, say) until the test lets it go on
        flow_result.values["reply"] = session.speak("Here is your answer.", wait=True).heard
        flow_result.values["after"] = session.send_mark_and_wait("after_reply", timeout=5)

    _, running = harness.serve(flow_result.run(body), script=["what is my balance"])
    phone = harness.phone(running)
    phone.say(tone_speech(0.6))
    assert busy.wait(10)
    start = phone.wait_for("media", timeout=5)
    frames_wait = phone.wait_for("media", timeout=5, after=start.at + 0.6)
    reply_now.set()
    values = flow_result.wait(20)
    assert values["heard"] == "what is my balance" and values["reply"] and values["after"] is MarkOutcome.PLAYED
    thinking_frames = phone.levels(start.at + 0.1, frames_wait.at)
    assert thinking_frames and all(f.audio and f.level > 1000 for f in thinking_frames)
    # before the caller spoke the line was silent, and after the reply the thinking sound is off again
    assert all(not f.audio for f in phone.levels(0, start.at - 0.05))
    end = phone.wait_for("playback_end", timeout=5, after=phone.events_of("mark_echoed")[-1].at)
    assert end.data["cleared"] is False


def test_speech_replaces_the_bed_queued_at_the_carrier(harness: CallHarness, flow_result: FlowResult, tmp_path: Path) -> None:
    """Speech after a bed-only silence does not wait behind the bed already at the carrier: the pump clears
    that bed first (no mark is pending then, so none is cleared), and the speech is heard whole."""
    bed = bed_wav(tmp_path)
    speak_now = threading.Event()

    def body(session) -> None:
        session.set_background(bed, volume=0.1)
        assert speak_now.wait(10)
        flow_result.values["speech"] = session.speak("Hello there, this is the agent.", wait=True, timeout=15).mark.outcome

    _, running = harness.serve(flow_result.run(body))
    phone = harness.phone(running)
    phone.wait_for("media", timeout=10)
    phone.wait_for("media", timeout=10, after=phone.events[-1].at + 1.0)  # a second of bed alone
    before = [e for e in phone.events if e.kind == "clear"]
    speak_now.set()
    values = flow_result.wait()
    assert values["speech"] is MarkOutcome.PLAYED
    clears = [e for e in phone.events if e.kind == "clear"]
    assert not before and len(clears) == 1  # exactly one: the bed-only clear just before the speech
    assert clears[0].data["pending_marks"] == 0 and clears[0].data["dropped_bytes"] > 0  # only bed was dropped
