"""WavRecorder: the same timeline as an inline CallRecorder, built on its own thread; never blocks the writer."""

from __future__ import annotations

import threading
import time
import wave
from pathlib import Path

import numpy as np

from voice_runtime.audio import CallRecorder, pcm16_to_ulaw
from voice_runtime.providers.mock import tone_speech
from voice_runtime.recording import WavRecorder, recording_path


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _frames(path: Path) -> np.ndarray:
    with wave.open(str(path)) as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, wav.getnchannels())


def _script(rec, clock: Clock) -> None:
    caller = pcm16_to_ulaw(tone_speech(3.0))
    agent = pcm16_to_ulaw(tone_speech(2.0, frequency=400.0))
    for i in range(0, len(caller), 160):  # caller streams in real time (clock advances 20 ms per frame)
        rec.write_caller(caller[i : i + 160], None)
        if i == 8000:  # at 1 s the agent's 2 s answer is sent ahead, scheduled to play at 1.5 s
            rec.write_agent(agent, clock.t + 0.5)
        if i == 16000:  # barge-in at 2 s: what was still to play is cleared
            rec.truncate_agent(clock.t)
        clock.t += 0.02


def test_threaded_recording_equals_inline_recording(tmp_path: Path) -> None:
    inline_clock, threaded_clock = Clock(), Clock()
    with CallRecorder(tmp_path / "inline.wav", clock=inline_clock) as inline:
        _script(inline, inline_clock)
    threaded = WavRecorder(tmp_path / "threaded.wav", clock=threaded_clock)
    _script(threaded, threaded_clock)
    assert threaded.close() == tmp_path / "threaded.wav"
    a, b = _frames(tmp_path / "inline.wav"), _frames(tmp_path / "threaded.wav")
    assert a.shape == b.shape and a.shape[1] == 2
    assert np.array_equal(a, b)
    # And the script really produced what it says: agent audio from 1.5 s to the clear at 2.0 s only.
    agent = np.abs(b[:, 1].astype(np.int32))
    assert agent[int(1.55 * 8000) : int(1.95 * 8000)].mean() > 500
    assert agent[int(2.05 * 8000) :].max() == 0


def test_a_stalled_writer_never_blocks_the_caller_and_drops_are_counted(tmp_path: Path) -> None:
    release = threading.Event()
    entered = threading.Event()

    def slow_consumer(pcm: bytes) -> None:  # stands in for a stalled disk or upload
        entered.set()
        release.wait(10)

    clock = Clock()
    rec = WavRecorder(None, on_frames=slow_consumer, max_queue_seconds=3.0, hold_seconds=0.1, clock=clock)
    frame = b"\x10" * 160
    try:
        rec.write_caller(b"\x10" * 16000, clock.t)  # 2 s of audio...
        clock.t += 3.0
        rec.write_caller(frame, None)  # ...and time moving on: it is committed, and the consumer stalls
        assert entered.wait(5)
        started = time.perf_counter()
        for _ in range(500):  # 10 s of audio while the writer thread is stuck
            rec.write_caller(frame, None)
        elapsed = time.perf_counter() - started
    finally:
        release.set()
    rec.close()
    assert rec.dropped_writes > 0  # the 3 s queue filled up and the rest was dropped, not buffered
    assert elapsed < 1.0  # 500 writes against a stuck writer returned (no blocking I/O in write_*)


def test_recording_paths_are_unique_and_carry_the_time_and_call_id(tmp_path: Path) -> None:
    wall = time.mktime((2026, 12, 1, 20, 15, 0, 0, 0, 0)) - time.timezone
    names = {recording_path(tmp_path, "CA/../x y", wall=wall).name for _ in range(50)}
    assert len(names) == 50
    name = next(iter(names))
    assert name.startswith("20261201T201500Z-CA_.._x_y-") and name.endswith(".wav")
    assert "/" not in name
