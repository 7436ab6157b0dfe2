"""Helpers for the playback end-to-end tests: prompt files made here, and numbered audio whose every frame
can be told apart (so the heard log shows exactly which part of a prompt was heard, and in what order)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from voice_runtime.audio.g711 import pcm16_to_ulaw
from voice_runtime.providers.mock import tone_speech


def write_wav(path: Path, samples: np.ndarray, rate: int, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.astype("<i2").tobytes())
    return path


def numbered_audio(seconds: float, seed: int = 7) -> bytes:
    """μ-law noise-like speech: every 20 ms frame is unique, so any heard run maps to one place in it."""
    rng = np.random.default_rng(seed)
    envelope = tone_speech(seconds, frequency=300).astype(np.float64) / 9000.0
    noise = rng.normal(0, 6000, len(envelope)) * (0.5 + np.abs(envelope))
    return pcm16_to_ulaw(np.clip(noise, -32768, 32767).astype(np.int16))


@pytest.fixture
def prompt_wav(tmp_path: Path) -> Path:
    """A 1.2 s 16 kHz stereo prompt."""
    mono = tone_speech(1.2, frequency=240, rate=16000)
    stereo = np.repeat(mono, 2)
    return write_wav(tmp_path / "prompt.wav", stereo, 16000, channels=2)
