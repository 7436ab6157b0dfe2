"""Plivo L16 conversion: one-shot helpers and stateful stream converters."""

from __future__ import annotations

import numpy as np
import pytest

from voice_runtime.audio import (
    L16Decoder,
    L16Encoder,
    l16_to_ulaw,
    pcm16_to_ulaw,
    ulaw_decode,
    ulaw_to_l16,
    ulaw_to_pcm16,
)


def ulaw_tone(freq: float = 1000.0, seconds: float = 1.0) -> bytes:
    t = np.arange(int(8000 * seconds)) / 8000
    return pcm16_to_ulaw(np.round(12000 * np.sin(2 * np.pi * freq * t)).astype(np.int16))


def l16_tone(freq: float = 1000.0, seconds: float = 1.0, rate: int = 16000, order: str = "<i2") -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return np.round(12000 * np.sin(2 * np.pi * freq * t)).astype(order).tobytes()


def test_8k_is_plain_decode_little_endian_by_default() -> None:
    ulaw = ulaw_tone(seconds=0.1)
    assert ulaw_to_l16(ulaw, 8000) == ulaw_decode(ulaw)
    assert l16_to_ulaw(ulaw_decode(ulaw), 8000) == pcm16_to_ulaw(ulaw_to_pcm16(ulaw))
    enc = L16Encoder(8000)
    assert b"".join(enc.convert(ulaw[i : i + 160]) for i in range(0, len(ulaw), 160)) == ulaw_decode(ulaw)


def test_big_endian_option_swaps_bytes() -> None:
    ulaw = ulaw_tone(seconds=0.02)
    le = ulaw_to_l16(ulaw, 8000)
    be = ulaw_to_l16(ulaw, 8000, byteorder="big")
    assert be == np.frombuffer(le, "<i2").astype(">i2").tobytes() and be != le
    assert l16_to_ulaw(be, 8000, byteorder="big") == l16_to_ulaw(le, 8000)
    with pytest.raises(ValueError):
        ulaw_to_l16(ulaw, 8000, byteorder="middle")  # type: ignore[arg-type]


def test_rate_validation() -> None:
    for bad in (11025, 24000):
        with pytest.raises(ValueError):
            ulaw_to_l16(b"\xff", bad)
        with pytest.raises(ValueError):
            L16Decoder(bad)


def test_one_shot_16k_has_right_length_and_tone() -> None:
    ulaw = ulaw_tone(seconds=1.0)
    out = np.frombuffer(ulaw_to_l16(ulaw, 16000), "<i2")
    assert len(out) == 16000
    spec = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    assert np.argmax(spec) == 1000  # 1 Hz bins: 1000 Hz


def test_encoder_16k_stream_matches_one_shot_across_20ms_frames() -> None:
    ulaw = ulaw_tone(seconds=1.0)
    enc = L16Encoder(16000)
    chunks = [enc.convert(ulaw[i : i + 160]) for i in range(0, len(ulaw), 160)]
    streamed = np.frombuffer(b"".join(chunks) + enc.flush(), "<i2").astype(np.int32)
    one_shot = np.frombuffer(ulaw_to_l16(ulaw, 16000), "<i2").astype(np.int32)
    assert len(streamed) == len(one_shot) == 16000
    assert np.abs(streamed - one_shot).max() <= 4
    # Continuity: no jump anywhere larger than the tone's own max slope (+ margin).
    max_slope = 12000 * 2 * np.pi * 1000 / 16000
    assert np.abs(np.diff(streamed[200:-200])).max() < 1.1 * max_slope
    assert all(isinstance(c, bytes) for c in chunks) and any(c == b"" for c in chunks)


def test_per_frame_one_shot_would_click() -> None:
    """The stateful encoder exists because per-frame one-shot conversion is discontinuous."""
    ulaw = ulaw_tone(seconds=0.2)
    naive = np.frombuffer(b"".join(ulaw_to_l16(ulaw[i : i + 160], 16000) for i in range(0, len(ulaw), 160)), "<i2")
    ref = np.frombuffer(ulaw_to_l16(ulaw, 16000), "<i2")
    assert np.abs(naive.astype(np.int32) - ref).max() > 100


def test_decoder_16k_stream_matches_one_shot() -> None:
    l16 = l16_tone(seconds=1.0)
    dec = L16Decoder(16000)
    out = b"".join(dec.convert(l16[i : i + 640]) for i in range(0, len(l16), 640)) + dec.flush()
    ref = l16_to_ulaw(l16, 16000)
    assert len(out) == len(ref) == 8000
    a, b = ulaw_to_pcm16(out).astype(np.int32), ulaw_to_pcm16(ref).astype(np.int32)
    # μ-law codes may differ by one step where the int16 value straddles a boundary.
    assert np.abs(a - b).max() <= 512
    assert np.mean(np.abs(a - b)) < 5


def test_decoder_carries_odd_byte_between_chunks() -> None:
    l16 = l16_tone(seconds=0.2, rate=8000)
    dec = L16Decoder(8000)
    sizes = [161, 159, 321, 359]  # odd splits across the 2-byte samples
    out, pos = [], 0
    for s in sizes * 10:
        if pos >= len(l16):
            break
        out.append(dec.convert(l16[pos : pos + s]))
        pos += s
    assert b"".join(out) == l16_to_ulaw(l16[: pos - (pos % 2)], 8000)


def test_reset_drops_stale_audio() -> None:
    ulaw = ulaw_tone(seconds=0.5)
    enc = L16Encoder(16000)
    enc.convert(ulaw)
    enc.reset()
    after = b"".join(enc.convert(ulaw[i : i + 160]) for i in range(0, len(ulaw), 160)) + enc.flush()
    fresh_enc = L16Encoder(16000)
    fresh = b"".join(fresh_enc.convert(ulaw[i : i + 160]) for i in range(0, len(ulaw), 160)) + fresh_enc.flush()
    assert len(after) == len(fresh) == 16000  # no stale 0.5 s prepended
    diff = np.frombuffer(after, "<i2").astype(np.int32) - np.frombuffer(fresh, "<i2")
    assert np.abs(diff).max() <= 2  # soxr int16 dither only
