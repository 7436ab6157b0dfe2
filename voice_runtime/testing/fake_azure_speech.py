"""Stand-ins for the Azure Speech SDK objects, plugged in through ``voice_runtime.providers.azure_sdk.SpeechSdk``.

Shipped in the package (``azure`` extra: it uses the SDK's real enum members) for the project's tests, the
first-token benchmark and users' own tests: ``AzureTts(sdk=FakeSpeechSdk(timing=SynthesisTiming(...)))``.

Why mocks here, and only here: the Azure Speech SDK is a proprietary native library whose service protocol
(USP) is internal and undocumented, and the real service needs an account. These fakes reproduce the parts
of the SDK's *behaviour* that the providers must cope with, as observed with SDK 1.53:

* events are delivered by calling connected callbacks **on a foreign thread** (a real ``threading.Thread``
  here, a native thread in the SDK), and exceptions raised by a callback are swallowed;
* event objects have the SDK's shapes (``evt.result.text`` / ``.reason``, ``evt.cancellation_details`` with
  ``.code`` for recognition, ``evt.result.cancellation_details`` with ``.error_code`` for synthesis) and carry
  the SDK's real enum members;
* ``*_async()`` return futures whose ``.get()`` blocks (stop can block for seconds);
* synthesis streams ``synthesizing`` chunks and ends with ``synthesis_completed`` or ``synthesis_canceled``;
  ``stop_speaking_async`` cancels it (``CancelledByUser``).

The service's *timing* is modelled only when asked (:class:`SynthesisTiming`): the first ``synthesizing``
chunk comes ``first_chunk_latency`` seconds after ``speak_text_async``, later ones at ``realtime_factor`` ×
real time, and the audio's length follows the text, with the same formulas as the fake ElevenLabs
(:mod:`voice_runtime.testing.speech_timing`). That is a model of the service, not a measurement of it.

Everything else in the tests (the event loop, threads, queues, the server, the phone, sockets) is real.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import azure.cognitiveservices.speech as speechsdk

from voice_runtime.audio.g711 import pcm16_to_ulaw
from voice_runtime.providers.azure_sdk import RecognizerOptions, SynthesizerOptions
from voice_runtime.providers.mock import tone_speech
from voice_runtime.testing.speech_timing import DEFAULT_CHARS_PER_SECOND, DEFAULT_MIN_SECONDS, paced_due, speech_seconds

__all__ = [
    "CancellationErrorCode",
    "CancellationReason",
    "FakeFuture",
    "FakePushStream",
    "FakeRecognizer",
    "FakeSignal",
    "FakeSpeechSdk",
    "FakeSynthesizer",
    "ResultReason",
    "SynthesisTiming",
    "canceled_event",
    "fake_speech_audio",
    "fire_from_thread",
    "plain_event",
    "recognized_event",
    "recognizing_event",
]

ResultReason = speechsdk.ResultReason
CancellationReason = speechsdk.CancellationReason
CancellationErrorCode = speechsdk.CancellationErrorCode


class FakeSignal:
    """``EventSignal``: ``connect`` / ``disconnect_all``; ``fire`` calls callbacks and swallows their errors."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[Any], None]] = []
        self.swallowed: list[BaseException] = []

    def connect(self, callback: Callable[[Any], None]) -> None:
        self.callbacks.append(callback)

    def disconnect_all(self) -> None:
        self.callbacks.clear()

    def fire(self, evt: Any) -> None:
        for callback in list(self.callbacks):
            try:
                callback(evt)
            except BaseException as exc:  # the SDK logs to its own trace and carries on
                self.swallowed.append(exc)


def fire_from_thread(signal: FakeSignal, evt: Any, *, wait: bool = True) -> threading.Thread:
    """Fire ``signal`` from a new foreign thread (the SDK's callback thread). Joins it when ``wait``."""
    thread = threading.Thread(target=signal.fire, args=(evt,), name="Dummy-sdk-callback", daemon=True)
    thread.start()
    if wait:
        thread.join(5.0)
        if thread.is_alive():
            raise AssertionError("callback thread hung")
    return thread


class FakeFuture:
    def __init__(self, fn: Callable[[], Any] | None = None) -> None:
        self._fn = fn

    def get(self) -> Any:
        return self._fn() if self._fn is not None else None


# ================================================================================================ events
def recognizing_event(text: str) -> Any:
    return SimpleNamespace(result=SimpleNamespace(text=text, reason=ResultReason.RecognizingSpeech))


def recognized_event(text: str, *, no_match: bool = False) -> Any:
    reason = ResultReason.NoMatch if no_match else ResultReason.RecognizedSpeech
    return SimpleNamespace(result=SimpleNamespace(text="" if no_match else text, reason=reason))


def canceled_event(code: Any, details: str = "", reason: Any = CancellationReason.Error) -> Any:
    return SimpleNamespace(cancellation_details=SimpleNamespace(reason=reason, code=code, error_details=details))


def plain_event() -> Any:
    return SimpleNamespace(session_id="fake-session", offset=0)


# ================================================================================================ STT
class FakePushStream:
    """``PushAudioInputStream``: records writes (and the thread they came from); can fail or block."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.writes: list[bytes] = []
        self.write_threads: set[str] = set()
        self.closed = threading.Event()
        self.fail_writes = False
        self._cond = threading.Condition()

    def write(self, buffer: bytes) -> None:
        self.write_threads.add(threading.current_thread().name)
        if self.fail_writes:
            raise RuntimeError("Exception with error code: 0x5 (SPXERR_INVALID_STATE)")
        with self._cond:
            self.writes.append(bytes(buffer))
            self.data += buffer
            self._cond.notify_all()

    def close(self) -> None:
        self.closed.set()

    def wait_bytes(self, n: int, timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.data) >= n, timeout)


class FakeRecognizer:
    """``SpeechRecognizer`` in continuous mode."""

    def __init__(self, stream: FakePushStream, options: RecognizerOptions) -> None:
        self.stream = stream
        self.options = options
        self.recognizing = FakeSignal()
        self.recognized = FakeSignal()
        self.canceled = FakeSignal()
        self.speech_start_detected = FakeSignal()
        self.speech_end_detected = FakeSignal()
        self.session_started = FakeSignal()
        self.session_stopped = FakeSignal()
        self.start_error: BaseException | None = None
        self.stop_block_s = 0.0
        self.started = threading.Event()
        self.stop_called = threading.Event()
        self.stop_finished = threading.Event()
        self.start_thread: str | None = None
        self.stop_thread: str | None = None
        self._release_stop = threading.Event()

    def start_continuous_recognition_async(self) -> FakeFuture:
        def start() -> None:
            self.start_thread = threading.current_thread().name
            if self.start_error is not None:
                raise self.start_error
            self.started.set()
            fire_from_thread(self.session_started, plain_event())

        return FakeFuture(start)

    def stop_continuous_recognition_async(self) -> FakeFuture:
        def stop() -> None:
            self.stop_thread = threading.current_thread().name
            self.stop_called.set()
            if self.stop_block_s:
                # Models the SDK's documented multi-second stop: the call just does not return for a while.
                self._release_stop.wait(self.stop_block_s)
            self.stop_finished.set()

        return FakeFuture(stop)

    def release_stop(self) -> None:
        self._release_stop.set()


class FakeSpeechSdk:
    """The ``SpeechSdk`` seam with fakes; remembers every object it built.

    ``timing`` gives every synthesizer it builds that service model (see :class:`SynthesisTiming`); without
    it synthesizers emit a fixed second of audio as fast as the consumer takes it. ``synth_factory`` may be
    replaced for other per-test synthesizer behaviour.
    """

    def __init__(self, timing: SynthesisTiming | None = None) -> None:
        self.timing = timing
        self.streams: list[FakePushStream] = []
        self.recognizers: list[FakeRecognizer] = []
        self.synthesizers: list[FakeSynthesizer] = []
        self.connections: list[SimpleNamespace] = []
        self.create_threads: set[str] = set()
        self.configure_recognizer: Callable[[int, FakeRecognizer], None] | None = None
        self.create_gate: dict[int, threading.Event] = {}  # recognizer index → released when set
        self.create_entered: dict[int, threading.Event] = {}
        self.synth_factory: Callable[[SynthesizerOptions], FakeSynthesizer] = lambda options: FakeSynthesizer(
            options, timing=self.timing
        )
        self._cond = threading.Condition()

    def create_push_stream(self) -> FakePushStream:
        stream = FakePushStream()
        self.streams.append(stream)
        return stream

    def create_recognizer(self, push_stream: FakePushStream, options: RecognizerOptions) -> FakeRecognizer:
        self.create_threads.add(threading.current_thread().name)
        index = len(self.recognizers)
        self.create_entered.setdefault(index, threading.Event()).set()
        gate = self.create_gate.get(index)
        if gate is not None:
            if not gate.wait(10.0):
                raise AssertionError("test never released the recognizer gate")
        recognizer = FakeRecognizer(push_stream, options)
        if self.configure_recognizer is not None:
            self.configure_recognizer(index, recognizer)
        with self._cond:
            self.recognizers.append(recognizer)
            self._cond.notify_all()
        return recognizer

    def wait_recognizer(self, index: int, timeout: float = 5.0) -> FakeRecognizer:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.recognizers) > index, timeout):
                raise AssertionError(f"no recognizer #{index}")
            recognizer = self.recognizers[index]
        if not recognizer.started.wait(timeout) and recognizer.start_error is None:
            raise AssertionError(f"recognizer #{index} never started")
        return recognizer

    def create_synthesizer(self, options: SynthesizerOptions) -> FakeSynthesizer:
        synth = self.synth_factory(options)
        self.synthesizers.append(synth)
        return synth

    def open_connection(self, synthesizer: FakeSynthesizer) -> SimpleNamespace:
        connection = SimpleNamespace(opened_for=synthesizer, close=lambda: None)
        self.connections.append(connection)
        return connection


# ================================================================================================ TTS
def fake_speech_audio(seconds: float = 1.0) -> bytes:
    """μ-law speech-like audio, trimmed to whole 160-byte frames."""
    audio = pcm16_to_ulaw(tone_speech(seconds))
    return audio[: len(audio) // 160 * 160]


#: μ-law 8 kHz: one byte per sample, what ``Raw8Khz8BitMonoMULaw`` produces.
ULAW_BYTES_PER_SECOND = 8000.0


@dataclass(frozen=True)
class SynthesisTiming:
    """A model of the service's speed, the same one the fake ElevenLabs uses (for comparable benchmarks).

    ``first_chunk_latency``: seconds from ``speak_text_async`` to the first ``synthesizing`` event (the
    service's time to first audio, network included). ``realtime_factor``: audio seconds generated per wall
    second after that (``None``: as fast as the consumer takes it). The audio for a text lasts
    ``max(min_seconds, characters / chars_per_second)``.
    """

    first_chunk_latency: float = 0.0
    realtime_factor: float | None = None
    chars_per_second: float = DEFAULT_CHARS_PER_SECOND
    min_seconds: float = DEFAULT_MIN_SECONDS

    def audio_for(self, text: str) -> bytes:
        """The μ-law audio the modelled service returns for ``text`` (length as the fake ElevenLabs')."""
        seconds = speech_seconds(text, chars_per_second=self.chars_per_second, min_seconds=self.min_seconds)
        return fake_speech_audio(round(seconds, 2))


class FakeSynthesizer:
    """``SpeechSynthesizer``: a producer thread fires ``synthesizing`` chunks, then completes or cancels.

    ``gate_after`` holds synthesis after that many chunks until ``release()`` (to prove streaming);
    ``chunk_interval`` sleeps between chunks (a crude synthesis speed for tests); ``timing`` models the
    service's latency and speed, and makes the audio follow the text unless ``audio`` is given;
    ``cancel_with`` ends in a canceled result; ``silent`` never emits anything.

    Timestamps (``time.monotonic()``) per utterance, for measuring the model: ``requested_at`` when
    ``speak_text_async`` was called, ``first_chunk_at`` just before the first ``synthesizing`` event fired.
    """

    def __init__(
        self,
        options: SynthesizerOptions,
        *,
        audio: bytes | None = None,
        chunk_bytes: int = 800,
        chunk_interval: float = 0.0,
        gate_after: int | None = None,
        cancel_with: tuple[Any, str] | None = None,
        silent: bool = False,
        timing: SynthesisTiming | None = None,
    ) -> None:
        self.options = options
        self.timing = timing
        self.fixed_audio = audio is not None or timing is None
        self.audio = audio if audio is not None else fake_speech_audio(1.0)
        self.chunk_bytes = chunk_bytes
        self.chunk_interval = chunk_interval
        self.gate_after = gate_after
        self.cancel_with = cancel_with
        self.silent = silent
        self.synthesis_started = FakeSignal()
        self.synthesizing = FakeSignal()
        self.synthesis_completed = FakeSignal()
        self.synthesis_canceled = FakeSignal()
        self.texts: list[str] = []
        self.requested_at: list[float] = []
        self.first_chunk_at: list[float] = []
        self.stop_calls = 0
        self.stop_threads: list[str] = []
        self.chunks_sent = 0
        self.callback_threads: set[str] = set()
        self.active = 0
        self.max_active = 0
        self.completed = threading.Event()
        self.gate = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def release(self) -> None:
        self.gate.set()

    def speak_text_async(self, text: str) -> FakeFuture:
        self.requested_at.append(time.monotonic())
        self.texts.append(text)
        audio = self.audio if self.fixed_audio or self.timing is None else self.timing.audio_for(text)
        self._stop.clear()
        self.completed.clear()
        done = threading.Event()
        box: dict[str, Any] = {}
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        thread = threading.Thread(target=self._produce, args=(audio, done, box), name="Dummy-synth", daemon=True)
        thread.start()

        def get() -> Any:
            done.wait(30.0)
            return box.get("result")

        return FakeFuture(get)

    def _produce(self, audio: bytes, done: threading.Event, box: dict[str, Any]) -> None:
        self.callback_threads.add(threading.current_thread().name)
        try:
            if self.silent:
                self._stop.wait(30.0)
                if self._stop.is_set():
                    box["result"] = self._cancel(CancellationReason.CancelledByUser, CancellationErrorCode.NoError, "")
                return
            timing = self.timing or SynthesisTiming()
            # The service model: waits on the stop event, so stop_speaking cuts them short like the SDK's.
            if timing.first_chunk_latency and self._stop.wait(timing.first_chunk_latency):
                box["result"] = self._cancel(CancellationReason.CancelledByUser, CancellationErrorCode.NoError, "")
                return
            t0 = time.monotonic()
            for index, start in enumerate(range(0, len(audio), self.chunk_bytes)):
                if self.gate_after is not None and index == self.gate_after:
                    self.gate.wait(10.0)
                delay = paced_due(t0, start, ULAW_BYTES_PER_SECOND, timing.realtime_factor) - time.monotonic()
                if (delay > 0 and self._stop.wait(delay)) or self._stop.is_set():
                    box["result"] = self._cancel(CancellationReason.CancelledByUser, CancellationErrorCode.NoError, "")
                    return
                chunk = audio[start : start + self.chunk_bytes]
                if index == 0:
                    self.first_chunk_at.append(time.monotonic())
                self.synthesizing.fire(SimpleNamespace(result=SimpleNamespace(audio_data=chunk, reason=ResultReason.SynthesizingAudio)))
                self.chunks_sent += 1
                if self.chunk_interval and self._stop.wait(self.chunk_interval):
                    box["result"] = self._cancel(CancellationReason.CancelledByUser, CancellationErrorCode.NoError, "")
                    return
            if self.cancel_with is not None:
                code, details = self.cancel_with
                box["result"] = self._cancel(CancellationReason.Error, code, details)
                return
            result = SimpleNamespace(reason=ResultReason.SynthesizingAudioCompleted, audio_data=audio, cancellation_details=None)
            self.completed.set()
            self.synthesis_completed.fire(SimpleNamespace(result=result))
            box["result"] = result
        finally:
            with self._lock:
                self.active -= 1
            done.set()

    def _cancel(self, reason: Any, code: Any, details: str) -> Any:
        # Synthesis cancellation details spell the code ``error_code`` (recognition uses ``code``).
        result = SimpleNamespace(
            reason=ResultReason.Canceled,
            audio_data=b"",
            cancellation_details=SimpleNamespace(reason=reason, error_code=code, error_details=details),
        )
        self.synthesis_canceled.fire(SimpleNamespace(result=result))
        return result

    def stop_speaking_async(self) -> FakeFuture:
        def stop() -> None:
            self.stop_calls += 1
            self.stop_threads.append(threading.current_thread().name)
            self._stop.set()
            self.gate.set()

        return FakeFuture(stop)
