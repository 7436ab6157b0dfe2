"""Streaming and one-shot resampling (soxr)."""

from __future__ import annotations

import numpy as np
import pytest

from voice_runtime.audio import StreamResampler, resample

RATES = [8000, 16000, 22050, 24000, 44100, 48000]


def tone(freq: float, rate: int, seconds: float, amp: float = 10000.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.round(amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def stream(r: StreamResampler, x: np.ndarray, chunk: int) -> np.ndarray:
    parts = [r.process(x[i : i + chunk]) for i in range(0, len(x), chunk)]
    parts.append(r.flush())
    return np.concatenate(parts)


def spectrum_peak(x: np.ndarray, rate: int) -> tuple[float, float]:
    """(peak frequency in Hz, fraction of energy within ±20 Hz of the peak)."""
    win = np.hanning(len(x))
    spec = np.abs(np.fft.rfft(x.astype(np.float64) * win)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    k = int(np.argmax(spec))
    near = np.abs(freqs - freqs[k]) <= 20
    return float(freqs[k]), float(spec[near].sum() / spec.sum())


@pytest.mark.parametrize("in_rate", RATES)
@pytest.mark.parametrize("out_rate", [8000, 16000, 48000])
def test_streaming_equals_one_shot(in_rate: int, out_rate: int) -> None:
    x = tone(440, in_rate, 1.0)
    chunk = in_rate // 50  # 20 ms
    streamed = stream(StreamResampler(in_rate, out_rate), x, chunk)
    whole = resample(x, in_rate, out_rate)
    assert streamed.dtype == np.int16 and whole.dtype == np.int16
    assert abs(len(streamed) - out_rate) <= 1 and len(whole) == len(streamed)
    assert np.abs(streamed.astype(np.int32) - whole).max() <= 4


def test_1khz_tone_survives_8k_16k_8k_round_trip() -> None:
    x = tone(1000, 8000, 1.0)
    up = stream(StreamResampler(8000, 16000), x, 160)
    f_up, purity_up = spectrum_peak(up, 16000)
    back = stream(StreamResampler(16000, 8000), up, 320)
    f, purity = spectrum_peak(back, 8000)
    assert abs(f_up - 1000) <= 2 and abs(f - 1000) <= 2
    assert purity_up > 0.999 and purity > 0.999
    # Energy preserved (flat passband at 1 kHz); ignore filter edges.
    core = slice(800, 7200)
    ratio = np.sqrt(np.mean(back[core].astype(np.float64) ** 2) / np.mean(x[core].astype(np.float64) ** 2))
    assert ratio == pytest.approx(1.0, abs=0.01)
    # And sample-aligned: no net delay after a streaming round trip.
    assert np.abs(back[core].astype(np.int32) - x[core]).max() < 100


def test_naive_per_frame_one_shot_is_worse_than_streaming() -> None:
    """Guard for the design choice: per-frame one-shot resampling has edge artefacts."""
    x = tone(1000, 8000, 0.5)
    ref = resample(x, 8000, 16000)
    naive = np.concatenate([resample(x[i : i + 160], 8000, 16000) for i in range(0, len(x), 160)])
    streamed = stream(StreamResampler(8000, 16000), x, 160)
    err_naive = np.abs(naive.astype(np.int32) - ref).max()
    err_stream = np.abs(streamed.astype(np.int32) - ref).max()
    assert err_stream <= 4 < err_naive


def test_stream_output_is_bursty_and_may_be_empty() -> None:
    r = StreamResampler(8000, 16000)
    sizes = [r.process(np.zeros(160, np.int16)).shape[0] for _ in range(50)]
    assert 0 in sizes  # callers must skip empty outputs
    assert sum(sizes) > 0


def test_passthrough_returns_input_without_copy() -> None:
    r = StreamResampler(8000, 8000)
    x = tone(300, 8000, 0.02)
    assert r.passthrough
    assert r.process(x) is x
    assert r.flush().shape == (0,)
    assert resample(x, 16000, 16000) is x


def test_reset_forgets_history() -> None:
    x = tone(1000, 8000, 0.5)
    r = StreamResampler(8000, 16000)
    r.process(x)
    r.reset()
    after_reset = stream(r, x, 160)
    fresh = stream(StreamResampler(8000, 16000), x, 160)
    # Equal up to soxr's int16 dither (±2 LSB); stale history would differ by thousands.
    assert after_reset.shape == fresh.shape
    assert np.abs(after_reset.astype(np.int32) - fresh).max() <= 2
    # Without reset, the leftover 0.5 s is emitted first and everything shifts.
    r2 = StreamResampler(8000, 16000)
    r2.process(x)
    stale = stream(r2, x, 160)
    assert stale.shape[0] > fresh.shape[0]


def test_flush_starts_a_new_stream() -> None:
    x = tone(700, 16000, 0.3)
    r = StreamResampler(16000, 8000)
    first = stream(r, x, 320)
    second = stream(r, x, 320)
    assert first.shape == second.shape
    assert np.abs(first.astype(np.int32) - second).max() <= 2


def test_stereo_stream() -> None:
    left = tone(500, 8000, 0.5)
    x = np.stack([left, -left], axis=1)
    r = StreamResampler(8000, 16000, channels=2)
    parts = [r.process(x[i : i + 160]) for i in range(0, len(x), 160)] + [r.flush()]
    y = np.concatenate(parts)
    assert y.shape == (8000, 2)
    # Channels are filtered independently: right stays the (rounded) negation of left.
    assert np.abs(y[:, 0].astype(np.int32) + y[:, 1]).max() <= 2
    mono = stream(StreamResampler(8000, 16000), left, 160)
    assert np.abs(y[:, 0].astype(np.int32) - mono).max() <= 2


def test_validation() -> None:
    with pytest.raises(ValueError):
        StreamResampler(0, 8000)
    with pytest.raises(ValueError):
        StreamResampler(8000, 16000, quality="best")
    with pytest.raises(TypeError):
        StreamResampler(8000, 16000).process(np.zeros(10, np.float32))
    with pytest.raises(TypeError):
        resample(np.zeros(10, np.float64), 8000, 16000)
    assert resample(np.zeros(0, np.int16), 8000, 16000).shape == (0,)
