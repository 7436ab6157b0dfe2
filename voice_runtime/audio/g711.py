"""G.711 μ-law codec and Plivo L16 transcoding, table-driven with numpy.

Why tables: every call decodes and encodes 50 frames a second in each
direction, for hundreds of calls at once. A 256-entry decode table and a
65536-entry encode table (one entry per possible int16 sample) turn both
directions into a single vectorised gather with no per-sample Python.

Bit-exactness: the tables are generated from the G.711 segment rules at
import time and reproduce ``audioop.ulaw2lin`` / ``audioop.lin2ulaw``
exactly for all 256 codes and all 65536 int16 inputs (the encoder first
drops the two least-significant bits, as audioop does). This module never
imports ``audioop`` (removed in Python 3.13); the tests compare against it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from .frames import SAMPLE_RATE
from .resample import StreamResampler, resample

__all__ = [
    "ULAW_DECODE_TABLE",
    "ULAW_ENCODE_TABLE",
    "ulaw_to_pcm16",
    "pcm16_to_ulaw",
    "ulaw_decode",
    "ulaw_encode",
    "L16_RATES",
    "ulaw_to_l16",
    "l16_to_ulaw",
    "L16Encoder",
    "L16Decoder",
]

ByteOrder = Literal["little", "big"]

_BIAS = 0x84  # 132: added before segmenting so segment 0 also has a 1 bit to find
_CLIP_14 = 8159  # largest magnitude representable after the >>2 (14-bit domain)
_SEG_END_14 = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)


def _build_decode_table() -> np.ndarray:
    """Expand each of the 256 μ-law codes to its int16 value."""
    u = ~np.arange(256, dtype=np.int32) & 0xFF  # codes are transmitted inverted
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    table = np.where(u & 0x80, -magnitude, magnitude).astype(np.int16)
    table.flags.writeable = False
    return table


def _build_encode_table() -> np.ndarray:
    """Compress every int16 value to its μ-law code; indexed by the uint16 bit pattern."""
    pcm = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)
    val = pcm >> 2  # arithmetic shift to 14 bits, matching audioop's rounding (toward -inf)
    negative = val < 0
    mag = np.minimum(np.where(negative, -val, val), _CLIP_14) + (_BIAS >> 2)
    seg = np.searchsorted(_SEG_END_14, mag, side="left")  # first segment whose end >= mag
    code = (seg << 4) | ((mag >> (seg + 1)) & 0x0F)
    code = np.where(seg >= 8, 0x7F, code)
    mask = np.where(negative, 0x7F, 0xFF)
    table = (code ^ mask).astype(np.uint8)
    table.flags.writeable = False
    return table


#: int16 value of each μ-law code.
ULAW_DECODE_TABLE: np.ndarray = _build_decode_table()
#: μ-law code of each int16 sample, indexed by ``sample.view(np.uint16)``.
ULAW_ENCODE_TABLE: np.ndarray = _build_encode_table()

_LE_I16 = np.dtype("<i2")
_LE_U16 = np.dtype("<u2")


def ulaw_to_pcm16(data: bytes) -> np.ndarray:
    """Decode μ-law bytes to a new native int16 array (one sample per byte)."""
    return ULAW_DECODE_TABLE.take(np.frombuffer(data, dtype=np.uint8))


def pcm16_to_ulaw(samples: np.ndarray | bytes) -> bytes:
    """Encode int16 samples (array, or little-endian s16 bytes) to μ-law bytes.

    Arrays of other integer dtypes are clipped to the int16 range first (a
    wrapped sample is a loud click; a clipped one is merely saturated).
    Floating-point arrays are rejected because their scale is ambiguous.
    """
    if isinstance(samples, (bytes, bytearray, memoryview)):
        if len(samples) % 2:
            raise ValueError("s16le PCM must have an even number of bytes")
        index = np.frombuffer(samples, dtype=_LE_U16)
    else:
        arr = np.asarray(samples)
        if arr.dtype != np.int16:
            if not np.issubdtype(arr.dtype, np.integer):
                raise TypeError(f"expected int16 samples, got dtype {arr.dtype}")
            arr = np.clip(arr, -32768, 32767).astype(np.int16)
        index = arr.reshape(-1).view(np.uint16)
    return ULAW_ENCODE_TABLE.take(index).tobytes()


def ulaw_decode(data: bytes) -> bytes:
    """Decode μ-law bytes to s16le PCM bytes (drop-in for ``audioop.ulaw2lin(data, 2)``)."""
    out = ULAW_DECODE_TABLE.take(np.frombuffer(data, dtype=np.uint8))
    return out.astype(_LE_I16, copy=False).tobytes()


def ulaw_encode(pcm: bytes) -> bytes:
    """Encode s16le PCM bytes to μ-law (drop-in for ``audioop.lin2ulaw(pcm, 2)``)."""
    return pcm16_to_ulaw(pcm)


# --------------------------------------------------------------------------
# Plivo L16 (`audio/x-l16;rate=8000|16000`)
#
# Byte order: the project reference, /work/shared/reference/
# telephony-protocols.md §2 (§2.2 "Supported: audio/x-l16 at 8000 or 16000",
# §2.4 contentType table), lists the L16 content types but does NOT state
# the byte order. Sources pull in different directions: RTP's L16
# (RFC 3551 §4.5.11) is network byte order (big-endian), while WebSocket
# media APIs conventionally carry host-order (little-endian) PCM. Following
# the project decision we default to little-endian and make the order a
# keyword so a capture from a real Plivo call can flip it without code
# changes.
# --------------------------------------------------------------------------

#: Rates Plivo accepts for `audio/x-l16` (reference §2.2).
L16_RATES: frozenset[int] = frozenset({8000, 16000})


def _l16_dtype(byteorder: ByteOrder) -> np.dtype:
    if byteorder == "little":
        return np.dtype("<i2")
    if byteorder == "big":
        return np.dtype(">i2")
    raise ValueError(f"byteorder must be 'little' or 'big', got {byteorder!r}")


def _check_l16_rate(rate: int) -> int:
    if rate not in L16_RATES:
        raise ValueError(f"Plivo L16 supports rates {sorted(L16_RATES)}, got {rate!r}")
    return int(rate)


def _pcm_to_l16_bytes(samples: np.ndarray, dtype: np.dtype) -> bytes:
    return samples.astype(dtype, copy=False).tobytes()


def _l16_bytes_to_pcm(data: bytes, dtype: np.dtype) -> np.ndarray:
    if len(data) % 2:
        raise ValueError("L16 data must have an even number of bytes")
    return np.frombuffer(data, dtype=dtype).astype(np.int16, copy=False)


def ulaw_to_l16(data: bytes, rate: int, *, byteorder: ByteOrder = "little") -> bytes:
    """One-shot μ-law 8 kHz → L16 at ``rate`` (8000 or 16000).

    Only for complete buffers: at 16 kHz this restarts the resampler, so
    applying it frame by frame clicks at each frame edge. Stream through
    :class:`L16Encoder` instead.
    """
    rate = _check_l16_rate(rate)
    pcm = ulaw_to_pcm16(data)
    if rate != SAMPLE_RATE:
        pcm = resample(pcm, SAMPLE_RATE, rate)
    return _pcm_to_l16_bytes(pcm, _l16_dtype(byteorder))


def l16_to_ulaw(data: bytes, rate: int, *, byteorder: ByteOrder = "little") -> bytes:
    """One-shot L16 at ``rate`` (8000 or 16000) → μ-law 8 kHz. Whole buffers only; see :class:`L16Decoder`."""
    rate = _check_l16_rate(rate)
    pcm = _l16_bytes_to_pcm(data, _l16_dtype(byteorder))
    if rate != SAMPLE_RATE:
        pcm = resample(pcm, rate, SAMPLE_RATE)
    return pcm16_to_ulaw(pcm)


class L16Encoder:
    """Streaming μ-law 8 kHz → Plivo L16 at ``rate``; one per outbound call stream.

    Keeps the resampler state across :meth:`convert` calls so consecutive
    20 ms frames join without discontinuities. At 16 kHz output is delayed
    and bursty, so ``convert`` may return ``b""``: skip those instead of
    sending an empty ``playAudio``. Call :meth:`reset` after ``clearAudio``
    and :meth:`flush` at end of stream.
    """

    __slots__ = ("rate", "byteorder", "_dtype", "_resampler")

    def __init__(self, rate: int, *, byteorder: ByteOrder = "little", quality: str = "HQ") -> None:
        self.rate = _check_l16_rate(rate)
        self.byteorder = byteorder
        self._dtype = _l16_dtype(byteorder)
        self._resampler = StreamResampler(SAMPLE_RATE, self.rate, quality=quality)

    def convert(self, data: bytes) -> bytes:
        """Encode the next μ-law chunk; returns the L16 bytes ready so far (possibly empty)."""
        out = self._resampler.process(ulaw_to_pcm16(data))
        return _pcm_to_l16_bytes(out, self._dtype) if out.size else b""

    def flush(self) -> bytes:
        """Emit the remaining tail at end of stream."""
        out = self._resampler.flush()
        return _pcm_to_l16_bytes(out, self._dtype) if out.size else b""

    def reset(self) -> None:
        """Forget buffered audio (barge-in): the next chunk starts a fresh stream."""
        self._resampler.reset()


class L16Decoder:
    """Streaming Plivo L16 at ``rate`` → μ-law 8 kHz; one per inbound call stream.

    Keeps resampler state across chunks and also carries an odd trailing
    byte over to the next chunk, so a sample split across WebSocket
    messages is not lost. ``convert`` may return ``b""``; skip it.
    """

    __slots__ = ("rate", "byteorder", "_dtype", "_resampler", "_carry")

    def __init__(self, rate: int, *, byteorder: ByteOrder = "little", quality: str = "HQ") -> None:
        self.rate = _check_l16_rate(rate)
        self.byteorder = byteorder
        self._dtype = _l16_dtype(byteorder)
        self._resampler = StreamResampler(self.rate, SAMPLE_RATE, quality=quality)
        self._carry = b""

    def convert(self, data: bytes) -> bytes:
        """Decode the next L16 chunk; returns the μ-law bytes ready so far (possibly empty)."""
        if self._carry:
            data = self._carry + bytes(data)
            self._carry = b""
        if len(data) % 2:
            self._carry = bytes(data[-1:])
            data = data[:-1]
        if not data:
            return b""
        out = self._resampler.process(_l16_bytes_to_pcm(data, self._dtype))
        return pcm16_to_ulaw(out) if out.size else b""

    def flush(self) -> bytes:
        """Emit the remaining tail at end of stream (an unpaired last byte is dropped)."""
        self._carry = b""
        out = self._resampler.flush()
        return pcm16_to_ulaw(out) if out.size else b""

    def reset(self) -> None:
        """Forget buffered audio and any unpaired byte."""
        self._carry = b""
        self._resampler.reset()
