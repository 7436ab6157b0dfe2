"""Timeline-aligned call recording to a 16-bit PCM WAV file.

Why a timeline rather than "append what arrives": the two sides of a call do
not arrive the way they are heard. Caller audio streams in at real time,
20 ms at a time. Agent (TTS) audio is sent to the carrier in bursts, seconds
ahead of when it plays, and a barge-in ``clear`` throws away whatever had
not played yet. A recording that simply appended both would drift apart and
would contain speech the caller never heard. So every chunk is placed at the
sample position of the moment it *starts playing*, and
:meth:`CallRecorder.truncate_agent` erases agent audio scheduled after a
``clear``.

Memory stays bounded for long calls: only a short window that can still be
changed (recent past plus audio scheduled for the future) is held in memory;
everything older than :data:`HOLD_SECONDS` is committed to the WAV file.
"""

from __future__ import annotations

import threading
import time
import wave
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import numpy as np

from .frames import SAMPLE_RATE
from .g711 import ulaw_to_pcm16
from .resample import StreamResampler

__all__ = ["CallRecorder", "HOLD_SECONDS", "MAX_AHEAD_SECONDS", "JITTER_SECONDS"]

#: Audio older than ``now - HOLD_SECONDS`` is final and gets written to disk.
#: Must exceed JITTER_SECONDS so an on-time caller frame is never "late".
HOLD_SECONDS: float = 2.0
#: How far past the committed point audio may be scheduled. Carriers buffer
#: about a minute (Plivo's queue is ~60 s); anything further is a bug in the
#: caller and is dropped (counted) rather than allocating unbounded memory.
MAX_AHEAD_SECONDS: float = 120.0
#: ``at=None`` chunks append contiguously to their channel unless the channel
#: has fallen more than this far behind the clock. Network jitter then does
#: not punch tiny silent holes (clicks) into a continuous stream, while a real
#: pause in the stream still shows up as silence at the right place.
JITTER_SECONDS: float = 0.060

_CALLER, _AGENT = 0, 1


class CallRecorder:
    """Record a call to ``path``: stereo (left = caller, right = agent) or mono mix.

    * ``write_caller(ulaw, at=None)`` / ``write_agent(ulaw, at=None)``: ``at``
      is the ``clock()`` time at which the chunk starts playing. ``None``
      appends right after the channel's previous chunk, or at "now" if the
      channel has fallen behind the clock (beyond a small jitter allowance).
      Later writes to the same span overwrite earlier ones.
    * ``truncate_agent(at)`` erases agent audio scheduled at/after ``at``.
    * Gaps are silence. The clock origin (sample 0) is the construction time.

    ``path=None`` keeps no file: committed audio only goes to ``on_frames(pcm)`` (little-endian int16 WAV
    frames, interleaved when stereo), which is also called alongside a file. ``hold_seconds`` is how long
    audio stays changeable before it is committed (a live listener wants it short; a clear must land inside
    it to erase agent audio), ``commit_seconds`` the smallest step committed (1 s amortises file I/O).

    Input is 8 kHz μ-law; with ``sample_rate`` != 8000 the committed audio is
    resampled (streaming, so no seams) as it is written.

    Thread-safe: all public methods take one lock. Writing to a closed
    recorder is a no-op (late frames during teardown must not raise); the
    samples are counted in ``ignored_samples``.
    """

    def __init__(
        self,
        path: str | Path | None,
        *,
        stereo: bool = True,
        sample_rate: int = SAMPLE_RATE,
        clock: Callable[[], float] = time.monotonic,
        max_seconds: float = 4 * 3600,
        on_frames: Callable[[bytes], None] | None = None,
        hold_seconds: float = HOLD_SECONDS,
        commit_seconds: float = 1.0,
    ) -> None:
        if max_seconds <= 0:
            raise ValueError(f"max_seconds must be > 0, got {max_seconds}")
        if hold_seconds <= JITTER_SECONDS or commit_seconds <= 0:
            raise ValueError("hold_seconds must exceed JITTER_SECONDS and commit_seconds must be > 0")
        self.path = Path(path) if path is not None else None
        self._on_frames = on_frames
        self.stereo = stereo
        self.sample_rate = int(sample_rate)
        self.max_seconds = float(max_seconds)
        self._clock = clock
        self._lock = threading.Lock()
        self._resampler = StreamResampler(SAMPLE_RATE, self.sample_rate, channels=2 if stereo else 1)

        self._max_samples = int(round(self.max_seconds * SAMPLE_RATE))
        self._hold = int(hold_seconds * SAMPLE_RATE)
        self._commit_min = max(1, int(commit_seconds * SAMPLE_RATE))
        self._jitter = int(JITTER_SECONDS * SAMPLE_RATE)
        self._max_ahead = int(MAX_AHEAD_SECONDS * SAMPLE_RATE)

        # Window of not-yet-committed audio, interleaved (n, 2) so a slice is
        # already in WAV frame order. Row i is absolute sample committed + i.
        self._buf = np.zeros((4 * SAMPLE_RATE, 2), dtype=np.int16)
        self._committed = 0  # absolute 8 kHz samples already written to disk
        self._end = [0, 0]  # absolute end of the *last* chunk, per channel (for appends)
        self._hw = [0, 0]  # furthest sample holding audio, per channel
        self._frames_written = 0  # WAV frames at self.sample_rate
        self._dropped = 0  # beyond max_seconds / max-ahead
        self._late = 0  # arrived for a span already committed to disk
        self._ignored = 0  # written after close
        self._closed = False

        self._wav: wave.Wave_write | None = None
        if self.path is not None:
            self._wav = wave.open(str(self.path), "wb")
            self._wav.setnchannels(2 if stereo else 1)
            self._wav.setsampwidth(2)
            self._wav.setframerate(self.sample_rate)
        self._t0 = clock()

    # ------------------------------------------------------------------ info
    @property
    def start_time(self) -> float:
        """``clock()`` value that corresponds to sample 0."""
        return self._t0

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def duration(self) -> float:
        """Seconds of timeline recorded so far (committed + pending)."""
        with self._lock:
            return max(self._committed, *self._hw) / SAMPLE_RATE

    @property
    def frames_written(self) -> int:
        """WAV frames committed to the file so far (at ``sample_rate``)."""
        return self._frames_written

    @property
    def dropped_samples(self) -> int:
        """8 kHz samples discarded for lying beyond ``max_seconds`` (or absurdly far ahead)."""
        return self._dropped

    @property
    def dropped_seconds(self) -> float:
        return self._dropped / SAMPLE_RATE

    @property
    def late_samples(self) -> int:
        """8 kHz samples discarded because their span was already on disk."""
        return self._late

    @property
    def ignored_samples(self) -> int:
        """8 kHz samples written after :meth:`close`."""
        return self._ignored

    # ---------------------------------------------------------------- writes
    def write_caller(self, ulaw: bytes, at: float | None = None) -> None:
        """Place caller audio (8 kHz μ-law) on the left channel."""
        self._write(_CALLER, ulaw, at)

    def write_agent(self, ulaw: bytes, at: float | None = None) -> None:
        """Place agent audio (8 kHz μ-law) on the right channel at its play time."""
        self._write(_AGENT, ulaw, at)

    def truncate_agent(self, at: float | None = None) -> None:
        """Erase agent audio scheduled at/after ``at`` (default: now).

        Mirrors a barge-in ``clear``: the carrier drops its buffer, so the
        recording must not keep audio the caller never heard. Audio already
        committed to disk (older than the hold window) cannot be erased.
        """
        with self._lock:
            if self._closed:
                return
            now = self._clock()
            pos = self._pos(now if at is None else at)
            start = max(pos, self._committed)
            hw = self._hw[_AGENT]
            if hw > start:
                self._buf[start - self._committed : hw - self._committed, _AGENT] = 0
            pos = max(pos, 0)
            self._hw[_AGENT] = min(hw, pos)
            self._end[_AGENT] = min(self._end[_AGENT], pos)
            self._maybe_commit(now)

    def _pos(self, t: float) -> int:
        return int(round((t - self._t0) * SAMPLE_RATE))

    def _write(self, channel: int, ulaw: bytes, at: float | None) -> None:
        n = len(ulaw)
        if n == 0:
            return
        pcm = ulaw_to_pcm16(ulaw)  # outside the lock: pure computation
        with self._lock:
            if self._closed:
                self._ignored += n
                return
            now = self._clock()
            if at is None:
                prev = self._end[channel]
                now_pos = self._pos(now)
                start = prev if now_pos - prev <= self._jitter else now_pos
            else:
                start = self._pos(at)
            end = start + n
            # Clip to what can still be written: [committed, limit).
            limit = min(self._max_samples, self._committed + self._max_ahead)
            self._end[channel] = max(min(end, limit), 0)
            lo = max(start, self._committed)
            hi = min(end, limit)
            if lo > start:
                self._late += min(lo, end) - start
            if end > hi:
                self._dropped += end - max(hi, start)
            if hi > lo:
                self._ensure_capacity(hi - self._committed)
                self._buf[lo - self._committed : hi - self._committed, channel] = pcm[lo - start : hi - start]
                if hi > self._hw[channel]:
                    self._hw[channel] = hi
            self._maybe_commit(now)

    # ------------------------------------------------------------ internals
    def _ensure_capacity(self, needed: int) -> None:
        cap = self._buf.shape[0]
        if needed <= cap:
            return
        new_cap = max(needed, cap * 2)
        grown = np.zeros((new_cap, 2), dtype=np.int16)
        grown[:cap] = self._buf
        self._buf = grown

    def _maybe_commit(self, now: float) -> None:
        upto = min(self._pos(now) - self._hold, max(self._hw))
        if upto - self._committed >= self._commit_min:
            self._commit(upto)

    def _commit(self, upto: int) -> None:
        """Write timeline samples [committed, upto) to disk and slide the window."""
        n = upto - self._committed
        if n <= 0:
            return
        self._ensure_capacity(n)
        block = self._buf[:n]
        if self.stereo:
            out = block
        else:
            out = np.clip(block[:, 0].astype(np.int32) + block[:, 1], -32768, 32767).astype(np.int16)
        self._write_pcm(self._resampler.process(out))
        # Slide the still-mutable remainder to the front of the window.
        pending = max(max(self._hw) - upto, 0)
        if pending:
            self._ensure_capacity(n + pending)
            self._buf[:pending] = self._buf[n : n + pending]
        self._buf[pending : n + pending] = 0
        self._committed = upto

    def _write_pcm(self, pcm: np.ndarray) -> None:
        if pcm.shape[0] == 0:
            return
        data = pcm.astype("<i2", copy=False).tobytes()
        if self._wav is not None:
            self._wav.writeframes(data)
        self._frames_written += pcm.shape[0]
        if self._on_frames is not None:
            self._on_frames(data)

    # ------------------------------------------------------------- closing
    def close(self) -> None:
        """Commit everything, finalize the WAV header and close the file. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._commit(max(self._committed, *self._hw))
                self._write_pcm(self._resampler.flush())
            finally:
                if self._wav is not None:
                    self._wav.close()
                self._buf = np.zeros((0, 2), dtype=np.int16)

    def __enter__(self) -> CallRecorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
