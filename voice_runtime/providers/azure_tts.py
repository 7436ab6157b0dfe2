"""Azure Speech streaming TTS, μ-law 8 kHz straight from the service (factory name ``"azure"``).

What this does differently from the prior art, and why:

* **One long-lived synthesizer per instance**, reused across utterances (each synthesizer holds its own
  WebSocket; a new one per utterance pays the connection setup every turn). Utterances on one instance are
  serialized with a lock, and each utterance waits for its own terminal event before the next may start, so
  late events of one utterance can never leak into the next. Give each call its own instance (the server's
  ``tts_factory`` does) so calls do not queue behind each other.
* **Streaming**: ``synthesizing`` events (on the SDK's thread) push each audio chunk through a bounded
  thread-safe queue to the flow thread running :meth:`AzureTts.synthesize`, which yields it at once, so the
  first audio is queued for the caller long before synthesis completes.
* **Real barge-in**: when ``stop_event`` is set (checked at least every 20 ms, one telephony frame) or the
  consumer abandons the generator, ``stop_speaking_async()`` is called (bounded) so the service really stops
  synthesizing; the SDK then closes the connection, and with ``pre_connect`` a new one is opened at once.
* **Failures are checked**: the SDK reports auth/network/quota failures as a *result* with
  ``reason == Canceled`` (not as an exception). Both the ``synthesis_canceled`` event and the final
  ``result.reason`` are checked, and a failure raises :class:`~voice_runtime.errors.ProviderError`
  (``retryable`` False for auth/forbidden/quota/bad request), which ``VoiceSession.speak`` reports once
  through ``on_error`` and in the result.
* ``SpeechSynthesisOutputFormat.Raw8Khz8BitMonoMULaw`` (headerless, exactly the carriers' format) and
  ``audio_config=None`` (the SDK's default would open the local speaker).

``warm_up()`` builds the synthesizer and pre-connects it (``Connection.from_speech_synthesizer(s).open(True)``)
to take the TLS/WebSocket setup off the first utterance.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from voice_runtime.compat.names import deprecated_module_names, prior_art_class
from voice_runtime.errors import ProviderError
from voice_runtime.providers.azure_sdk import (
    PROVIDER,
    AzureSpeechSdk,
    AzureSpeechSettings,
    BlockingCallTimeout,
    CancelInfo,
    SpeechSdk,
    SynthesizerOptions,
    call_with_timeout,
    cancel_info,
)
from voice_runtime.providers.base import StreamingTtsBase

__all__ = ["AzureTts", "DEFAULT_VOICE"]

log = logging.getLogger(__name__)

DEFAULT_VOICE = "en-US-JennyNeural"
_POLL_S = 0.02  # one telephony frame: the longest a set stop_event can go unnoticed
_SYNTH_SIGNALS = ("synthesizing", "synthesis_completed", "synthesis_canceled")


class _Utterance:
    """The hand-off between the SDK's callback thread and the flow thread for one synthesis."""

    def __init__(self, max_chunks: int) -> None:
        self.chunks: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=max_chunks)
        self.terminal = threading.Event()
        self.outcome: CancelInfo | None = None  # set when canceled
        self.dropped = 0


class AzureTts(StreamingTtsBase):
    """Azure neural TTS streamed as μ-law 8 kHz (factory name ``"azure"``; prior-art alias ``AzureTTS``).

    Options: ``subscription_key`` / ``region`` / ``endpoint`` / ``host`` as for
    :class:`~voice_runtime.providers.azure_stt.AzureStt` (env ``AZURE_SPEECH_*``, read at construction);
    ``voice_name`` (env ``AZURE_TTS_VOICE``, default ``en-US-JennyNeural``); ``pre_connect`` (False: when True,
    keep a connection open, re-opening it after each barge-in); ``properties`` (extra SDK properties by name);
    deadlines ``first_chunk_timeout`` (10 s from the request to the first event), ``idle_timeout`` (10 s
    between events), ``stop_timeout`` (2 s for ``stop_speaking`` and the terminal event), ``lock_timeout``
    (30 s waiting for this instance's previous utterance); ``max_queued_chunks`` (4096 chunks ≈ 400 s at the
    SDK's 100 ms chunks) bounds audio produced but not yet consumed; ``sdk`` is the test seam.
    """

    name = PROVIDER

    def __init__(
        self,
        subscription_key: str | None = None,
        region: str | None = None,
        voice_name: str | None = None,
        *,
        endpoint: str | None = None,
        host: str | None = None,
        pre_connect: bool = False,
        properties: Mapping[str, str] | None = None,
        first_chunk_timeout: float = 10.0,
        idle_timeout: float = 10.0,
        stop_timeout: float = 2.0,
        lock_timeout: float = 30.0,
        max_queued_chunks: int = 4096,
        chunk_put_timeout: float = 5.0,
        sdk: SpeechSdk | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        if sdk is None:
            self.settings: AzureSpeechSettings | None = AzureSpeechSettings.from_env(
                subscription_key, region, endpoint=endpoint, host=host
            )
            sdk = AzureSpeechSdk(self.settings)
        else:
            self.settings = getattr(sdk, "settings", None)
        self.sdk = sdk
        self.options = SynthesizerOptions(
            voice=voice_name or os.environ.get("AZURE_TTS_VOICE") or DEFAULT_VOICE,
            properties=dict(properties or {}),
        )
        self.pre_connect = pre_connect
        self.first_chunk_timeout = first_chunk_timeout
        self.idle_timeout = idle_timeout
        self.stop_timeout = stop_timeout
        self.lock_timeout = lock_timeout
        self.max_queued_chunks = max(1, max_queued_chunks)
        self.chunk_put_timeout = chunk_put_timeout
        self.on_error = on_error
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()  # one utterance at a time per instance
        self._state_lock = threading.Lock()  # guards the synthesizer fields below
        self._synth: Any = None
        self._synth_gen = 0
        self._connection: Any = None
        self._current: _Utterance | None = None
        self._closed = False
        self.last_stop_seconds: float | None = None  # stop_speaking → terminal event, last barge-in

    def check_credentials(self) -> None:
        """Fail fast: raise :class:`ConfigError` now if no key/endpoint is configured (e.g. at server start-up)."""
        if self.settings is not None:
            self.settings.require()

    def __repr__(self) -> str:
        where = self.settings.describe() if self.settings is not None else type(self.sdk).__name__
        return f"AzureTts({where}, voice={self.options.voice!r})"

    # ============================================================================ synthesizer lifecycle
    def warm_up(self) -> None:
        """Build the synthesizer and open its connection now (blocking, but brief; not on the event loop).

        Failures are logged, not raised: the first utterance will connect on its own and report properly.
        """
        try:
            synth = self._ensure_synthesizer()
            self._open_connection(synth)
        except ProviderError as exc:
            log.warning("Azure TTS warm-up failed: %s", exc)

    def _open_connection(self, synth: Any) -> None:
        try:
            connection = self.sdk.open_connection(synth)
        except Exception as exc:  # noqa: BLE001 - pre-connect is an optimisation only
            self.stats["preconnect_errors"] += 1
            log.warning("Azure TTS pre-connect failed: %s: %s", type(exc).__name__, exc)
            return
        with self._state_lock:
            self._connection = connection
        self.stats["preconnects"] += 1

    def _ensure_synthesizer(self) -> Any:
        with self._state_lock:
            if self._closed:
                raise ProviderError("this AzureTts was closed", provider=PROVIDER, retryable=False)
            if self._synth is not None:
                return self._synth
            try:
                synth = self.sdk.create_synthesizer(self.options)
            except ProviderError:
                raise
            except Exception as exc:  # noqa: BLE001 - the SDK refused our configuration
                raise ProviderError(f"cannot create the synthesizer: {exc}", provider=PROVIDER, retryable=False) from exc
            self._synth_gen += 1
            gen = self._synth_gen
            synth.synthesizing.connect(self._callback("audio", gen, lambda e: e.result.audio_data))
            synth.synthesis_completed.connect(self._callback("done", gen, lambda e: None))
            synth.synthesis_canceled.connect(
                self._callback("canceled", gen, lambda e: cancel_info(e.result.cancellation_details))
            )
            self._synth = synth
            self.stats["synthesizers_created"] += 1
            return synth

    def _discard_synthesizer(self) -> None:
        """Drop the synthesizer (its stale events are ignored by generation); release it off this thread."""
        with self._state_lock:
            synth, self._synth = self._synth, None
            connection, self._connection = self._connection, None
            self._synth_gen += 1
        if synth is not None or connection is not None:
            threading.Thread(target=_release, args=(synth, connection), name="azure-tts-release", daemon=True).start()

    def close(self) -> None:
        """Release the synthesizer and its connection (on a daemon thread). Further use raises."""
        with self._state_lock:
            self._closed = True
        self._discard_synthesizer()

    # ============================================================================ SDK callbacks (SDK thread)
    def _callback(self, kind: str, gen: int, extract: Callable[[Any], Any]) -> Callable[[Any], None]:
        def callback(evt: Any) -> None:
            try:
                if gen != self._synth_gen:
                    self.stats["stale_events"] += 1
                    return
                utt = self._current
                if utt is None:
                    self.stats["events_without_utterance"] += 1
                    return
                value = extract(evt)
                if kind == "audio":
                    if value:
                        try:
                            utt.chunks.put((kind, bytes(value)), timeout=self.chunk_put_timeout)
                        except queue.Full:
                            utt.dropped += 1
                            self.stats["chunks_dropped_queue_full"] += 1
                    return
                if kind == "canceled":
                    utt.outcome = value
                utt.terminal.set()
                try:
                    utt.chunks.put_nowait((kind, value))
                except queue.Full:  # the terminal flag is enough; the reader checks it
                    pass
            except Exception:  # noqa: BLE001 - the SDK swallows callback exceptions silently
                self.stats["callback_errors"] += 1
                log.exception("Azure TTS %s callback failed", kind)

        return callback

    # ============================================================================ synthesis (flow thread)
    def synthesize(self, text: str, stop_event: threading.Event) -> Iterator[bytes]:
        """Yield μ-law 8 kHz chunks for ``text`` as the service produces them.

        Stops synthesis (``stop_speaking``) when ``stop_event`` is set or the generator is closed early.
        Raises :class:`ProviderError` on a canceled synthesis, a deadline, or an SDK failure.
        """
        if not text.strip():
            return
        if not self._lock.acquire(timeout=self.lock_timeout):
            raise ProviderError("the previous utterance on this AzureTts did not finish", provider=PROVIDER, retryable=True)
        try:
            if stop_event.is_set():
                return
            yield from self._synthesize_locked(text, stop_event)
        finally:
            self._lock.release()

    def _synthesize_locked(self, text: str, stop_event: threading.Event) -> Iterator[bytes]:
        synth = self._ensure_synthesizer()
        utt = _Utterance(self.max_queued_chunks)
        self._current = utt
        finished = False
        future: Any = None
        try:
            try:
                future = synth.speak_text_async(text)
            except Exception as exc:  # noqa: BLE001
                self._discard_synthesizer()
                raise ProviderError(f"speak_text_async failed: {exc}", provider=PROVIDER, retryable=True) from exc
            self.stats["utterances"] += 1
            deadline = time.monotonic() + self.first_chunk_timeout
            got_event = False
            while not stop_event.is_set():
                try:
                    kind, value = utt.chunks.get(timeout=_POLL_S)
                except queue.Empty:
                    if utt.terminal.is_set():  # its queue entry was lost to a full queue
                        finished = True
                        break
                    if time.monotonic() > deadline:
                        waited = "next" if got_event else "first"
                        raise ProviderError(f"no {waited} audio from Azure in time", provider=PROVIDER, retryable=True) from None
                    continue
                got_event = True
                deadline = time.monotonic() + self.idle_timeout
                if kind == "audio":
                    self.stats["chunks"] += 1
                    yield value
                    continue
                finished = True
                break
            if not finished:
                return  # stop_event: the finally stops synthesis
            self._finish(utt, future)
        finally:
            if not finished:
                self._stop_synthesis(synth, utt, future)
            self._current = None

    def _finish(self, utt: _Utterance, future: Any) -> None:
        """After the terminal event: collect the SDK result (releases its handle) and check its reason."""
        result = None
        try:
            result = call_with_timeout(future.get, timeout=self.stop_timeout, name="azure-tts-result")
        except BlockingCallTimeout:
            log.warning("Azure TTS: result not available after the terminal event")
        except Exception as exc:  # noqa: BLE001
            raise ProviderError(f"synthesis failed: {exc}", provider=PROVIDER, retryable=True) from exc
        info = utt.outcome
        if info is None and result is not None and _name(getattr(result, "reason", "")) == "Canceled":
            info = cancel_info(result.cancellation_details)
        if info is not None:
            self.stats["canceled_" + info.code] += 1
            raise ProviderError(info.message("synthesis"), provider=PROVIDER, retryable=not info.fatal)
        if utt.dropped:
            raise ProviderError(f"{utt.dropped} audio chunks dropped (consumer too slow)", provider=PROVIDER, retryable=True)
        self.stats["completed"] += 1

    def _stop_synthesis(self, synth: Any, utt: _Utterance, future: Any) -> None:
        """Really stop the service (barge-in / abandoned / failed), then wait for the terminal event."""
        if future is None:
            return
        self.stats["stops"] += 1
        started = time.monotonic()
        try:
            call_with_timeout(lambda: synth.stop_speaking_async().get(), timeout=self.stop_timeout, name="azure-tts-stop")
        except BlockingCallTimeout:
            log.warning("Azure TTS: stop_speaking did not return within %.1fs", self.stop_timeout)
        except Exception:  # noqa: BLE001
            log.warning("Azure TTS: stop_speaking failed", exc_info=True)
        remaining = max(0.0, self.stop_timeout - (time.monotonic() - started))
        if utt.terminal.wait(remaining):
            try:
                call_with_timeout(future.get, timeout=max(0.1, remaining), name="azure-tts-result")
            except Exception:  # noqa: BLE001 - the canceled result is expected here
                pass
            self.last_stop_seconds = time.monotonic() - started
        else:
            # Its late events must not reach the next utterance: retire this synthesizer.
            log.warning("Azure TTS: no terminal event after stop; replacing the synthesizer")
            self._discard_synthesizer()
        if self.pre_connect and self._synth is not None:
            self._open_connection(self._synth)  # stop_speaking closed the connection


def _name(value: Any) -> str:
    return str(getattr(value, "name", value))


def _release(synth: Any, connection: Any) -> None:
    """Daemon thread: disconnect and drop the last references (native destructors may block)."""
    if connection is not None:
        try:
            connection.close()
        except Exception:  # noqa: BLE001
            log.debug("closing the Azure TTS connection failed", exc_info=True)
    if synth is not None:
        for name in _SYNTH_SIGNALS:
            try:
                getattr(synth, name).disconnect_all()
            except Exception:  # noqa: BLE001
                log.debug("disconnect_all(%s) failed", name, exc_info=True)
    del synth, connection


_AzureTTS = prior_art_class(AzureTts, "AzureTTS")  # what the factory builds (see voice_runtime.compat.names)
__getattr__ = deprecated_module_names(__name__, {"AzureTTS": (_AzureTTS, "AzureTts")})
