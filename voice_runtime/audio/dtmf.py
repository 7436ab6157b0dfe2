"""In-band DTMF: an ITU-T Q.23 tone generator and a streaming Goertzel detector, both over μ-law 8 kHz.

Why in-band: Twilio Media Streams has no "send digits" message and Plivo's ``sendDTMF`` is not available
everywhere, but a dual tone in the media path reaches any IVR on any carrier (G.711 carries it cleanly).

**Generator** (:func:`dtmf_tones`): each key is the sum of one low-group and one high-group sine (Q.23
frequencies), the high tone 2 dB above the low one (the usual "twist" that offsets line roll-off), sent for
``tone_ms`` (default 100 ms) followed by ``gap_ms`` of silence (default 100 ms). Q.24 asks receivers to accept
tones of 40 ms and pauses of 40 ms, so the defaults leave a wide margin; Twilio's and Plivo's own digit senders
use similar timing. ``w`` inserts a 0.5 s pause and ``W`` a 1 s pause, as in Twilio's ``sendDigits``.

**Detector** (:class:`DtmfDetector`): per 20 ms frame it computes the Goertzel power at the eight DTMF
frequencies (evaluated as one precomputed projection — the same number the Goertzel recursion gives, one
numpy product instead of 160 Python steps), then accepts a key only if both group peaks stand out from the
other tones in their group, the twist is within ±8 dB and the two tones carry most of the frame's energy
(so speech and music rarely trigger it). A digit is reported once after two consecutive frames agree (40 ms,
the Q.24 minimum) and re-armed after a frame without it, which also debounces a held key.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .frames import FRAME_BYTES, SAMPLE_RATE, SILENCE_BYTE
from .g711 import ULAW_DECODE_TABLE, pcm16_to_ulaw

__all__ = [
    "LOW_FREQS",
    "HIGH_FREQS",
    "DTMF_KEYS",
    "dtmf_tone",
    "dtmf_tones",
    "DtmfDetector",
    "DetectedDigit",
    "decode_dtmf",
]

LOW_FREQS: tuple[float, ...] = (697.0, 770.0, 852.0, 941.0)
HIGH_FREQS: tuple[float, ...] = (1209.0, 1336.0, 1477.0, 1633.0)
_LAYOUT = ("123A", "456B", "789C", "*0#D")
#: key -> (low Hz, high Hz)
DTMF_KEYS: dict[str, tuple[float, float]] = {
    key: (LOW_FREQS[row], HIGH_FREQS[col]) for row, keys in enumerate(_LAYOUT) for col, key in enumerate(keys)
}
_PAUSES = {"w": 0.5, "W": 1.0}

# Levels: full-scale μ-law sine is about +3.17 dBm0. Low group -8 dBm0, high group -6 dBm0 (2 dB twist).
_FULL_SCALE_DBM0 = 3.17


def _amplitude(dbm0: float) -> float:
    return 32767.0 * 10 ** ((dbm0 - _FULL_SCALE_DBM0) / 20)


def dtmf_tone(key: str, seconds: float = 0.1, *, low_dbm0: float = -8.0, high_dbm0: float = -6.0) -> np.ndarray:
    """One key's dual tone as int16 at 8 kHz, with 2 ms raised-cosine edges (no clicks, no splatter)."""
    if key not in DTMF_KEYS:
        raise ValueError(f"not a DTMF key: {key!r}")
    low, high = DTMF_KEYS[key]
    n = max(1, int(round(seconds * SAMPLE_RATE)))
    t = np.arange(n, dtype=np.float64) / SAMPLE_RATE
    wave = _amplitude(low_dbm0) * np.sin(2 * math.pi * low * t) + _amplitude(high_dbm0) * np.sin(2 * math.pi * high * t)
    edge = min(n // 2, 16)
    if edge:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0, math.pi, edge))
        wave[:edge] *= ramp
        wave[-edge:] *= ramp[::-1]
    return np.clip(np.round(wave), -32768, 32767).astype(np.int16)


def dtmf_tones(digits: str, *, tone_ms: int = 100, gap_ms: int = 100) -> bytes:
    """μ-law 8 kHz audio that dials ``digits`` (``0-9 * # A-D``, ``w`` = 0.5 s pause, ``W`` = 1 s pause)."""
    if not digits:
        raise ValueError("no digits to send")
    if tone_ms < 40 or gap_ms < 40:
        raise ValueError("tone and gap must each be at least 40 ms (ITU-T Q.24 minimum)")
    bad = [d for d in digits if d.upper() not in DTMF_KEYS and d not in _PAUSES]
    if bad:
        raise ValueError(f"invalid DTMF digits {digits!r}")
    gap = bytes([SILENCE_BYTE]) * (gap_ms * SAMPLE_RATE // 1000)
    parts: list[bytes] = []
    for digit in digits:
        if digit in _PAUSES:
            parts.append(bytes([SILENCE_BYTE]) * int(_PAUSES[digit] * SAMPLE_RATE))
            continue
        parts.append(pcm16_to_ulaw(dtmf_tone(digit.upper(), tone_ms / 1000)))
        parts.append(gap)
    return b"".join(parts)


def _projection(n: int) -> np.ndarray:
    """Complex exponentials at the eight DTMF frequencies over ``n`` samples, Hann-windowed.

    ``|x @ row|²`` equals the Goertzel power for that (possibly non-integer) bin. The window keeps a strong tone
    from leaking into its neighbour 73 Hz away in a block only 160 samples (50 Hz per bin) long.
    """
    freqs = np.array(LOW_FREQS + HIGH_FREQS)
    t = np.arange(n) / SAMPLE_RATE
    window = np.hanning(n)
    return (np.exp(-2j * math.pi * freqs[:, None] * t[None, :]) * window[None, :]).T.astype(np.complex128)


@dataclass(frozen=True)
class DetectedDigit:
    digit: str
    frame: int  # index of the frame at which the digit was confirmed


class DtmfDetector:
    """Streaming DTMF decoder over μ-law 8 kHz; feed it frames in order with :meth:`process`.

    Pure and single-threaded (one per stream). ``on_digit`` (optional) is called with each digit as it is
    confirmed; :attr:`digits` accumulates them.
    """

    def __init__(
        self,
        *,
        frame_bytes: int = FRAME_BYTES,
        min_level: float = 300.0,
        tone_share: float = 0.6,
        peak_ratio_db: float = 8.0,
        max_twist_db: float = 8.0,
        confirm_frames: int = 2,
        on_digit: Callable[[str], None] | None = None,
    ) -> None:
        self.frame_bytes = frame_bytes
        self.min_level = min_level  # RMS (int16 units) below which a frame is not even analysed
        self.tone_share = tone_share
        self._peak_ratio = 10 ** (peak_ratio_db / 10)
        self._max_twist = 10 ** (max_twist_db / 10)
        self.confirm_frames = confirm_frames
        self.on_digit = on_digit
        self.digits = ""
        self.detected: list[DetectedDigit] = []
        self._proj = _projection(frame_bytes)
        self._window_sum_sq = float(np.sum(np.hanning(frame_bytes))) ** 2
        self._buffer = b""
        self._frame = 0
        self._candidate: str | None = None
        self._run = 0
        self._reported: str | None = None

    def process(self, ulaw: bytes) -> str:
        """Feed μ-law audio (any length); returns the digits confirmed in it (usually "")."""
        data = self._buffer + ulaw
        found = ""
        n = self.frame_bytes
        usable = len(data) - len(data) % n
        for start in range(0, usable, n):
            digit = self._classify(data[start : start + n])
            self._frame += 1
            confirmed = self._track(digit)
            if confirmed:
                found += confirmed
        self._buffer = data[usable:]
        return found

    def classify_frame(self, frame: bytes) -> str | None:
        """The key one frame looks like on its own (or None); no state is changed."""
        return self._classify(frame)

    def _classify(self, frame: bytes) -> str | None:
        x = ULAW_DECODE_TABLE[np.frombuffer(frame, dtype=np.uint8)].astype(np.float64)
        energy = float(x @ x)
        if energy < self.min_level**2 * len(x):
            return None
        power = np.abs(x @ self._proj) ** 2
        low, high = power[:4], power[4:]
        li, hi = int(np.argmax(low)), int(np.argmax(high))
        pl, ph = low[li], high[hi]
        if pl <= 0 or ph <= 0:
            return None
        # each peak must stand out from the rest of its group
        if np.sort(low)[-2] * self._peak_ratio > pl or np.sort(high)[-2] * self._peak_ratio > ph:
            return None
        if not (1 / self._max_twist <= ph / pl <= self._max_twist):
            return None
        # A windowed sine of amplitude A has |X|² = (A·Σw/2)² and energy A²n/2, so |X|² stands for 2n|X|²/(Σw)²
        # of the frame's energy: the two tones must carry most of it.
        tone_energy = (pl + ph) * 2.0 * len(x) / self._window_sum_sq
        if tone_energy < self.tone_share * energy:
            return None
        return _LAYOUT[li][hi]

    def _track(self, digit: str | None) -> str:
        if digit is None:
            self._candidate, self._run, self._reported = None, 0, None
            return ""
        if digit != self._candidate:
            self._candidate, self._run = digit, 1
            self._reported = None
        else:
            self._run += 1
        if self._run >= self.confirm_frames and self._reported != digit:
            self._reported = digit
            self.digits += digit
            self.detected.append(DetectedDigit(digit, self._frame))
            if self.on_digit is not None:
                self.on_digit(digit)
            return digit
        return ""


def decode_dtmf(ulaw: bytes) -> str:
    """Every DTMF digit in a μ-law 8 kHz buffer, in order."""
    return DtmfDetector().process(ulaw)
