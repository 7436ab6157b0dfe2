"""Azure Speech continuous STT over the call's μ-law 8 kHz stream (factory name ``"azure"``).

How the pieces fit, and why:

* **Audio in.** A feeder task on the loop moves frames from the session's queue into a bounded buffer
  (drop-oldest, counted). A dedicated *writer thread* moves them from that buffer into the SDK's
  ``PushAudioInputStream`` (declared μ-law 8 kHz **8-bit** mono). The loop never makes a native call, and a
  write that blocks or fails cannot stall it. A failed write puts its audio back at the head of the buffer and
  triggers the restart path instead of killing the feeder.
* **Events out.** SDK callbacks fire on native threads and the SDK swallows their exceptions. Each callback
  copies the plain data out of the event on that thread (the event's native handle dies when it returns) and
  hands it to the loop with ``call_soon_threadsafe`` (never once the loop is closed). On the loop, every user
  handler runs inside try/except with logging. ``recognizing`` → ``on_recognizing``, ``recognized`` →
  ``on_committed``, ``speech_start_detected`` (or the first ``recognizing`` of an utterance, whichever comes
  first) → ``on_speech_started`` (barge-in).
* **Cancellations.** ``canceled`` is classified by ``CancellationErrorCode``: auth / forbidden / quota /
  bad request are fatal → ``on_error`` exactly once, no restart. Anything else is transient → the recognizer is
  replaced with bounded exponential backoff (``max_restarts`` attempts; the counter resets once a recognizer
  proves healthy). While it is replaced the writer pauses, so caller audio accumulates in the bounded buffer
  and is replayed in order into the new stream.
* **Blocking SDK calls** (building objects, ``start/stop_continuous_recognition_async().get()``, closing the
  stream, native teardown) run on daemon threads with deadlines (:func:`~.azure_sdk.run_blocking`), never on
  the loop. ``stop`` is commonly ~10 s inside the SDK; :meth:`AzureStt.stop` closes the push stream first
  (which lets the service end the turn promptly), waits at most ``stop_timeout`` and otherwise abandons the
  teardown to its thread, which drops the last references so the native destructor also runs off the loop.

Echo: telephony inbound audio carries only the caller, so by default nothing is discarded while the agent
speaks (that is what barge-in needs). ``echo_discard=True`` restores the prior art's behaviour: text produced
while speaking and for ``echo_window_s`` afterwards is dropped (counted).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from voice_runtime.compat.names import deprecated_module_names, prior_art_class
from voice_runtime.errors import ConfigError, ProviderError
from voice_runtime.providers.backoff import backoff_delay
from voice_runtime.providers.base import reads_its_queue_itself
from voice_runtime.providers.azure_sdk import (
    PROVIDER,
    AzureSpeechSdk,
    AzureSpeechSettings,
    BlockingCallTimeout,
    CancelInfo,
    RecognizerOptions,
    SpeechSdk,
    cancel_info,
    run_blocking,
)

__all__ = ["AzureStt"]

log = logging.getLogger(__name__)

_SIGNALS = (
    "recognizing",
    "recognized",
    "canceled",
    "speech_start_detected",
    "speech_end_detected",
    "session_started",
    "session_stopped",
)


@dataclass
class _Epoch:
    """One recognizer and its push stream. Replaced wholesale on a transient failure."""

    id: int
    stream: Any
    recognizer: Any
    started_at: float = 0.0


class _AudioWriter:
    """The thread that writes buffered caller audio into the current push stream.

    The loop only appends to the buffer (``push``) and swaps the target (``attach`` / ``pause``). With no
    target the writer idles and audio accumulates (bounded, oldest dropped and counted); ``attach`` replays
    it in order. ``on_failure(epoch_id, exc)`` is called on this thread after a failed write.
    """

    def __init__(self, max_bytes: int, on_failure: Callable[[int, BaseException], None], stats: Counter[str]) -> None:
        self.max_bytes = max(160, max_bytes)
        self._on_failure = on_failure
        self._stats = stats
        self._cond = threading.Condition()
        self._buf: deque[bytes] = deque()
        self._bytes = 0
        self._stream: Any = None
        self._epoch = 0
        self._writing: Any = None  # the stream a write is in progress on
        self._eof = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="azure-stt-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def buffered_bytes(self) -> int:
        return self._bytes

    def push(self, frame: bytes) -> None:
        with self._cond:
            self._buf.append(frame)
            self._bytes += len(frame)
            while self._bytes > self.max_bytes and len(self._buf) > 1:
                dropped = self._buf.popleft()
                self._bytes -= len(dropped)
                self._stats["audio_dropped_bytes"] += len(dropped)
            self._cond.notify_all()

    def end_input(self) -> None:
        """The call's audio ended: drain, then close the current stream (the SDK flushes its finals)."""
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def attach(self, stream: Any, epoch: int) -> None:
        with self._cond:
            self._stream, self._epoch = stream, epoch
            self._cond.notify_all()

    def pause(self) -> None:
        with self._cond:
            self._stream = None
            self._cond.notify_all()

    def discard(self) -> None:
        with self._cond:
            self._stats["audio_dropped_bytes"] += self._bytes
            self._buf.clear()
            self._bytes = 0

    def wait_not_writing(self, stream: Any, timeout: float) -> bool:
        """Blocking (teardown thread): wait until no write to ``stream`` is in progress."""
        deadline = time.monotonic() + timeout
        with self._cond:
            if self._stream is stream:
                self._stream = None
            while self._writing is stream and stream is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._stream = None
            self._cond.notify_all()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (self._stream is None or not (self._buf or self._eof)):
                    self._cond.wait()
                if self._closed:
                    return
                stream, epoch = self._stream, self._epoch
                if not self._buf:  # end of input and everything written: close this stream once
                    self._stream = None
                    self._writing = stream
                    data = None
                else:
                    parts: list[bytes] = []
                    size = 0
                    while self._buf and size < 3200:  # coalesce a backlog into 200 ms writes
                        part = self._buf.popleft()
                        parts.append(part)
                        size += len(part)
                    self._bytes -= size
                    data = parts[0] if len(parts) == 1 else b"".join(parts)
                    self._writing = stream
            try:
                if data is None:
                    stream.close()
                    self._stats["stream_closed_at_end"] += 1
                else:
                    stream.write(data)
                    self._stats["bytes_written"] += len(data)
            except Exception as exc:  # noqa: BLE001 - reported, and the audio is kept for the next stream
                with self._cond:
                    if data is not None:
                        self._buf.appendleft(data)
                        self._bytes += len(data)
                    if self._stream is stream:
                        self._stream = None
                    self._writing = None
                    self._cond.notify_all()
                self._stats["write_errors"] += 1
                try:
                    self._on_failure(epoch, exc)
                except Exception:  # pragma: no cover - defensive: never let the writer thread die
                    log.exception("Azure STT write-failure handler failed")
                continue
            with self._cond:
                self._writing = None
                self._cond.notify_all()


class AzureStt:
    """Continuous Azure Speech recognition for one call (factory name ``"azure"``).

    Options (all keyword except the prior-art positional ones):

    * ``subscription_key`` / ``region`` (env ``AZURE_SPEECH_KEY`` / ``AZURE_SPEECH_REGION``, default region
      ``westeurope``), ``endpoint`` / ``host`` (env ``AZURE_SPEECH_ENDPOINT`` / ``AZURE_SPEECH_HOST``; a
      container or a test endpoint instead of a region). Read at construction.
    * ``language_code`` (env ``AZURE_SPEECH_LANGUAGE``, default ``en-US``), ``silence_timeout_ms``
      (``Speech_SegmentationSilenceTimeoutMs``, 100-5000; the end-of-utterance silence), optional
      ``initial_silence_timeout_ms`` and ``properties`` (extra SDK properties by name).
    * Resilience: ``max_restarts`` (5), ``backoff_base_s`` (0.5), ``backoff_max_s`` (8), ``backoff_jitter``
      (0.2 = up to 20 % shorter), ``stable_after_s`` (30: a recognizer that lived this long resets the attempt
      counter), ``max_buffer_seconds`` (10: caller audio held while a recognizer is replaced).
    * Deadlines: ``start_timeout`` (10 s for building and starting a recognizer), ``stop_timeout`` (4 s, below
      the server's 5 s STT stop budget).
    * Echo: ``echo_discard`` (False), ``echo_window_s`` (0.4).
    * ``sdk``: the :class:`~voice_runtime.providers.azure_sdk.SpeechSdk` seam (tests pass a fake).

    Callbacks ``on_committed(text)``, ``on_recognizing(text)``, ``on_error(message)``, ``on_speech_started()``
    run on the event loop; exceptions are logged and counted (``stats["handler_errors"]``).
    """

    name = PROVIDER

    def __init__(
        self,
        subscription_key: str | None = None,
        region: str | None = None,
        language_code: str | None = None,
        silence_timeout_ms: int | None = 1500,
        *,
        endpoint: str | None = None,
        host: str | None = None,
        initial_silence_timeout_ms: int | None = None,
        properties: Mapping[str, str] | None = None,
        max_restarts: int = 5,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 8.0,
        backoff_jitter: float = 0.2,
        stable_after_s: float = 30.0,
        max_buffer_seconds: float = 10.0,
        start_timeout: float = 10.0,
        stop_timeout: float = 4.0,
        echo_discard: bool = False,
        echo_window_s: float = 0.4,
        sdk: SpeechSdk | None = None,
        on_committed: Callable[[str], None] | None = None,
        on_recognizing: Callable[[str], None] | None = None,
        on_error: Callable[[str], None] | None = None,
        on_speech_started: Callable[[], None] | None = None,
    ) -> None:
        if silence_timeout_ms is not None and not 100 <= int(silence_timeout_ms) <= 5000:
            raise ConfigError(f"silence_timeout_ms must be within 100-5000 (Azure's range), got {silence_timeout_ms}")
        if max_restarts < 0 or backoff_base_s < 0 or backoff_max_s < 0 or not 0 <= backoff_jitter < 1:
            raise ConfigError("invalid restart/backoff settings")
        if sdk is None:
            self.settings: AzureSpeechSettings | None = AzureSpeechSettings.from_env(
                subscription_key, region, endpoint=endpoint, host=host
            )
            sdk = AzureSpeechSdk(self.settings)
        else:
            self.settings = getattr(sdk, "settings", None)
        self.sdk = sdk
        self.options = RecognizerOptions(
            language=language_code or os.environ.get("AZURE_SPEECH_LANGUAGE") or "en-US",
            segmentation_silence_timeout_ms=silence_timeout_ms,
            initial_silence_timeout_ms=initial_silence_timeout_ms,
            properties=dict(properties or {}),
        )
        self.max_restarts = max_restarts
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.backoff_jitter = backoff_jitter
        self.stable_after_s = stable_after_s
        self.max_buffer_bytes = int(max_buffer_seconds * 8000)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.echo_discard = echo_discard
        self.echo_window_s = echo_window_s
        self.on_committed = on_committed
        self.on_recognizing = on_recognizing
        self.on_error = on_error
        self.on_speech_started = on_speech_started
        #: Azure's ``speech_end_detected``, with the estimated ``time.monotonic()`` the caller stopped
        #: (now minus ``end_silence_s``, the segmentation silence Azure waits for).
        self.on_speech_ended: Callable[[float | None], None] | None = None
        self.end_silence_s = 0.5
        self.speaking = False
        self.stats: Counter[str] = Counter()
        self.restart_delays: list[float] = []  # every backoff actually waited, in order (observability)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: _AudioWriter | None = None
        self._feeder: asyncio.Task[None] | None = None
        #: The inline path for caller audio (``VoiceSession.feed_stt_inline``), offered once started.
        self.feed_audio: Callable[[bytes], None] | None = None
        self._restart_task: asyncio.Task[None] | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self._teardowns: set[asyncio.Task[None]] = set()
        self._epoch: _Epoch | None = None
        self._epoch_ids = 0
        self._current_id = 0  # the epoch being started or running; cancels of any other are stale
        self._healthy = False  # the current epoch produced results: its connection works
        self._opening = False
        self._open_cancel: CancelInfo | None = None
        self._attempt = 0
        self._stopping = False
        self._closed = False
        self._failed = False
        self._eof = False
        self._in_speech = False
        self._discard_until = 0.0

    def check_credentials(self) -> None:
        """Fail fast: raise :class:`ConfigError` now if no key/endpoint is configured (e.g. at server start-up)."""
        if self.settings is not None:
            self.settings.require()

    def __repr__(self) -> str:
        where = self.settings.describe() if self.settings is not None else type(self.sdk).__name__
        return f"AzureStt({where}, language={self.options.language!r})"

    # ============================================================================ protocol
    def set_speaking(self, speaking: bool) -> None:
        """Record whether the agent is talking (only used when ``echo_discard`` is on). Any thread."""
        was, self.speaking = self.speaking, bool(speaking)
        if was and not self.speaking:
            self._discard_until = time.monotonic() + self.echo_window_s

    async def start(self, inbound_queue: asyncio.Queue[bytes | None]) -> None:
        """Start recognizing ``inbound_queue``. Returns once the first recognizer is running.

        A configuration failure (bad options, SDK missing) raises a non-retryable :class:`ProviderError`. A
        transient failure to start (timeout, connection) is retried in the background like any other.
        """
        if self._feeder is not None and not self._feeder.done():
            return
        self._loop = asyncio.get_running_loop()
        self._stopping = self._closed = self._failed = self._eof = False
        self._stop_task = None
        self._attempt = 0
        self._writer = _AudioWriter(self.max_buffer_bytes, self._on_write_failed, self.stats)
        self._writer.start()
        self._feeder = asyncio.create_task(self._feed(inbound_queue), name="azure-stt-feed")
        if not reads_its_queue_itself(self, AzureStt, "_feed"):
            self.feed_audio = self._feed_inline
        try:
            await self._open_epoch()
        except ProviderError as exc:
            if not exc.retryable:
                await self.stop()
                raise
            log.warning("Azure STT: first recognizer did not start (%s); retrying", exc)
            self._begin_restart(str(exc))

    async def stop(self) -> None:
        """Stop recognition and release everything. Idempotent; never blocks the loop.

        Cancels and awaits the feeder and any restart; closes the push stream and stops the recognizer on a
        daemon thread, waiting at most ``stop_timeout`` (past that the teardown finishes on its own). No
        callback fires after this returns.
        """
        if self._stop_task is None:
            self._stop_task = asyncio.ensure_future(self._stop())
        await asyncio.shield(self._stop_task)

    async def _stop(self) -> None:
        self._stopping = True
        tasks = [t for t in (self._feeder, self._restart_task) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        writer = self._writer
        if writer is not None:
            writer.close()
        epoch, self._epoch = self._epoch, None
        if epoch is not None:
            self._teardown_later(epoch)
        if self._teardowns:
            await asyncio.gather(*list(self._teardowns), return_exceptions=True)
        if writer is not None:
            try:
                await run_blocking(writer.join, 1.0, timeout=2.0, name="azure-stt-writer-join")
            except BlockingCallTimeout:
                log.warning("Azure STT writer thread did not exit in time")
        self._closed = True

    # ============================================================================ recognizers
    async def _open_epoch(self) -> None:
        """Build, wire and start a recognizer; then point the writer at its stream (replaying the backlog)."""
        self._epoch_ids += 1
        epoch_id = self._current_id = self._epoch_ids
        self._healthy = False
        self._opening, self._open_cancel = True, None
        try:
            try:
                stream, recognizer = await run_blocking(
                    self._build, timeout=self.start_timeout, name="azure-stt-create"
                )
            except BlockingCallTimeout as exc:
                raise ProviderError(f"creating the recognizer timed out: {exc}", provider=PROVIDER, retryable=True) from exc
            except ProviderError:
                raise
            except Exception as exc:  # noqa: BLE001 - the SDK refused our configuration
                raise ProviderError(f"cannot create the recognizer: {exc}", provider=PROVIDER, retryable=False) from exc
            epoch = _Epoch(epoch_id, stream, recognizer)
            try:
                self._connect(epoch)
                await run_blocking(self._start_recognition, recognizer, timeout=self.start_timeout, name="azure-stt-start")
            except Exception as exc:  # noqa: BLE001 - includes BlockingCallTimeout
                self._teardown_later(epoch)
                raise ProviderError(f"starting recognition failed: {exc}", provider=PROVIDER, retryable=True) from exc
            cancel = self._open_cancel
            if cancel is not None:  # canceled while we waited for the start to return
                self._teardown_later(epoch)
                raise ProviderError(cancel.message("recognition"), provider=PROVIDER, retryable=not cancel.fatal)
            if self._stopping:
                self._teardown_later(epoch)
                return
            epoch.started_at = time.monotonic()
            self._epoch = epoch
            self.stats["recognizers_started"] += 1
            assert self._writer is not None
            self._writer.attach(epoch.stream, epoch.id)
            log.debug("Azure STT recognizer %d started (%s)", epoch.id, self)
        finally:
            self._opening = False

    def _build(self) -> tuple[Any, Any]:
        stream = self.sdk.create_push_stream()
        return stream, self.sdk.create_recognizer(stream, self.options)

    @staticmethod
    def _start_recognition(recognizer: Any) -> None:
        recognizer.start_continuous_recognition_async().get()

    def _connect(self, epoch: _Epoch) -> None:
        reco, eid = epoch.recognizer, epoch.id
        reco.recognizing.connect(self._sdk_callback("recognizing", eid, lambda e: e.result.text))
        reco.recognized.connect(
            self._sdk_callback("recognized", eid, lambda e: (_name(e.result.reason), e.result.text))
        )
        reco.canceled.connect(self._sdk_callback("canceled", eid, lambda e: cancel_info(e.cancellation_details)))
        reco.speech_start_detected.connect(self._sdk_callback("speech_start", eid, lambda e: None))
        reco.speech_end_detected.connect(self._sdk_callback("speech_end", eid, lambda e: None))
        reco.session_started.connect(self._sdk_callback("session_started", eid, lambda e: None))
        reco.session_stopped.connect(self._sdk_callback("session_stopped", eid, lambda e: None))

    def _teardown_later(self, epoch: _Epoch) -> None:
        """Stop and release ``epoch`` on a daemon thread; ``stop()`` awaits it (bounded)."""
        task = asyncio.ensure_future(self._teardown(epoch))
        self._teardowns.add(task)
        task.add_done_callback(self._teardowns.discard)

    async def _teardown(self, epoch: _Epoch) -> None:
        try:
            await run_blocking(self._teardown_sync, epoch, timeout=self.stop_timeout, name=f"azure-stt-teardown-{epoch.id}")
            self.stats["recognizers_stopped"] += 1
        except BlockingCallTimeout:
            self.stats["teardown_timeouts"] += 1
            log.warning("Azure STT: recognizer %d did not stop within %.1fs; leaving it to finish on its thread",
                        epoch.id, self.stop_timeout)
        except Exception:
            log.exception("Azure STT: tearing down recognizer %d failed", epoch.id)

    def _teardown_sync(self, epoch: _Epoch) -> None:
        """Daemon thread: close the stream (lets the service end the turn), stop, disconnect, drop refs."""
        stream, reco = epoch.stream, epoch.recognizer
        epoch.stream = epoch.recognizer = None
        writer = self._writer
        if writer is not None and not writer.wait_not_writing(stream, timeout=1.0):
            log.warning("Azure STT: a push-stream write did not finish before teardown")
        try:
            if stream is not None:
                stream.close()
        except Exception:  # noqa: BLE001 - already closed / broken: nothing to release
            log.debug("closing the push stream failed", exc_info=True)
        if reco is not None:
            try:
                reco.stop_continuous_recognition_async().get()
            except Exception:  # noqa: BLE001
                log.debug("stop_continuous_recognition failed", exc_info=True)
            for name in _SIGNALS:
                try:
                    getattr(reco, name).disconnect_all()
                except Exception:  # noqa: BLE001
                    log.debug("disconnect_all(%s) failed", name, exc_info=True)
        del stream, reco  # last references: native destructors run here, not on the loop

    # ============================================================================ restarts
    def _begin_restart(self, reason: str) -> None:
        """Loop side: replace the recognizer (with backoff), keeping caller audio meanwhile."""
        if self._stopping or self._failed or self._eof:
            return
        if self._restart_task is not None and not self._restart_task.done():
            return
        epoch, self._epoch = self._epoch, None
        if self._writer is not None:
            self._writer.pause()
        if epoch is not None:
            if self._healthy or (epoch.started_at and time.monotonic() - epoch.started_at >= self.stable_after_s):
                self._attempt = 0
            self._teardown_later(epoch)
        self._restart_task = asyncio.ensure_future(self._restart_loop(reason))

    async def _restart_loop(self, reason: str) -> None:
        while not self._stopping:
            if self._attempt >= self.max_restarts:
                self._fail(f"azure_stt_restart_exhausted after {self._attempt} attempts: {reason}")
                return
            delay = self._backoff(self._attempt)
            self._attempt += 1
            self.restart_delays.append(delay)
            log.warning("Azure STT: restarting recognition in %.2fs (attempt %d/%d): %s",
                        delay, self._attempt, self.max_restarts, reason)
            await asyncio.sleep(delay)
            if self._stopping:
                return
            try:
                await self._open_epoch()
            except ProviderError as exc:
                if not exc.retryable:
                    self._fail(f"azure_stt_fatal: {exc}")
                    return
                reason = str(exc)
                continue
            self.stats["restarts"] += 1
            return

    def _backoff(self, attempt: int) -> float:
        return backoff_delay(attempt, base=self.backoff_base_s, maximum=self.backoff_max_s, jitter=self.backoff_jitter, symmetric=False)

    def _fail(self, message: str) -> None:
        """Give up for good: report once, stop writing, release the recognizer."""
        if self._failed or self._stopping:
            return
        self._failed = True
        self.stats["fatal_errors"] += 1
        log.error("Azure STT gave up: %s", message)
        if self._writer is not None:
            self._writer.pause()
            self._writer.discard()
        epoch, self._epoch = self._epoch, None
        if epoch is not None:
            self._teardown_later(epoch)
        self._emit("on_error", message)

    def _on_write_failed(self, epoch_id: int, exc: BaseException) -> None:
        """Writer thread: a push-stream write failed. Restart (on the loop) unless that epoch is already gone."""
        log.warning("Azure STT: push-stream write failed (%s: %s)", type(exc).__name__, exc)
        self._post(self._write_failed_on_loop, epoch_id, f"push-stream write failed: {type(exc).__name__}: {exc}")

    def _write_failed_on_loop(self, epoch_id: int, reason: str) -> None:
        if self._epoch is not None and self._epoch.id == epoch_id:
            self._begin_restart(reason)

    # ============================================================================ audio
    async def _feed(self, queue: asyncio.Queue[bytes | None]) -> None:
        writer = self._writer
        assert writer is not None
        while True:
            frame = await queue.get()
            if frame is None:
                self._eof = True
                writer.end_input()
                return
            self._feed_inline(frame)

    def _feed_inline(self, ulaw: bytes) -> None:
        """One caller chunk, from the queue or inline on the loop (``feed_audio`` once started: the session calls
        it instead of queueing): handed to the push-stream writer, with no feeder-task step per frame."""
        writer = self._writer
        if not ulaw or writer is None or self._eof or self._stopping:
            return
        if self._failed:
            self.stats["frames_dropped_after_failure"] += 1
            return
        self.stats["frames_in"] += 1
        writer.push(bytes(ulaw))

    # ============================================================================ events
    def _sdk_callback(self, kind: str, epoch_id: int, extract: Callable[[Any], Any]) -> Callable[[Any], None]:
        """A callback for the SDK's thread: copy the payload out, then hop to the loop. Never raises."""

        def callback(evt: Any) -> None:
            try:
                payload = extract(evt)
            except Exception:  # noqa: BLE001 - the SDK would swallow it silently
                self.stats["event_read_errors"] += 1
                log.exception("Azure STT: could not read a %s event", kind)
                return
            self._post(self._on_event, kind, epoch_id, payload)

        return callback

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        """Any thread: run ``fn(*args)`` on the loop, guarded; dropped (counted) once the loop is closed."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self.stats["events_after_loop_closed"] += 1
            return
        try:
            loop.call_soon_threadsafe(self._guarded, fn, args)
        except RuntimeError:  # closed between the check and the call
            self.stats["events_after_loop_closed"] += 1

    @staticmethod
    def _guarded(fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("Azure STT event handling failed")

    def _emit(self, attr: str, *args: Any) -> None:
        """Loop side: call a user handler (read at call time: the session rebinds them), logging failures."""
        handler = getattr(self, attr, None)
        if handler is None:
            return
        try:
            handler(*args)
        except Exception:
            self.stats["handler_errors"] += 1
            log.exception("Azure STT %s handler failed", attr)

    def _on_event(self, kind: str, epoch_id: int, payload: Any) -> None:
        if self._closed:
            self.stats["events_after_stop"] += 1
            return
        if kind == "canceled":
            self._on_canceled(epoch_id, payload)
            return
        if kind in ("recognizing", "recognized", "speech_start") and epoch_id == self._current_id:
            self._healthy = True
        if self._failed:
            return
        if kind == "speech_start":
            self._speech_started()
        elif kind == "speech_end":
            self._in_speech = False
            # Azure reports the end once its segmentation silence has passed; its default is 500 ms.
            self._emit("on_speech_ended", time.monotonic() - self.end_silence_s)
        elif kind == "recognizing":
            text = str(payload or "")
            if not text:
                return
            self._speech_started()
            if self._echo_blocked():
                self.stats["partials_discarded_echo"] += 1
                return
            self._emit("on_recognizing", text)
        elif kind == "recognized":
            reason, text = payload
            self._in_speech = False
            text = str(text or "").strip()
            if reason != "RecognizedSpeech" or not text:
                self.stats["no_match"] += 1
                return
            if self._echo_blocked():
                self.stats["finals_discarded_echo"] += 1
                return
            self.stats["committed"] += 1
            self._emit("on_committed", text)
        elif kind in ("session_started", "session_stopped"):
            self.stats[kind] += 1
            log.debug("Azure STT recognizer %d: %s", epoch_id, kind)

    def _speech_started(self) -> None:
        if self._in_speech:
            return
        self._in_speech = True
        self._emit("on_speech_started")

    def _echo_blocked(self) -> bool:
        return self.echo_discard and (self.speaking or time.monotonic() < self._discard_until)

    def _on_canceled(self, epoch_id: int, info: CancelInfo) -> None:
        self.stats[f"canceled_{info.code if info.reason == 'Error' else info.reason}"] += 1
        if self._stopping or self._failed:
            return
        if epoch_id != self._current_id:
            self.stats["stale_cancels"] += 1
            return
        if info.reason == "CancelledByUser" or (info.reason == "EndOfStream" and self._eof):
            return
        if self._opening:
            self._open_cancel = info  # _open_epoch turns it into a failed attempt
            return
        if info.reason == "Error" and info.fatal:
            self._fail(f"azure_stt_{info.code}: {info.details}" if info.details else f"azure_stt_{info.code}")
            return
        self.stats["transient_cancels"] += 1
        self._begin_restart(info.message("recognition"))


def _name(value: Any) -> str:
    return str(getattr(value, "name", value))


_AzurePersistentStt = prior_art_class(AzureStt, "AzurePersistentStt")  # what the factory builds (see voice_runtime.compat.names)
__getattr__ = deprecated_module_names(__name__, {"AzurePersistentStt": (_AzurePersistentStt, "AzureStt")})
