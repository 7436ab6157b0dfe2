"""The pure detectors: tones found with the right timing, speech/noise/short blips ignored, bad options refused."""

from __future__ import annotations

import numpy as np
import pytest

from voice_runtime.audio.g711 import pcm16_to_ulaw
from voice_runtime.conversation.beep import BeepDetector, GreetingEndDetector
from voice_runtime.providers.mock import tone_speech
from voice_runtime.testing.phone import to_ulaw


def tone(freq: float, seconds: float, amplitude: float = 8000.0) -> bytes:
    t = np.arange(int(seconds * 8000)) / 8000
    return pcm16_to_ulaw((amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16))


def silence(seconds: float) -> bytes:
    return b"\xff" * int(seconds * 8000)


def feed_frames(detector: BeepDetector, audio: bytes, frame: int = 160) -> list:
    return [b for b in (detector.feed(audio[i : i + frame]) for i in range(0, len(audio), frame)) if b is not None]


@pytest.mark.parametrize("freq", [960.0, 1000.0, 1045.0])
def test_a_beep_near_1khz_after_a_greeting_is_reported_once_when_it_ends(freq: float) -> None:
    audio = to_ulaw(tone_speech(1.0)) + silence(0.2) + tone(freq, 0.4) + silence(0.5)
    beeps = feed_frames(BeepDetector(), audio)
    assert len(beeps) == 1
    assert beeps[0].frequency == 1000.0
    assert beeps[0].start == pytest.approx(1.2, abs=0.03)
    assert beeps[0].end == pytest.approx(1.6, abs=0.03)


def test_odd_frame_sizes_give_the_same_answer() -> None:
    audio = silence(0.3) + tone(1000, 0.25) + silence(0.3)
    assert feed_frames(BeepDetector(), audio, 160) == feed_frames(BeepDetector(), audio, 97)


@pytest.mark.parametrize(
    "audio",
    [
        to_ulaw(tone_speech(2.0)),  # speech-like harmonics
        tone(1000, 0.06) + silence(0.5),  # a blip shorter than min_ms
        tone(1400, 0.5),  # a tone outside the probe band
        tone(1000, 0.5, amplitude=100.0),  # a whisper of a tone below min_level
        pcm16_to_ulaw(np.random.default_rng(1).normal(0, 4000, 16000).astype(np.int16)),  # noise
    ],
    ids=["speech", "short", "off-band", "quiet", "noise"],
)
def test_no_beep_in_speech_noise_blips_or_other_tones(audio: bytes) -> None:
    assert feed_frames(BeepDetector(), audio) == []


def test_an_endless_tone_is_reported_at_max_ms_and_other_frequencies_can_be_probed() -> None:
    beeps = feed_frames(BeepDetector(max_ms=500), tone(1000, 3.0))
    assert len(beeps) == 1 and beeps[0].duration == pytest.approx(0.5, abs=0.03)
    assert feed_frames(BeepDetector((1400.0,)), tone(1400, 0.3) + silence(0.1))[0].frequency == 1400.0


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError):
        BeepDetector(())
    with pytest.raises(ValueError):
        BeepDetector((50.0,))
    with pytest.raises(ValueError):
        BeepDetector(min_ms=200, max_ms=100)


def test_greeting_end_needs_sound_then_silence() -> None:
    detector = GreetingEndDetector(silence_ms=1000, min_greeting_ms=500)
    assert not any(detector.feed(silence(0.02)) for _ in range(100))  # a quiet line is not a greeting's end
    speech = to_ulaw(tone_speech(1.0))
    assert not any(detector.feed(speech[i : i + 160]) for i in range(0, len(speech), 160))
    ends = [detector.feed(silence(0.02)) for _ in range(60)]
    assert ends.count(True) == 1 and ends.index(True) >= 45  # ~1 s of silence after the speech
