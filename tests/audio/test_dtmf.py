"""DTMF tones (ITU-T Q.23) and the Goertzel detector."""

from __future__ import annotations

import numpy as np
import pytest

from voice_runtime.audio.background import mix_under
from voice_runtime.audio.dtmf import DTMF_KEYS, DtmfDetector, decode_dtmf, dtmf_tone, dtmf_tones
from voice_runtime.audio.g711 import pcm16_to_ulaw, ulaw_to_pcm16
from voice_runtime.audio.sources import scale_ulaw
from voice_runtime.providers.mock import tone_speech

ALL = "0123456789*#ABCD"


def test_tones_have_q23_frequencies_and_standard_timing() -> None:
    audio = dtmf_tones("5")
    assert len(audio) == 800 + 800  # 100 ms tone + 100 ms gap at 8 kHz
    x = ulaw_to_pcm16(audio[:800]).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x, 8000))  # 1 Hz bins
    low_peak = 600 + int(np.argmax(spectrum[600:1100]))
    high_peak = 1100 + int(np.argmax(spectrum[1100:1800]))
    assert (low_peak, high_peak) == (770, 1336)
    assert set(audio[800:]) == {0xFF}  # the gap is true μ-law silence
    high = spectrum[1336] / spectrum[770]
    assert 1.1 < high < 1.4  # high group 2 dB above the low group (twist)


def test_every_key_round_trips_at_any_frame_alignment() -> None:
    audio = dtmf_tones(ALL)
    for offset in (0, 1, 57, 80, 159):
        assert decode_dtmf(b"\xff" * offset + audio) == ALL


def test_pauses_and_repeated_keys() -> None:
    audio = dtmf_tones("11w2W2")
    assert len(audio) == 4 * 1600 + 4000 + 8000
    assert decode_dtmf(audio) == "1122"


def test_short_tones_down_to_60ms_are_detected_and_invalid_input_refused() -> None:
    assert decode_dtmf(dtmf_tones("159#", tone_ms=60, gap_ms=60)) == "159#"
    with pytest.raises(ValueError):
        dtmf_tones("12x")
    with pytest.raises(ValueError):
        dtmf_tones("1", tone_ms=20)
    with pytest.raises(ValueError):
        dtmf_tone("Z")


def test_speech_and_single_tones_are_not_digits() -> None:
    speech = pcm16_to_ulaw(tone_speech(5.0))
    t = np.arange(8000) / 8000
    single = pcm16_to_ulaw((np.sin(2 * np.pi * 770 * t) * 12000).astype(np.int16))
    noise = pcm16_to_ulaw((np.random.default_rng(1).normal(0, 6000, 16000)).astype(np.int16))
    assert decode_dtmf(speech + single + noise) == ""


def test_digits_survive_a_background_bed_and_streaming_in_odd_chunks() -> None:
    bed = scale_ulaw(pcm16_to_ulaw(tone_speech(4.0, frequency=180)), 0.3)
    tones = dtmf_tones("9041")
    mixed = mix_under(tones, bed[: len(tones)])
    detector = DtmfDetector()
    got = "".join(detector.process(mixed[i : i + 77]) for i in range(0, len(mixed), 77))
    assert got == "9041" and detector.digits == "9041"
    assert [d.digit for d in detector.detected] == list("9041")


def test_detector_on_digit_callback_and_keys_table() -> None:
    seen: list[str] = []
    DtmfDetector(on_digit=seen.append).process(dtmf_tones("*#"))
    assert seen == ["*", "#"]
    assert len(DTMF_KEYS) == 16
