"""G.711 μ-law codec: bit-exactness against audioop and codec properties."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from voice_runtime.audio import (
    ULAW_DECODE_TABLE,
    ULAW_ENCODE_TABLE,
    pcm16_to_ulaw,
    ulaw_decode,
    ulaw_encode,
    ulaw_to_pcm16,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop  # stdlib on 3.11/3.12, audioop-lts on >= 3.13
    except ImportError:  # pragma: no cover - depends on the interpreter
        audioop = None

needs_audioop = pytest.mark.skipif(audioop is None, reason="no audioop reference: on Python 3.13+ pip install audioop-lts")

ALL_CODES = bytes(range(256))
ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16)


@needs_audioop
def test_decode_matches_audioop_for_all_256_codes() -> None:
    assert ulaw_decode(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)


@needs_audioop
def test_encode_matches_audioop_for_all_65536_inputs() -> None:
    pcm = ALL_INT16.astype("<i2").tobytes()
    ours = np.frombuffer(ulaw_encode(pcm), dtype=np.uint8)
    ref = np.frombuffer(audioop.lin2ulaw(pcm, 2), dtype=np.uint8)
    mismatches = np.flatnonzero(ours != ref)
    assert mismatches.size == 0, f"{mismatches.size} mismatches, first at {ALL_INT16[mismatches[:5]]}"


def test_table_shapes_and_dtypes() -> None:
    assert ULAW_DECODE_TABLE.shape == (256,) and ULAW_DECODE_TABLE.dtype == np.int16
    assert ULAW_ENCODE_TABLE.shape == (65536,) and ULAW_ENCODE_TABLE.dtype == np.uint8
    assert not ULAW_DECODE_TABLE.flags.writeable and not ULAW_ENCODE_TABLE.flags.writeable


def test_known_code_points() -> None:
    # 0xFF and 0x7F are the two zeros; 0x00 / 0x80 the extremes.
    dec = ulaw_to_pcm16(b"\xff\x7f\x00\x80")
    assert dec.tolist() == [0, 0, -32124, 32124]
    assert pcm16_to_ulaw(np.array([0, 32767, -32768], dtype=np.int16)) == b"\xff\x80\x00"


def test_encode_decode_code_round_trip() -> None:
    # Every code survives decode→encode except the redundant "negative zero" 0x7F.
    back = pcm16_to_ulaw(ulaw_to_pcm16(ALL_CODES))
    diff = [c for c in range(256) if back[c] != c]
    assert diff == [0x7F]
    assert back[0x7F] == 0xFF


def test_decode_is_idempotent_after_one_round_trip() -> None:
    once = ulaw_to_pcm16(pcm16_to_ulaw(ALL_INT16))
    twice = ulaw_to_pcm16(pcm16_to_ulaw(once))
    assert np.array_equal(once, twice)


def test_quantisation_error_is_bounded_by_segment_step() -> None:
    restored = ulaw_to_pcm16(pcm16_to_ulaw(ALL_INT16)).astype(np.int32)
    err = np.abs(restored - ALL_INT16.astype(np.int32))
    mag = np.abs(ALL_INT16.astype(np.int32))
    # μ-law is logarithmic: error grows with magnitude but stays within ~1/16 of it
    # (plus a small absolute floor near zero and the clip region above 32124).
    within = err <= np.maximum(mag // 16 + 8, 0)
    clipped = mag > 32124
    assert np.all(within | clipped)
    # Segment 0 step is 8; truncation toward -inf (audioop-compatible) costs up to 7 on negatives.
    assert err[mag < 64].max() <= 7
    assert np.all(np.sign(restored[mag > 8]) == np.sign(ALL_INT16[mag > 8]))


def test_monotonic_decode_within_each_sign() -> None:
    pos = ulaw_to_pcm16(bytes(range(0xFF, 0x7F, -1)))  # 0xFF..0x80: 0 → +32124
    neg = ulaw_to_pcm16(bytes(range(0x7F, -1, -1)))  # 0x7F..0x00: 0 → -32124
    assert np.all(np.diff(pos.astype(np.int32)) > 0)
    assert np.all(np.diff(neg.astype(np.int32)) < 0)


def test_bytes_and_array_apis_agree() -> None:
    rng = np.random.default_rng(1)
    pcm = rng.integers(-32768, 32768, 4000, dtype=np.int16)
    assert pcm16_to_ulaw(pcm) == ulaw_encode(pcm.astype("<i2").tobytes())
    ulaw = pcm16_to_ulaw(pcm)
    assert ulaw_decode(ulaw) == ulaw_to_pcm16(ulaw).astype("<i2").tobytes()


def test_other_integer_dtypes_are_clipped_not_wrapped() -> None:
    wide = np.array([40000, -40000, 5], dtype=np.int32)
    assert pcm16_to_ulaw(wide) == pcm16_to_ulaw(np.array([32767, -32768, 5], dtype=np.int16))


def test_rejects_float_and_odd_length() -> None:
    with pytest.raises(TypeError):
        pcm16_to_ulaw(np.zeros(4, dtype=np.float32))
    with pytest.raises(ValueError):
        ulaw_encode(b"\x00\x01\x02")


def test_empty_input() -> None:
    assert ulaw_decode(b"") == b""
    assert ulaw_encode(b"") == b""
    assert ulaw_to_pcm16(b"").shape == (0,)
