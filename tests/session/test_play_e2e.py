"""session.play over real sockets with the simulated phone: files, handles, barge-in, interruptible=False."""

from __future__ import annotations

import threading
import wave
from pathlib import Path

import numpy as np

from voice_runtime import MarkOutcome, create_stt
from voice_runtime.audio.g711 import ulaw_to_pcm16
from voice_runtime.audio.sources import load_file
from voice_runtime.providers.mock import tone_speech
from voice_runtime.testing import locate

from ..conftest import CallHarness, FlowResult
from .conftest import numbered_audio


def test_play_wav_is_heard_exactly_and_recorded(harness: CallHarness, flow_result: FlowResult, prompt_wav: Path, tmp_path: Path) -> None:
    def body(session) -> None:
        result = session.play(str(prompt_wav), wait=True)
        flow_result.values.update(heard=result.heard, outcome=result.wait(1), seconds=result.audio_seconds)
        again = session.play(prompt_wav, wait=True)  # the second play comes from the cache
        flow_result.values["again"] = again.heard

    ended = threading.Event()
    _, running = harness.serve(flow_result.run(body), recordings_dir=str(tmp_path / "rec"), on_call_ended=lambda s, st: ended.set())
    phone = harness.phone(running)
    values = flow_result.wait()
    assert values["heard"] and values["outcome"] is MarkOutcome.PLAYED and values["again"]
    assert abs(values["seconds"] - 1.2) < 0.01
    expected = load_file(prompt_wav)
    assert phone.heard_audio() == expected + expected  # byte for byte, nothing lost or added
    assert phone.violations == []
    phone.hangup()
    assert ended.wait(10), "the call never ended"  # on_call_ended runs after the recording is closed
    (recording,) = (tmp_path / "rec").glob("*.wav")
    with wave.open(str(recording)) as wav:
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    agent = frames[:, 1].astype(np.float64)
    reference = np.abs(ulaw_to_pcm16(expected + expected).astype(np.float64)) > 500
    loud = np.abs(agent) > 500
    assert abs(int(loud.sum()) - int(reference.sum())) < 0.03 * reference.sum()  # both plays are in the recording


def test_barge_in_cuts_an_interruptible_prompt(harness: CallHarness, flow_result: FlowResult) -> None:
    prompt = numbered_audio(4.0)
    started = threading.Event()

    def body(session) -> None:
        result = session.play(prompt)
        started.set()
        flow_result.values["outcome"] = result.wait(10)
        flow_result.values["interrupted"] = result.interrupted
        flow_result.values["heard_s"] = result.heard_seconds

    _, running = harness.serve(flow_result.run(body), stt_factory=lambda: create_stt("mock", script=["stop"]))
    phone = harness.phone(running)
    assert started.wait(5)
    phone.wait_for("mark_echoed", timeout=5, predicate=lambda _e: len(phone.marks_echoed) >= 5)  # ~0.6 s in
    phone.say(tone_speech(0.8))
    values = flow_result.wait()
    assert values["outcome"] is MarkOutcome.CLEARED and values["interrupted"]
    heard = phone.heard_audio()
    assert 0.6 < len(heard) / 8000 < 2.0  # cut about 100 ms after the caller started, long before its 4 s end
    assert locate(heard, prompt) == 0
    assert abs(values["heard_s"] - len(heard) / 8000) <= 0.02 + 1e-9  # the handle knows what was heard, to the frame (1e-9: 0.66 vs 0.68 is 0.020000000000000018 in floats)


def test_non_interruptible_prompt_plays_through_a_barge_in(harness: CallHarness, flow_result: FlowResult) -> None:
    disclaimer = numbered_audio(2.0, seed=3)

    def body(session) -> None:
        result = session.play(disclaimer, interruptible=False, wait=True, timeout=10)
        flow_result.values.update(outcome=result.wait(1), barge_ins=session.stats["barge_ins"])

    _, running = harness.serve(flow_result.run(body), stt_factory=lambda: create_stt("mock", script=["hello"]))
    phone = harness.phone(running)
    phone.wait_for("playback_start", timeout=5)
    phone.say(tone_speech(0.8))
    values = flow_result.wait()
    assert values["outcome"] is MarkOutcome.PLAYED and values["barge_ins"] == 0
    assert phone.heard_audio() == disclaimer
    assert phone.events_of("clear") == []
