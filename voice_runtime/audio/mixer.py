"""Mixing two μ-law streams, and the prior-art ``AudioMixer`` façade.

``mix_frames`` uses a 256×256 lookup table: the μ-law mix of any two codes
is precomputed once (decode both, add, clip to int16, re-encode), so mixing a
frame is one gather instead of two decodes, an add, a clip and an encode.
The result is bit-identical to doing those steps explicitly.

``AudioMixer`` keeps the prior art's name and methods so existing call
flows keep working, but it no longer spawns ``ffplay`` or runs a mixing
thread; it only records, delegating to :class:`~.recorder.CallRecorder`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from .frames import SILENCE_BYTE
from .g711 import ULAW_DECODE_TABLE, pcm16_to_ulaw
from .recorder import CallRecorder

__all__ = ["MIX_TABLE", "mix_frames", "AudioMixer"]


def _build_mix_table() -> np.ndarray:
    lin = ULAW_DECODE_TABLE.astype(np.int32)
    summed = np.clip(lin[:, None] + lin[None, :], -32768, 32767).astype(np.int16)
    table = np.frombuffer(pcm16_to_ulaw(summed.reshape(-1)), dtype=np.uint8).copy()
    table.flags.writeable = False
    return table


#: μ-law code of ``decode(a) + decode(b)`` (clipped), indexed by ``a << 8 | b``.
MIX_TABLE: np.ndarray = _build_mix_table()


def mix_frames(caller: bytes, agent: bytes) -> bytes:
    """Mix two μ-law chunks into one (sum with int16 clipping, re-encoded).

    The shorter input is padded with μ-law silence, so the result is as long
    as the longer input. (The prior art indexed past the end of short input
    and crashed, and silently truncated long input to one frame.)
    """
    n_c, n_a = len(caller), len(agent)
    if n_c != n_a:
        pad = bytes([SILENCE_BYTE]) * abs(n_c - n_a)
        if n_c < n_a:
            caller = bytes(caller) + pad
        else:
            agent = bytes(agent) + pad
    a = np.frombuffer(caller, dtype=np.uint8).astype(np.uint16)
    a <<= 8
    a |= np.frombuffer(agent, dtype=np.uint8)
    return MIX_TABLE.take(a).tobytes()


class AudioMixer:
    """Records a call's two sides and/or plays them live; prior-art API.

    ``AudioMixer(record_path)`` records (a stereo 16-bit WAV via :class:`CallRecorder`; 0.1.x wrote mono
    μ-law). ``AudioMixer()`` — the 0.1.x "monitor only" form — plays the mixed call through ``ffplay`` with
    a :class:`~voice_runtime.audio.monitor.LiveMonitor` once started (``monitor=True`` adds that to a
    recording too). Without ``ffplay`` on PATH the monitor logs one warning and stays silent instead of
    failing the call. The recorder is created by :meth:`start`, or implicitly by the first write so no
    audio is lost if ``start`` is forgotten. Writes after :meth:`shutdown` are ignored.
    """

    def __init__(
        self,
        record_path: str | Path | None = None,
        *,
        stereo: bool = True,
        clock: Callable[[], float] = time.monotonic,
        monitor: bool | None = None,
    ) -> None:
        self.record_path = Path(record_path) if record_path is not None else None
        self.monitor = record_path is None if monitor is None else monitor
        self._monitor: Any = None
        self.stereo = stereo
        self._clock = clock
        self._lock = threading.Lock()
        self._recorder: CallRecorder | None = None
        self._shut = False

    @property
    def recorder(self) -> CallRecorder | None:
        """The underlying recorder once started (``None`` without a record path)."""
        return self._recorder

    @property
    def running(self) -> bool:
        return self._recorder is not None and not self._shut

    def start(self) -> None:
        """Open the recording and start the live monitor (as configured). Idempotent; no-op after shutdown."""
        with self._lock:
            if self._shut:
                return
            if self.monitor and self._monitor is None:
                self._monitor = self._start_monitor()
            if self._recorder is not None or self.record_path is None:
                return
            self._recorder = CallRecorder(self.record_path, stereo=self.stereo, clock=self._clock)

    @staticmethod
    def _start_monitor() -> Any:
        from voice_runtime.audio.monitor import LiveMonitor
        from voice_runtime.errors import ConfigError

        try:
            return LiveMonitor().start()
        except (ConfigError, OSError) as exc:
            logging.getLogger(__name__).warning("AudioMixer: live monitor unavailable (%s)", exc)
            return False  # tried: do not try again per write

    def _active(self) -> CallRecorder | None:
        rec = self._recorder
        if rec is None and not self._shut and self.record_path is not None:
            self.start()
            rec = self._recorder
        return rec

    def write_caller(self, chunk: bytes, at: float | None = None) -> None:
        """Record caller μ-law audio (``at``: clock time it started playing)."""
        rec = self._active()
        if rec is not None:
            rec.write_caller(chunk, at)
        if self._monitor:
            self._monitor.write_caller(chunk, at)

    def write_agent(self, chunk: bytes, at: float | None = None) -> None:
        """Record agent μ-law audio at its scheduled play time ``at``."""
        rec = self._active()
        if rec is not None:
            rec.write_agent(chunk, at)
        if self._monitor:
            self._monitor.write_agent(chunk, at)

    def truncate_agent(self, at: float) -> None:
        """Erase agent audio scheduled at/after ``at`` (after a barge-in ``clear``)."""
        rec = self._recorder
        if rec is not None:
            rec.truncate_agent(at)
        if self._monitor:
            self._monitor.truncate_agent(at)

    def shutdown(self) -> None:
        """Finalize the WAV file and stop the monitor. Idempotent."""
        with self._lock:
            self._shut = True
            rec = self._recorder
            monitor, self._monitor = self._monitor, None
        if rec is not None:
            rec.close()
        if monitor:
            monitor.close()

    def __enter__(self) -> AudioMixer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()
