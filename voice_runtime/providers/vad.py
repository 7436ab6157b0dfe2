"""Streaming voice-activity detection for telephony audio (8 kHz int16), used by the local STT.

:class:`StreamingVad` turns a stream of PCM frames of any size into :class:`VadEvent` s::

    vad = StreamingVad(min_silence_ms=500)
    for frame in frames:                      # int16 numpy arrays at 8 kHz (or bytes of s16le)
        for event in vad.process(frame):
            if event.kind == "start": ...     # caller started talking (barge-in)
            if event.kind == "end": ...       # utterance finished: audio[event.start_sample:event.sample]

Positions are absolute sample indices in the input stream (``sample_rate`` samples per second), so the
caller can slice its own audio buffer; ``event.time`` is the same in seconds. Everything is measured in
*audio* time, never wall time, so audio can be fed faster than real time (tests, benchmarks).

Two frame classifiers, one endpointing state machine:

* ``"silero"`` (default when available): the Silero VAD v6 ONNX model shipped inside ``faster_whisper``'s
  assets, run with onnxruntime on 512-sample windows at 16 kHz (the shipped model is 16 kHz only, so 8 kHz
  input is upsampled with a low-latency streaming soxr resampler). The LSTM state (``h``, ``c``) and the
  64-sample context are carried from window to window. Cost: ~0.1 ms per 32 ms window on one core.
* ``"energy"`` (fallback): frame RMS against an adaptive noise floor (tracks down fast, up slowly, frozen
  while speech is detected), mapped to a pseudo-probability.

State machine (hysteresis, as in Silero's reference iterator): a window with probability ≥ ``threshold`` is
speech, below ``threshold - 0.15`` is silence, in between keeps the current state.

* ``start`` is emitted once ``min_speech_ms`` of speech has accumulated (so a click does not count as
  speech); its ``sample`` is the onset minus ``speech_pad_ms``. Latency from onset ≈ ``min_speech_ms`` + one
  window (~32 ms) + resampler delay (~2 ms).
* ``pause`` (optional, ``pause_ms``) is emitted once per silent gap when silence inside an utterance reaches
  ``pause_ms``: a hint to start transcribing speculatively. Its ``sample`` is the would-be end position.
* ``end`` is emitted when silence reaches ``min_silence_ms``; ``sample`` is the silence onset plus
  ``speech_pad_ms`` (never beyond the audio seen), ``start_sample`` the matching start.
* :meth:`StreamingVad.flush` ends an utterance in progress at the end of the stream.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from voice_runtime.audio.resample import StreamResampler

__all__ = ["StreamingVad", "VadEvent", "silero_model_path"]

log = logging.getLogger(__name__)

_SILERO_RATE = 16000
_SILERO_WINDOW = 512
_SILERO_CONTEXT = 64


@dataclass(frozen=True)
class VadEvent:
    """A VAD decision. ``kind`` is ``"start"``, ``"pause"`` or ``"end"``; positions are input samples."""

    kind: Literal["start", "pause", "end"]
    sample: int
    sample_rate: int
    start_sample: int | None = None  # for "pause"/"end": where the utterance started

    @property
    def time(self) -> float:
        return self.sample / self.sample_rate


def silero_model_path() -> Path | None:
    """Path of the Silero VAD ONNX model bundled with faster-whisper, or None if it is not installed."""
    try:
        from importlib.util import find_spec

        spec = find_spec("faster_whisper")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        assets = Path(location) / "assets"
        candidates = sorted(assets.glob("silero_vad*.onnx"), reverse=True)
        if candidates:
            return candidates[0]
    return None


_SESSIONS: dict[str, object] = {}
_SESSIONS_LOCK = threading.Lock()


def _silero_session(path: Path) -> object:
    """One onnxruntime session per process (sessions are thread-safe for ``run``)."""
    key = str(path)
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(key)
        if session is None:
            import onnxruntime

            opts = onnxruntime.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 4
            session = onnxruntime.InferenceSession(key, sess_options=opts, providers=["CPUExecutionProvider"])
            _SESSIONS[key] = session
        return session


class _SileroClassifier:
    """Per-window speech probability from the Silero v6 ONNX model, with carried state."""

    def __init__(self, sample_rate: int, model_path: Path) -> None:
        self.session = _silero_session(model_path)
        self.in_rate = sample_rate
        self.resampler = StreamResampler(sample_rate, _SILERO_RATE, quality="QQ") if sample_rate != _SILERO_RATE else None
        self.buffer = np.zeros(0, dtype=np.float32)
        self.context = np.zeros(_SILERO_CONTEXT, dtype=np.float32)
        self.h = np.zeros((1, 1, 128), dtype=np.float32)
        self.c = np.zeros((1, 1, 128), dtype=np.float32)
        self.window_in = _SILERO_WINDOW * sample_rate / _SILERO_RATE  # input samples per window

    def reset(self) -> None:
        self.buffer = np.zeros(0, dtype=np.float32)
        self.context[:] = 0
        self.h[:] = 0
        self.c[:] = 0
        if self.resampler is not None:
            self.resampler.reset()

    def windows(self, pcm: np.ndarray) -> list[float]:
        up = self.resampler.process(pcm) if self.resampler is not None else pcm
        if up.size:
            self.buffer = np.concatenate([self.buffer, up.astype(np.float32) / 32768.0])
        probs = []
        while self.buffer.size >= _SILERO_WINDOW:
            window = self.buffer[:_SILERO_WINDOW]
            self.buffer = self.buffer[_SILERO_WINDOW:]
            x = np.concatenate([self.context, window])[None, :]
            out, self.h, self.c = self.session.run(None, {"input": x, "h": self.h, "c": self.c})  # type: ignore[attr-defined]
            self.context = window[-_SILERO_CONTEXT:].copy()
            probs.append(float(np.asarray(out).reshape(-1)[0]))
        return probs


class _EnergyClassifier:
    """Per-window pseudo-probability from frame energy over an adaptive noise floor."""

    def __init__(self, sample_rate: int, *, snr_db: float = 9.0, floor_db: float = -60.0) -> None:
        self.window_in = sample_rate * 20 / 1000  # 20 ms windows
        self.size = int(self.window_in)
        self.buffer = np.zeros(0, dtype=np.int16)
        self.snr_db = snr_db
        self.min_floor_db = floor_db
        self.noise_db: float | None = None  # the first window seeds the floor (streams start quiet)
        self.speaking = False  # fed back by the state machine: the floor rises much slower during speech

    def reset(self) -> None:
        self.buffer = np.zeros(0, dtype=np.int16)
        self.noise_db = None

    def windows(self, pcm: np.ndarray) -> list[float]:
        self.buffer = np.concatenate([self.buffer, pcm]) if self.buffer.size else pcm.copy()
        probs = []
        while self.buffer.size >= self.size:
            frame = self.buffer[: self.size].astype(np.float32) / 32768.0
            self.buffer = self.buffer[self.size:]
            rms = float(np.sqrt(np.mean(frame * frame)) + 1e-9)
            level = max(20.0 * math.log10(rms), self.min_floor_db)
            if self.noise_db is None:
                self.noise_db = level
            elif level < self.noise_db:
                self.noise_db += 0.3 * (level - self.noise_db)  # fall fast
            else:  # rise slowly (~1 s time constant in silence, ~10 s during speech)
                self.noise_db += (0.002 if self.speaking else 0.02) * (level - self.noise_db)
            margin = level - (self.noise_db + self.snr_db)
            probs.append(1.0 / (1.0 + math.exp(-margin / 2.0)))
        return probs


class StreamingVad:
    """Streaming speech start/end detection on int16 PCM (see the module docstring).

    ``backend``: ``"auto"`` (Silero if faster-whisper's asset and onnxruntime are available, else energy),
    ``"silero"`` or ``"energy"``. Not thread-safe: one instance per audio stream.
    """

    def __init__(
        self,
        *,
        sample_rate: int = 8000,
        threshold: float = 0.5,
        min_silence_ms: int = 500,
        min_speech_ms: int = 96,
        speech_pad_ms: int = 100,
        pause_ms: int | None = None,
        backend: str = "auto",
        model_path: str | os.PathLike[str] | None = None,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError("threshold must be in (0, 1)")
        if min_silence_ms <= 0 or min_speech_ms < 0 or speech_pad_ms < 0:
            raise ValueError("durations must be positive")
        self.sample_rate = int(sample_rate)
        self.threshold = threshold
        self.neg_threshold = max(threshold - 0.15, 0.01)
        self.min_silence_ms = min_silence_ms
        self.min_speech_ms = min_speech_ms
        self.speech_pad_ms = speech_pad_ms
        self.pause_ms = pause_ms if pause_ms is not None and pause_ms < min_silence_ms else None
        self._classifier: _SileroClassifier | _EnergyClassifier
        self.backend = self._make_backend(backend, model_path)
        self._min_silence = self._ms(min_silence_ms)
        self._min_speech = self._ms(min_speech_ms)
        self._pad = self._ms(speech_pad_ms)
        self._pause = self._ms(self.pause_ms) if self.pause_ms is not None else None
        self.reset()

    def _ms(self, ms: float) -> int:
        return int(round(ms * self.sample_rate / 1000))

    def _make_backend(self, backend: str, model_path: str | os.PathLike[str] | None) -> str:
        if backend not in ("auto", "silero", "energy"):
            raise ValueError("backend must be 'auto', 'silero' or 'energy'")
        if backend in ("auto", "silero"):
            path = Path(model_path) if model_path is not None else silero_model_path()
            try:
                if path is None or not path.is_file():
                    raise FileNotFoundError("Silero VAD model not found (faster-whisper not installed?)")
                self._classifier = _SileroClassifier(self.sample_rate, path)
                return "silero"
            except (ImportError, OSError, RuntimeError) as exc:
                if backend == "silero":
                    raise
                log.info("Silero VAD unavailable (%s); using the energy VAD", exc)
        self._classifier = _EnergyClassifier(self.sample_rate)
        return "energy"

    # -- state ----------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything (new stream). Sample positions restart at 0."""
        self._classifier.reset()
        self.samples_seen = 0  # input samples processed
        self._windows_done = 0  # windows classified (positions derive from this, not from buffering)
        self.triggered = False
        self._candidate: int | None = None  # onset of not-yet-confirmed speech
        self._speech_start = 0
        self._silence_start: int | None = None
        self._paused = False
        self.last_probability = 0.0

    @property
    def in_speech(self) -> bool:
        """True between ``start`` and ``end``."""
        return self.triggered

    @property
    def in_silence(self) -> bool:
        """True inside an utterance while the current silent gap has not been broken by speech."""
        return self.triggered and self._silence_start is not None

    def process(self, pcm: np.ndarray | bytes) -> list[VadEvent]:
        """Feed the next PCM frame (int16 array or s16le bytes, any length); return the events it caused."""
        if isinstance(pcm, (bytes, bytearray, memoryview)):
            pcm = np.frombuffer(pcm, dtype="<i2").astype(np.int16, copy=False)
        pcm = np.asarray(pcm)
        if pcm.dtype != np.int16:
            raise TypeError(f"expected int16 samples, got {pcm.dtype}")
        pcm = pcm.reshape(-1)
        self.samples_seen += pcm.size
        if isinstance(self._classifier, _EnergyClassifier):
            self._classifier.speaking = self.triggered
        events: list[VadEvent] = []
        window = self._classifier.window_in
        for prob in self._classifier.windows(pcm):
            start = int(round(self._windows_done * window))
            self._windows_done += 1
            end = min(int(round(self._windows_done * window)), self.samples_seen)
            self.last_probability = prob
            self._step(prob, start, end, events)
        return events

    def _step(self, prob: float, start: int, end: int, events: list[VadEvent]) -> None:
        rate = self.sample_rate
        if not self.triggered:
            if prob >= self.threshold:
                if self._candidate is None:
                    self._candidate = start
                if end - self._candidate >= max(self._min_speech, 1):
                    self.triggered = True
                    self._speech_start = max(0, self._candidate - self._pad)
                    self._candidate = None
                    self._silence_start = None
                    self._paused = False
                    events.append(VadEvent("start", self._speech_start, rate))
            elif prob < self.neg_threshold:
                self._candidate = None
            return
        if prob >= self.threshold:
            self._silence_start = None
            self._paused = False
            return
        if prob >= self.neg_threshold:
            return  # ambiguous: keep the current state
        if self._silence_start is None:
            self._silence_start = start
        silence = end - self._silence_start
        end_sample = min(self._silence_start + self._pad, self.samples_seen)
        if self._pause is not None and not self._paused and silence >= self._pause:
            self._paused = True
            events.append(VadEvent("pause", end_sample, rate, self._speech_start))
        if silence >= self._min_silence:
            events.append(VadEvent("end", end_sample, rate, self._speech_start))
            self.triggered = False
            self._silence_start = None
            self._paused = False

    def flush(self) -> list[VadEvent]:
        """End of stream: close an utterance in progress (``end`` at the last sample seen)."""
        if not self.triggered:
            self._candidate = None
            return []
        end_sample = self.samples_seen
        if self._silence_start is not None:
            end_sample = min(self._silence_start + self._pad, self.samples_seen)
        self.triggered = False
        self._silence_start = None
        self._paused = False
        return [VadEvent("end", end_sample, self.sample_rate, self._speech_start)]

    def force_end(self) -> VadEvent | None:
        """End the current utterance now (e.g. a length cap) and keep listening: a new utterance starts here.

        Returns the ``end`` event (None when not in speech). The VAD stays triggered, with the next utterance
        starting at the current position.
        """
        if not self.triggered:
            return None
        event = VadEvent("end", self.samples_seen, self.sample_rate, self._speech_start)
        self._speech_start = self.samples_seen
        self._silence_start = None
        self._paused = False
        return event
