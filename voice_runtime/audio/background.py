"""Frame-level background audio: a looping bed mixed under agent speech, and fill for the silences.

Why at frame level, in the outbound path: a bed queued as ordinary agent audio would sit in the same buffer
as speech, so a barge-in ``clear`` would drop it too, and speech would wait behind it. Mixed by the pump as
it sends, the bed costs nothing to clear (only speech is queued), comes back right after a clear, and never
delays speech by more than the small lead the pump keeps of it at the carrier.

Cheap by construction (it runs for every outbound batch of every call that has one):

* the bed is scaled to its volume **once** (a 256-entry translate table, :func:`.sources.scale_ulaw`);
* mixing is one gather in the 64 K-entry μ-law mix table (:data:`.mixer.MIX_TABLE`) — no decode, add, clip,
  encode per sample;
* taking the next ``n`` bytes of a looping bed is a slice (the bed is stored twice over so a wrap-around is
  still one slice for any ``n`` up to the bed's length).

Three layers, in :class:`BackgroundMixer`:

* **bed** (``set_bed``): under speech and in silence, until cleared;
* **thinking** (``set_thinking`` + ``thinking = True``): in silence only, while the flow is busy;
* **hold** (``set_hold``): in silence only, replacing bed and thinking while the call is on hold.

Everything here is pure (no threads, no I/O). The flow thread swaps layers by assigning attributes, which is
atomic in CPython; the loop thread only reads them, so no lock is taken per frame.
"""

from __future__ import annotations

import numpy as np

from .frames import SILENCE_BYTE
from .mixer import MIX_TABLE
from .sources import scale_ulaw

__all__ = ["Bed", "BackgroundMixer", "mix_under"]

_SILENCE = SILENCE_BYTE


def mix_under(agent: bytes, bed: bytes) -> bytes:
    """μ-law ``agent`` with ``bed`` (same length) summed under it, clipped, via the mix table."""
    a = np.frombuffer(agent, dtype=np.uint8).astype(np.uint16)
    a <<= 8
    a |= np.frombuffer(bed, dtype=np.uint8)
    return MIX_TABLE.take(a).tobytes()


class Bed:
    """One μ-law sound at a fixed volume, read forward in chunks; loops or ends (then yields silence)."""

    __slots__ = ("audio", "loop", "_doubled", "_pos", "finished", "name")

    def __init__(self, ulaw: bytes, *, volume: float = 1.0, loop: bool = True, name: str = "bed") -> None:
        if not ulaw:
            raise ValueError("background audio is empty")
        self.audio = scale_ulaw(bytes(ulaw), volume)
        self.loop = loop
        self.name = name
        self._doubled = self.audio * 2 if loop else self.audio
        self._pos = 0
        self.finished = False

    @property
    def position(self) -> int:
        return self._pos

    def take(self, n: int) -> bytes:
        """The next ``n`` bytes (silence after a non-looping bed has ended)."""
        if n <= 0:
            return b""
        length = len(self.audio)
        if self.loop:
            if n <= length:
                start = self._pos
                self._pos = (start + n) % length
                return self._doubled[start : start + n]
            parts = []
            while n > 0:
                take = min(n, length)
                parts.append(self.take(take))
                n -= take
            return b"".join(parts)
        start = self._pos
        chunk = self.audio[start : start + n]
        self._pos = min(length, start + n)
        if self._pos >= length:
            self.finished = True
        if len(chunk) < n:
            chunk += bytes([_SILENCE]) * (n - len(chunk))
        return chunk


class BackgroundMixer:
    """The layers a call's outbound path mixes in (see the module docstring). One per call."""

    __slots__ = ("bed", "thinking_bed", "hold", "_thinking", "mixed_bytes", "filled_bytes", "version")

    def __init__(self) -> None:
        self.bed: Bed | None = None
        self.thinking_bed: Bed | None = None
        self.hold: Bed | None = None
        self._thinking = False
        self.mixed_bytes = 0
        self.filled_bytes = 0
        #: Bumped by every layer change: fill already at the carrier from an older version is stale, and the
        #: pump clears it (so hold music stops, or a thinking sound starts, at once).
        self.version = 0

    @property
    def thinking(self) -> bool:
        """The flow is busy between the caller's turn and the next speak (the thinking sound plays)."""
        return self._thinking

    @thinking.setter
    def thinking(self, on: bool) -> None:
        if on != self._thinking:
            self._thinking = on
            self.version += 1

    # ------------------------------------------------------------------ control (flow thread)
    def set_bed(self, ulaw: bytes | None, *, volume: float = 0.1, loop: bool = True) -> None:
        self.bed = None if ulaw is None else Bed(ulaw, volume=volume, loop=loop, name="bed")
        self.version += 1

    def set_thinking(self, ulaw: bytes | None, *, volume: float = 0.3) -> None:
        self.thinking_bed = None if ulaw is None else Bed(ulaw, volume=volume, loop=True, name="thinking")
        self.version += 1
        if ulaw is None:
            self.thinking = False

    def set_hold(self, ulaw: bytes | None, *, volume: float = 1.0) -> None:
        self.hold = None if ulaw is None else Bed(ulaw, volume=volume, loop=True, name="hold")
        self.version += 1

    # ------------------------------------------------------------------ the outbound path (loop thread)
    @property
    def active(self) -> bool:
        """True when silence should be filled (a bed, a thinking sound that is on, or hold music)."""
        bed = self.bed
        return (
            self.hold is not None
            or (bed is not None and not bed.finished)
            or (self.thinking and self.thinking_bed is not None)
        )

    def mix(self, agent: bytes) -> bytes:
        """Agent audio with the bed under it (hold and thinking never play under speech)."""
        bed = self.bed
        if bed is None or bed.finished or self.hold is not None or not agent:
            return agent
        self.mixed_bytes += len(agent)
        return mix_under(agent, bed.take(len(agent)))

    def fill(self, n: int) -> bytes:
        """``n`` bytes for a silence: hold music, else the bed and/or thinking sound; silence if none is on."""
        hold = self.hold
        if hold is not None:
            self.filled_bytes += n
            return hold.take(n)
        bed = self.bed if self.bed is not None and not self.bed.finished else None
        thinking = self.thinking_bed if self.thinking else None
        if bed is None and thinking is None:
            return bytes([_SILENCE]) * n
        self.filled_bytes += n
        if thinking is None:
            return bed.take(n)  # type: ignore[union-attr]
        if bed is None:
            return thinking.take(n)
        return mix_under(bed.take(n), thinking.take(n))
