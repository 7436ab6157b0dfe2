"""Pausing a recording for part of a call (a card number, a password read aloud).

Pauses are windows on the call's monotonic clock, not a flag read at write time, because the two sides
are written at different moments: agent audio is written seconds before it plays, caller audio may carry
the carrier's own timestamp. A window masks whatever *plays* inside it, whenever it was written. An open
window (paused, not yet resumed) masks everything after its start, so agent audio queued during a pause
stays silent even if it plays after the resume: the safe side.
"""

from __future__ import annotations

import threading

from voice_runtime.audio.frames import SAMPLE_RATE, SILENCE_BYTE

__all__ = ["PauseWindows"]

_SILENCE = bytes([SILENCE_BYTE])


class PauseWindows:
    """Thread-safe list of ``[start, end)`` windows; ``end`` is ``None`` while paused."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: list[list[float | None]] = []
        self.masked_bytes = 0
        #: True once any pause happened (then every write is checked against the windows); a plain
        #: attribute because it is read for every frame of every call.
        self.active = False

    @property
    def paused(self) -> bool:
        with self._lock:
            return bool(self._windows) and self._windows[-1][1] is None

    def pause(self, at: float) -> None:
        with self._lock:
            if not self._windows or self._windows[-1][1] is not None:
                self._windows.append([at, None])
            self.active = True

    def resume(self, at: float) -> None:
        with self._lock:
            if self._windows and self._windows[-1][1] is None:
                start = self._windows[-1][0]
                assert start is not None
                self._windows[-1][1] = max(at, start)

    def windows(self) -> list[tuple[float, float | None]]:
        with self._lock:
            return [(w[0], w[1]) for w in self._windows]  # type: ignore[misc]

    def mask(self, ulaw: bytes, start: float) -> bytes:
        """``ulaw`` (playing from ``start``) with every sample inside a window replaced by silence."""
        if not self._windows or not ulaw:
            return ulaw
        n = len(ulaw)
        end = start + n / SAMPLE_RATE
        out: bytearray | None = None
        for w_start, w_end in self.windows():
            if w_start >= end or (w_end is not None and w_end <= start):
                continue
            lo = max(0, int(round((w_start - start) * SAMPLE_RATE)))
            hi = n if w_end is None else min(n, int(round((w_end - start) * SAMPLE_RATE)))
            if hi <= lo:
                continue
            if out is None:
                out = bytearray(ulaw)
            out[lo:hi] = _SILENCE * (hi - lo)
            self.masked_bytes += hi - lo
        return ulaw if out is None else bytes(out)
