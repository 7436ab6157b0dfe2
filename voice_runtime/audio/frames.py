"""Telephony frame constants and framing helpers.

Twilio and Plivo both carry G.711 μ-law at 8 kHz, one byte per sample, and
deliver it in 20 ms chunks. Everything that paces, pads or measures call
audio agrees on these numbers, so they live in one place.
"""

from __future__ import annotations

__all__ = [
    "SAMPLE_RATE",
    "FRAME_BYTES",
    "FRAME_INTERVAL",
    "SILENCE_BYTE",
    "SILENCE_FRAME",
    "ulaw_duration",
    "split_frames",
]

#: μ-law telephony sample rate (Hz). One μ-law byte is one sample.
SAMPLE_RATE: int = 8000
#: One 20 ms frame of 8 kHz μ-law.
FRAME_BYTES: int = 160
#: Duration of one frame, in seconds.
FRAME_INTERVAL: float = 0.020
#: μ-law code for linear zero. 0xFF (not 0x00, which is full-scale negative)
#: is what a silent line carries, so padding with it is inaudible.
SILENCE_BYTE: int = 0xFF
#: One frame of μ-law silence.
SILENCE_FRAME: bytes = bytes([SILENCE_BYTE]) * FRAME_BYTES


def ulaw_duration(n_bytes: int) -> float:
    """Seconds of audio in ``n_bytes`` of 8 kHz μ-law (one byte per sample)."""
    if n_bytes < 0:
        raise ValueError(f"n_bytes must be >= 0, got {n_bytes}")
    return n_bytes / SAMPLE_RATE


def split_frames(data: bytes, size: int = FRAME_BYTES, pad: bool = True) -> list[bytes]:
    """Cut ``data`` into ``size``-byte frames.

    With ``pad`` the final short frame is completed with μ-law silence, so
    every frame is exactly ``size`` bytes and the pacing loop can treat all
    frames alike; without it the short tail is returned as-is. Empty input
    yields an empty list (there is nothing to play, not one silent frame).
    """
    if size <= 0:
        raise ValueError(f"frame size must be > 0, got {size}")
    view = memoryview(data)
    n = len(view)
    frames = [bytes(view[i : i + size]) for i in range(0, n, size)]
    if pad and frames and len(frames[-1]) < size:
        frames[-1] = frames[-1] + bytes([SILENCE_BYTE]) * (size - len(frames[-1]))
    return frames
