"""The default sink: a stereo WAV per call (left caller, right agent), written off the event loop.

Two things the plain :class:`~voice_runtime.audio.CallRecorder` does not do by itself:

* **No file I/O on the loop.** The loop only appends each write to a bounded queue; one writer thread for
  the whole process drains every recording's queue a few times a second into a ``CallRecorder`` whose clock
  is the time each write was *queued*, so the timeline is exactly what it would have been inline. A stalled disk cannot stall calls: past
  ``max_queue_seconds`` of queued audio, writes are dropped and counted (``dropped_writes``).
* **Unique names.** Two calls never share a file, even simulated calls that all have the same call id:
  ``<UTC time>-<call id>-<6 random hex>.wav`` (see :func:`recording_path`).
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from voice_runtime.audio.frames import SAMPLE_RATE
from voice_runtime.audio.recorder import HOLD_SECONDS, CallRecorder

__all__ = ["WavRecorder", "recording_path"]

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def recording_path(directory: str | Path, call_id: str | None, *, suffix: str = ".wav", wall: float | None = None) -> Path:
    """A fresh file name in ``directory``: sortable UTC time, the call id (made file-safe), a random tag."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if wall is None else wall))
    cid = _UNSAFE.sub("_", call_id or "call")[:64]
    return Path(directory) / f"{stamp}-{cid}-{secrets.token_hex(3)}{suffix}"


_Op = tuple[int, bytes, float | None, float]  # (op, audio, at, queued-at)
_CALLER, _AGENT, _TRUNCATE = 0, 1, 2

#: How often the shared writer drains every recording's queue. Waking per write would cost a thread switch
#: per 20 ms frame per call and make the loop fight the writer for the GIL; a short period batches instead.
WRITER_PERIOD_SECONDS = 0.2


class _Writer:
    """One thread for every recording in the process: drains their queues every ``WRITER_PERIOD_SECONDS``.

    One thread, not one per call, so a thousand calls cost one thread and the loop's writes never wake
    anything; it exists only while something is recording. A recording's own failure (disk full, bad path) stops that recording only.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._recordings: set[WavRecorder] = set()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, recording: WavRecorder) -> None:
        with self._lock:
            self._recordings.add(recording)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="recording-writer", daemon=True)
                self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(WRITER_PERIOD_SECONDS)
            self._wake.clear()
            with self._lock:
                recordings = list(self._recordings)
            for recording in recordings:
                if recording._drain():
                    with self._lock:
                        self._recordings.discard(recording)
            with self._lock:
                if not self._recordings:  # nothing recording: the thread ends (the next recording starts one)
                    self._thread = None
                    return


_writer = _Writer()


class WavRecorder:
    """A :class:`~voice_runtime.recording.Recorder` writing one WAV file, off the event loop.

    Writes only append to this recording's queue; the process's one recording writer thread applies them
    (see :class:`_Writer`). ``path=None`` writes no file, only ``on_frames`` (committed PCM, called on the
    writer thread): that is how the callback sink streams chunks. ``close()`` flushes, finalises the header
    and returns the path.
    """

    def __init__(
        self,
        path: str | Path | None,
        *,
        stereo: bool = True,
        sample_rate: int = SAMPLE_RATE,
        max_seconds: float = 4 * 3600,
        max_queue_seconds: float = 30.0,
        on_frames: Callable[[bytes], None] | None = None,
        hold_seconds: float = HOLD_SECONDS,
        close_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        name: str = "recorder",
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.name = name
        self.stereo = stereo
        self.sample_rate = sample_rate
        self.channels = 2 if stereo else 1
        self._clock = clock
        self.started_at = clock()  # sample 0 on the call's monotonic clock
        self.started_wall = time.time()
        self._close_timeout = close_timeout
        self._max_queued = int(max_queue_seconds * SAMPLE_RATE)
        self._queued = 0
        self._ops: deque[_Op] = deque()
        self._lock = threading.Lock()
        self._closing = False
        self._finished = threading.Event()
        self.dropped_writes = 0
        self.error: BaseException | None = None
        self._now = self.started_at
        self._rec_args: dict[str, Any] = dict(
            stereo=stereo, sample_rate=sample_rate, max_seconds=max_seconds, on_frames=on_frames, hold_seconds=hold_seconds
        )
        self._rec: CallRecorder | None = None
        self._opened = False
        _writer.add(self)

    # ------------------------------------------------------------------ loop side (never blocks, never wakes)
    def write_caller(self, ulaw: bytes, at: float | None = None) -> None:
        self._put(_CALLER, ulaw, at)

    def write_agent(self, ulaw: bytes, at: float | None = None) -> None:
        self._put(_AGENT, ulaw, at)

    def truncate_agent(self, at: float) -> None:
        self._put(_TRUNCATE, b"", at)

    def _put(self, op: int, ulaw: bytes, at: float | None) -> None:
        now = self._clock()
        with self._lock:
            if self._closing:
                return
            if self._queued + len(ulaw) > self._max_queued:
                self.dropped_writes += 1
                if self.dropped_writes == 1:
                    log.warning("recording %s is falling behind; dropping audio (counted)", self.path or self.name)
                return
            self._queued += len(ulaw)
            self._ops.append((op, bytes(ulaw), at, now))

    # ------------------------------------------------------------------ writer thread
    def _drain(self) -> bool:
        """Apply what is queued; finalise when closing. Returns True once this recording is finished."""
        if self._finished.is_set():
            return True
        try:
            if not self._opened:
                self._opened = True
                # The file is created here, not on the loop; the recorder's clock replays each write's queue time.
                self._rec = CallRecorder(self.path, clock=lambda: self._now, **self._rec_args)
            with self._lock:
                batch = list(self._ops)
                self._ops.clear()
                self._queued = 0
                closing = self._closing
            self._apply(batch)
            if not closing:
                return False
            if self._rec is not None:
                self._now = self._clock()
                self._rec.close()
        except Exception as exc:
            self.error = exc
            log.exception("recording %s failed; the call continues unrecorded", self.path or self.name)
            with self._lock:
                self._closing = True
                self._ops.clear()
            if self._rec is not None:
                try:
                    self._rec.close()
                except Exception:
                    pass
        self._finished.set()
        return True

    def _apply(self, batch: list[_Op]) -> None:
        rec = self._rec
        if rec is None:
            return
        for op, ulaw, at, queued_at in batch:
            self._now = queued_at
            if op == _CALLER:
                rec.write_caller(ulaw, at)
            elif op == _AGENT:
                rec.write_agent(ulaw, at)
            else:
                rec.truncate_agent(at)

    # ------------------------------------------------------------------ closing (off the loop)
    def close(self) -> Path | None:
        """Flush and finalise; returns the file (``None`` without one, or if it failed). Idempotent."""
        with self._lock:
            self._closing = True
        _writer.wake()
        if not self._finished.wait(self._close_timeout):
            log.error("recording %s did not finish within %.0f s", self.path or self.name, self._close_timeout)
            return None
        if self.error is not None:
            return None
        return self.path

    @property
    def seconds(self) -> float:
        """Seconds written to the file so far (all of it once closed)."""
        rec = self._rec
        return 0.0 if rec is None else rec.frames_written / self.sample_rate

    @property
    def recorder(self) -> CallRecorder | None:
        return self._rec
