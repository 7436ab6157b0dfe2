"""Pure detectors over the caller's μ-law audio: an answering machine's beep, and the end of a greeting.

Why pure: they are fed frame by frame from the event loop (through the session's add_audio_listener), so they
must be cheap, deterministic and testable without sockets. Both work on *audio time* (sample counts), never
wall time, so they give the same answer however fast frames arrive.

The beep detector measures, per 20 ms block, the share of the block's energy that sits in one narrow band
(a single-bin DFT at each probe frequency — the Goertzel filter, evaluated as one dot product). A beep is a
run of blocks whose energy is both loud enough and concentrated in one band for at least ``min_ms``; speech
and noise spread their energy over many bins and never qualify. The beep is reported when it *ends* (the
machine starts recording then), or once it has lasted ``max_ms`` for machines whose tone runs into the
recording.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from voice_runtime.audio.g711 import ULAW_DECODE_TABLE

SAMPLE_RATE = 8000
BLOCK = 160  # 20 ms at 8 kHz: one carrier frame
_DECODE = ULAW_DECODE_TABLE.astype(np.float64)


def ulaw_to_float(ulaw: bytes) -> np.ndarray:
    """μ-law bytes → float samples (linear 16-bit scale)."""
    return _DECODE[np.frombuffer(ulaw, dtype=np.uint8)]


@dataclass(frozen=True, slots=True)
class Beep:
    """A detected tone: its probe frequency, and where it started and ended in the detector's audio time."""

    frequency: float
    start: float  # seconds of audio fed before the tone began
    end: float  # seconds of audio fed when it was reported (tone over, or ``max_ms`` reached)

    @property
    def duration(self) -> float:
        return self.end - self.start


class BeepDetector:
    """Streaming beep detector. Feed μ-law audio with :meth:`feed`; it returns a :class:`Beep` once per beep.

    ``frequencies``: nominal beep frequencies in Hz (answering machines mostly beep near 1 kHz; add others if
    yours differ); each is probed every 25 Hz across ``± tolerance_hz``, and a beep is reported with its nominal
    frequency. ``min_ms``: shortest tone that counts (shorter blips are ignored). ``purity``: the share of a
    block's energy that must sit in the probe band (a pure tone scores ~0.8 with the Hann window, speech
    well under 0.3). ``min_level``: RMS below which a block is silence, whatever its spectrum.
    """

    def __init__(
        self,
        frequencies: Sequence[float] = (1000.0,),
        *,
        min_ms: int = 100,
        max_ms: int = 1500,
        tolerance_hz: float = 50.0,
        purity: float = 0.5,
        min_level: float = 300.0,
    ) -> None:
        if not frequencies:
            raise ValueError("BeepDetector needs at least one probe frequency")
        for f in frequencies:
            if not 100.0 <= f <= SAMPLE_RATE / 2 - 100.0:
                raise ValueError(f"probe frequency {f} Hz is outside 100..{SAMPLE_RATE // 2 - 100} Hz")
        if min_ms < 20 or max_ms < min_ms:
            raise ValueError("need 20 <= min_ms <= max_ms")
        self.frequencies = tuple(float(f) for f in frequencies)
        self.min_blocks = max(1, round(min_ms / 20))
        self.max_blocks = max(self.min_blocks, round(max_ms / 20))
        self.purity = purity
        self.min_level = min_level
        n = np.arange(BLOCK)
        self._window = np.hanning(BLOCK)
        steps = max(0, int(tolerance_hz // 25))
        offsets = [25.0 * k for k in range(-steps, steps + 1)]
        probe_hz = [f + o for f in self.frequencies for o in offsets]
        self._group = np.repeat(np.arange(len(self.frequencies)), len(offsets))  # probe row -> nominal frequency
        # One row per probe: the windowed complex exponential of a single DFT bin at that frequency.
        self._probes = self._window * np.exp(-2j * np.pi * np.outer(probe_hz, n) / SAMPLE_RATE)
        self._pending = np.empty(0)
        self._samples = 0  # audio time, in samples, of the blocks analysed so far
        self._run = 0  # consecutive tonal blocks on the same probe
        self._run_probe = -1
        self._run_start = 0
        self._reported = False  # the current run was already reported (max_ms reached)

    @property
    def audio_seconds(self) -> float:
        return self._samples / SAMPLE_RATE

    def block_score(self, block: np.ndarray) -> tuple[int, float]:
        """(nominal frequency index, share of the block's windowed energy in its best probe's band); (-1, 0) if quiet."""
        if float(np.sqrt(np.mean(block * block))) < self.min_level:
            return -1, 0.0
        windowed_energy = float(np.sum((block * self._window) ** 2))
        if windowed_energy <= 0.0:
            return -1, 0.0
        power = np.abs(self._probes @ block) ** 2
        # A pure tone of amplitude A at a probe frequency gives |X|^2 = (A/2 * Σw)^2 and windowed energy
        # A^2/2 * Σw^2 (Σw = N/2, Σw^2 = 3N/8 for Hann): the ratio below is 2/3 for a tone on a probe, ~0.6
        # half-way between two probes, and a few hundredths for noise or speech.
        ratio = power * 2.0 / (BLOCK * windowed_energy)
        best = int(np.argmax(ratio))
        return int(self._group[best]), float(ratio[best])

    def feed(self, ulaw: bytes) -> Beep | None:
        """Analyse more audio; returns a :class:`Beep` when one has just been completed (at most one per call)."""
        samples = ulaw_to_float(ulaw)
        if self._pending.size:
            samples = np.concatenate((self._pending, samples))
        found: Beep | None = None
        offset = 0
        while offset + BLOCK <= samples.size:
            beep = self._block(samples[offset : offset + BLOCK])
            if beep is not None and found is None:
                found = beep
            offset += BLOCK
        self._pending = samples[offset:]
        return found

    def _block(self, block: np.ndarray) -> Beep | None:
        probe, score = self.block_score(block)
        tonal = probe >= 0 and score >= self.purity
        beep: Beep | None = None
        if tonal and (self._run == 0 or probe == self._run_probe):
            if self._run == 0:
                self._run_start, self._run_probe, self._reported = self._samples, probe, False
            self._run += 1
            if self._run >= self.max_blocks and not self._reported:
                beep = self._beep(self._samples + BLOCK)
                self._reported = True
        else:
            if self._run >= self.min_blocks and not self._reported:
                beep = self._beep(self._samples)
            self._run = 0
            if tonal:  # a tone on another probe starts a new run
                self._run_start, self._run_probe, self._run, self._reported = self._samples, probe, 1, False
        self._samples += BLOCK
        return beep

    def _beep(self, end_sample: int) -> Beep:
        return Beep(self.frequencies[self._run_probe], self._run_start / SAMPLE_RATE, end_sample / SAMPLE_RATE)


class GreetingEndDetector:
    """The end of a recorded greeting without a beep: sound for ``min_greeting_ms``, then ``silence_ms`` quiet.

    A fallback for machines that do not beep (or beep outside the probe band). ``level`` is the mean-absolute
    level (0..32768) that counts as sound; a quiet line before anyone spoke is *not* an end of greeting.
    """

    def __init__(self, *, silence_ms: int = 1500, min_greeting_ms: int = 500, level: float = 500.0) -> None:
        self.silence_samples = silence_ms * 8
        self.min_greeting_samples = min_greeting_ms * 8
        self.level = level
        self._sound = 0
        self._quiet = 0
        self._done = False

    def feed(self, ulaw: bytes) -> bool:
        """True once (the first time the greeting is judged over)."""
        if self._done or not ulaw:
            return False
        loud = float(np.mean(np.abs(ulaw_to_float(ulaw)))) >= self.level
        if loud:
            self._sound += len(ulaw)
            self._quiet = 0
        elif self._sound >= self.min_greeting_samples:
            self._quiet += len(ulaw)
            if self._quiet >= self.silence_samples:
                self._done = True
                return True
        return False


__all__ = ["Beep", "BeepDetector", "GreetingEndDetector", "ulaw_to_float"]
