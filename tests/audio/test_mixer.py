"""mix_frames and the prior-art AudioMixer façade."""

from __future__ import annotations

import pytest

import os
import wave
from pathlib import Path

import numpy as np

from voice_runtime.audio import (
    FRAME_BYTES,
    FRAME_INTERVAL,
    SILENCE_FRAME,
    AudioMixer,
    CallRecorder,
    mix_frames,
    pcm16_to_ulaw,
    ulaw_to_pcm16,
)


class FakeClock:
    def __init__(self) -> None:
        self.t = 50.0

    def __call__(self) -> float:
        return self.t


def explicit_mix(a: bytes, b: bytes) -> bytes:
    n = max(len(a), len(b))
    x = np.zeros(n, np.int32)
    y = np.zeros(n, np.int32)
    x[: len(a)] = ulaw_to_pcm16(a)
    y[: len(b)] = ulaw_to_pcm16(b)
    return pcm16_to_ulaw(np.clip(x + y, -32768, 32767).astype(np.int16))


def test_prior_art_import_path() -> None:
    from voice_runtime.audio import AudioMixer as M, mix_frames as f  # noqa: F401

    assert FRAME_BYTES == 160 and FRAME_INTERVAL == 0.020 and SILENCE_FRAME == b"\xff" * 160


def test_mix_table_equals_decode_add_clip_encode_for_all_pairs() -> None:
    codes = np.arange(256, dtype=np.uint8)
    a = np.repeat(codes, 256).tobytes()
    b = np.tile(codes, 256).tobytes()
    assert mix_frames(a, b) == explicit_mix(a, b)


def test_mix_with_silence_is_identity_modulo_negative_zero() -> None:
    frame = os.urandom(160).replace(b"\x7f", b"\xff")
    assert mix_frames(frame, SILENCE_FRAME) == frame
    assert mix_frames(SILENCE_FRAME, frame) == frame


def test_mix_clips_instead_of_wrapping() -> None:
    loud = pcm16_to_ulaw(np.full(160, 30000, np.int16))
    quiet_neg = pcm16_to_ulaw(np.full(160, -30000, np.int16))
    assert ulaw_to_pcm16(mix_frames(loud, loud)).min() == 32124  # max μ-law code, no wrap
    assert ulaw_to_pcm16(mix_frames(quiet_neg, quiet_neg)).max() == -32124
    assert ulaw_to_pcm16(mix_frames(loud, quiet_neg)).tolist() == [0] * 160


def test_mix_short_and_unequal_inputs() -> None:
    caller = os.urandom(160)
    short = os.urandom(37)
    out = mix_frames(caller, short)
    assert len(out) == 160 and out == explicit_mix(caller, short)
    assert mix_frames(short, caller) == out
    assert len(mix_frames(os.urandom(400), caller)) == 400  # longer input not truncated
    assert mix_frames(b"", b"") == b""
    assert mix_frames(b"", short) == explicit_mix(b"", short)


def test_audio_mixer_without_path_or_player_is_noop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICE_MONITOR_PLAYER", "no-such-player-on-path")  # monitor-only form, player missing
    m = AudioMixer()
    m.start()
    m.write_caller(b"\x01" * 160)
    m.write_agent(b"\x02" * 160, at=1.0)
    m.truncate_agent(0.5)
    m.shutdown()
    m.shutdown()
    assert m.recorder is None and not m.running


def test_audio_mixer_records_through_call_recorder(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "mixer.wav"
    with AudioMixer(path, clock=clock) as m:
        assert isinstance(m.recorder, CallRecorder) and m.running
        m.write_caller(b"\x01" * 160)
        m.write_agent(b"\x02" * 1600, at=clock.t + 0.1)
        m.truncate_agent(clock.t + 0.2)
    m.shutdown()  # idempotent after context exit
    m.write_caller(b"\x01" * 160)  # ignored after shutdown
    with wave.open(str(path), "rb") as w:
        assert w.getnchannels() == 2 and w.getframerate() == 8000
        data = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
    assert data.shape[0] == 1600
    assert pcm16_to_ulaw(data[:160, 0]) == b"\x01" * 160
    assert pcm16_to_ulaw(data[800:1600, 1]) == b"\x02" * 800


def test_audio_mixer_autostarts_on_first_write_and_mono(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "mono.wav"
    m = AudioMixer(str(path), stereo=False, clock=clock)
    m.write_caller(b"\x03" * 160)
    assert m.running
    m.shutdown()
    with wave.open(str(path), "rb") as w:
        assert w.getnchannels() == 1 and w.getnframes() == 160
