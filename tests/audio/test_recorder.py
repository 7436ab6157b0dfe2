"""CallRecorder: timeline alignment, truncation, WAV output, bounds, threads."""

from __future__ import annotations

import threading
import wave
from pathlib import Path

import numpy as np
import pytest

from voice_runtime.audio import CallRecorder, pcm16_to_ulaw, ulaw_to_pcm16
from voice_runtime.audio.recorder import HOLD_SECONDS


class FakeClock:
    """Deterministic clock: tests advance time explicitly instead of sleeping."""

    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


def tone_ulaw(n: int, amp: int = 8000, freq: float = 500.0) -> bytes:
    t = np.arange(n) / 8000
    return pcm16_to_ulaw(np.round(amp * np.sin(2 * np.pi * freq * t)).astype(np.int16))


def read_wav(path: Path) -> tuple[int, int, np.ndarray]:
    with wave.open(str(path), "rb") as w:
        ch, rate, width = w.getnchannels(), w.getframerate(), w.getsampwidth()
        assert width == 2
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return ch, rate, data.reshape(-1, ch)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_agent_chunk_at_one_second_lands_at_sample_8000(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "call.wav"
    rec = CallRecorder(path, clock=clock)
    agent = tone_ulaw(800)
    rec.write_agent(agent, at=clock.t + 1.0)  # scheduled ahead of real time
    rec.close()
    ch, rate, data = read_wav(path)
    assert (ch, rate) == (2, 8000)
    assert data.shape[0] == 8800
    right, left = data[:, 1], data[:, 0]
    assert not right[:8000].any()
    assert np.array_equal(right[8000:], ulaw_to_pcm16(agent))
    assert not left.any()


def test_stereo_channels_and_length(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "call.wav"
    caller = tone_ulaw(160, amp=3000, freq=300)
    agent = tone_ulaw(160, amp=9000, freq=900)
    with CallRecorder(path, clock=clock) as rec:
        for _ in range(100):  # 2 s of continuous caller stream
            rec.write_caller(caller)
            clock.advance(0.02)
        rec.write_agent(agent * 25, at=clock.t - 1.0)  # 0.5 s placed from t=1.0 s
        assert rec.duration == pytest.approx(2.0)
    _, _, data = read_wav(path)
    assert data.shape == (16000, 2)
    assert np.array_equal(data[:, 0], np.tile(ulaw_to_pcm16(caller), 100))
    assert not data[:8000, 1].any() and not data[12000:, 1].any()
    assert np.array_equal(data[8000:12000, 1], np.tile(ulaw_to_pcm16(agent), 25))


def test_append_mode_continues_previous_chunk(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "a.wav"
    with CallRecorder(path, clock=clock) as rec:
        rec.write_agent(b"\x10" * 800)  # at=None: now (sample 0)
        rec.write_agent(b"\x20" * 800)  # burst ahead of real time: appended at 800
        clock.advance(0.5)
        rec.write_caller(b"\x30" * 160)  # caller channel starts at now = 4000
    _, _, data = read_wav(path)
    codes = pcm16_to_ulaw(data[:, 1])
    assert codes[:800] == b"\x10" * 800 and codes[800:1600] == b"\x20" * 800
    assert not data[:4000, 0].any()
    assert pcm16_to_ulaw(data[4000:4160, 0]) == b"\x30" * 160


def test_stream_pause_becomes_silence_but_jitter_does_not(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "p.wav"
    frame = b"\x05" * 160
    with CallRecorder(path, clock=clock) as rec:
        rec.write_caller(frame)
        clock.advance(0.045)  # late by 25 ms: jitter, stays contiguous
        rec.write_caller(frame)
        clock.advance(1.0)  # real pause: placed at now
        rec.write_caller(frame)
    _, _, data = read_wav(path)
    left = pcm16_to_ulaw(data[:, 0])
    assert left[:320] == frame * 2
    start = round(1.045 * 8000)
    assert not data[320:start, 0].any()
    assert left[start : start + 160] == frame


def test_truncate_agent_removes_scheduled_audio(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "t.wav"
    with CallRecorder(path, clock=clock) as rec:
        rec.write_agent(tone_ulaw(3 * 8000), at=clock.t)  # 3 s sent in one burst
        clock.advance(1.0)
        rec.truncate_agent(clock.t)  # barge-in at 1.0 s: the rest never played
        assert rec.duration == pytest.approx(1.0)
        rec.write_agent(b"\x40" * 160)  # next utterance appends at the cut point
        clock.advance(0.02)
    _, _, data = read_wav(path)
    assert data.shape[0] == 8000 + 160
    assert data[:8000, 1].any()
    assert pcm16_to_ulaw(data[8000:, 1]) == b"\x40" * 160


def test_truncate_handles_out_of_order_schedules(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "o.wav"
    with CallRecorder(path, clock=clock) as rec:
        rec.write_agent(b"\x01" * 800, at=clock.t + 2.0)
        rec.write_agent(b"\x02" * 800, at=clock.t + 0.5)  # earlier chunk written later
        rec.truncate_agent(clock.t + 1.0)
    _, _, data = read_wav(path)
    assert data.shape[0] == 8000  # timeline runs to the cut at 1.0 s; audio at 2.0 s gone
    assert pcm16_to_ulaw(data[4000:4800, 1]) == b"\x02" * 800
    assert not data[4800:, 1].any()


def test_mono_mixes_both_sides(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "m.wav"
    caller = tone_ulaw(400, amp=20000, freq=300)
    agent = tone_ulaw(400, amp=20000, freq=300)
    with CallRecorder(path, stereo=False, clock=clock) as rec:
        rec.write_caller(caller, at=clock.t)
        rec.write_agent(agent, at=clock.t)
    ch, _, data = read_wav(path)
    assert ch == 1
    expected = np.clip(ulaw_to_pcm16(caller).astype(np.int32) * 2, -32768, 32767)
    assert np.array_equal(data[:, 0], expected)
    assert data.max() == 32767  # clipped, not wrapped


def test_incremental_commit_keeps_memory_bounded(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "long.wav"
    rec = CallRecorder(path, clock=clock)
    frame = tone_ulaw(160)
    for _ in range(30 * 50):  # 30 s of call
        rec.write_caller(frame)
        rec.write_agent(frame)
        clock.advance(0.02)
    committed_s = rec.frames_written / 8000
    assert 30 - HOLD_SECONDS - 1.01 <= committed_s <= 30 - HOLD_SECONDS
    assert rec._buf.shape[0] <= 8 * 8000  # window, not the whole call
    # File on disk is already a valid, readable WAV before close.
    with wave.open(str(path), "rb") as w:
        assert w.getnframes() == rec.frames_written
    # Audio for a span already on disk cannot be placed; it is counted.
    rec.write_agent(b"\x00" * 160, at=clock.t - 20.0)
    assert rec.late_samples == 160
    rec.close()
    assert rec.frames_written == 30 * 8000
    assert read_wav(path)[2].shape == (30 * 8000, 2)


def test_max_seconds_drops_and_counts(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "max.wav"
    with CallRecorder(path, clock=clock, max_seconds=1.0) as rec:
        rec.write_agent(b"\x11" * 12000, at=clock.t)
        assert rec.dropped_samples == 4000
        assert rec.dropped_seconds == pytest.approx(0.5)
        rec.write_caller(b"\x11" * 160, at=clock.t + 5.0)
        assert rec.dropped_samples == 4160
    assert read_wav(path)[2].shape[0] == 8000


def test_resampled_output_rate(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "16k.wav"
    with CallRecorder(path, clock=clock, sample_rate=16000) as rec:
        rec.write_caller(tone_ulaw(8000, freq=1000), at=clock.t)
    ch, rate, data = read_wav(path)
    assert (ch, rate) == (2, 16000)
    assert abs(data.shape[0] - 16000) <= 1
    spec = np.abs(np.fft.rfft(data[:16000, 0] * np.hanning(16000)))
    assert np.argmax(spec) == 1000


def test_close_is_idempotent_and_late_writes_are_ignored(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "c.wav"
    rec = CallRecorder(path, clock=clock)
    rec.write_caller(b"\x22" * 160)
    rec.close()
    size = path.stat().st_size
    rec.close()
    rec.write_caller(b"\x22" * 160)
    rec.truncate_agent(clock.t)
    assert rec.closed and rec.ignored_samples == 160
    assert path.stat().st_size == size == 44 + 160 * 4


def test_empty_recording_is_a_valid_wav(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "e.wav"
    CallRecorder(path, clock=clock).close()
    ch, rate, data = read_wav(path)
    assert (ch, rate, data.shape[0]) == (2, 8000, 0)


def test_two_threads_writing(tmp_path: Path) -> None:
    clock = FakeClock()
    lock = threading.Lock()
    path = tmp_path / "threads.wav"
    rec = CallRecorder(path, clock=clock)
    caller, agent = b"\x33" * 160, b"\x44" * 160
    n = 500
    barrier = threading.Barrier(2)

    def writer(fn, chunk: bytes, k: int) -> None:  # type: ignore[no-untyped-def]
        barrier.wait()
        for i in range(n):
            fn(chunk, at=100.0 + i * 0.02)
            if k == 0:
                with lock:
                    clock.advance(0.02)

    threads = [
        threading.Thread(target=writer, args=(rec.write_caller, caller, 0)),
        threading.Thread(target=writer, args=(rec.write_agent, agent, 1)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rec.close()
    _, _, data = read_wav(path)
    assert data.shape == (n * 160, 2)
    # Agent writes may lag the clock enough to fall behind the committed point;
    # whatever was accepted is intact and everything is accounted for.
    assert pcm16_to_ulaw(data[:, 0]) == caller * n
    right = pcm16_to_ulaw(data[:, 1])
    assert right.count(b"\x44") + rec.late_samples == n * 160
