"""The frame-level bed mixer: looping, volume, mixing under speech, fill layers."""

from __future__ import annotations

import numpy as np
import pytest

from voice_runtime.audio.background import BackgroundMixer, Bed, mix_under
from voice_runtime.audio.g711 import pcm16_to_ulaw, ulaw_to_pcm16
from voice_runtime.audio.mixer import mix_frames
from voice_runtime.providers.mock import tone_speech


def level(ulaw: bytes) -> float:
    return float(np.abs(ulaw_to_pcm16(ulaw).astype(np.float64)).mean())


BED = pcm16_to_ulaw(tone_speech(0.5, frequency=150))  # 4000 bytes


def test_bed_loops_seamlessly_in_any_chunk_size() -> None:
    bed = Bed(BED, volume=1.0)
    out = b"".join(bed.take(n) for n in [160, 3999, 1, 7000, 160, 160])
    expected = (BED * 4)[: len(out)]
    assert out == expected


def test_non_looping_bed_ends_in_silence() -> None:
    bed = Bed(BED, loop=False)
    assert bed.take(3000) == BED[:3000] and not bed.finished
    tail = bed.take(2000)
    assert tail == BED[3000:] + b"\xff" * 1000 and bed.finished


def test_mix_under_equals_the_reference_mixer() -> None:
    speech = pcm16_to_ulaw(tone_speech(0.5))
    assert mix_under(speech, BED) == mix_frames(speech, BED)


def test_mixer_layers() -> None:
    mixer = BackgroundMixer()
    speech = pcm16_to_ulaw(tone_speech(0.2))
    assert not mixer.active and mixer.mix(speech) is speech and mixer.fill(160) == b"\xff" * 160
    mixer.set_bed(BED, volume=0.1)
    assert mixer.active
    filled = mixer.fill(1600)
    assert 0.07 < level(filled) / level(BED[:1600]) < 0.13  # the bed plays at its volume in silence
    mixed = mixer.mix(speech)
    assert mixed != speech and abs(level(mixed) - level(speech)) < 0.2 * level(speech)
    # thinking is off until switched on; then it adds to the silence, never under speech
    thinking = pcm16_to_ulaw(tone_speech(0.3, frequency=600))
    mixer.set_thinking(thinking, volume=0.5)
    quiet = level(mixer.fill(1600))
    mixer.thinking = True
    assert level(mixer.fill(1600)) > 2 * quiet
    # hold music replaces both, and is not mixed under a prompt
    mixer.set_hold(thinking, volume=1.0)
    assert mixer.mix(speech) == speech
    assert mixer.fill(800) == thinking[:800] or level(mixer.fill(800)) > 0
    mixer.set_hold(None)
    mixer.set_thinking(None)
    mixer.set_bed(None)
    assert not mixer.active


def test_empty_bed_is_refused() -> None:
    with pytest.raises(ValueError):
        Bed(b"")
