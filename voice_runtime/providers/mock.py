"""Mock providers that behave like real ones on the wire.

``MockTts`` produces real μ-law audio (a speech-like modulated tone) whose duration follows the text length,
so marks take as long to echo as real speech would and barge-in has something to interrupt.

``MockStt`` runs a real energy VAD over the caller's audio: it fires ``on_speech_started`` when the caller
starts making sound and commits one utterance when they stop. The *words* come from a script (or
``inject``), since a mock cannot understand audio — but timing, endpointing and barge-in are genuine.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from voice_runtime.audio.g711 import ULAW_DECODE_TABLE, pcm16_to_ulaw
from voice_runtime.errors import ProviderError
from voice_runtime.providers.base import StreamingTtsBase, reads_its_queue_itself

log = logging.getLogger(__name__)

_ABS_TABLE = np.abs(ULAW_DECODE_TABLE.astype(np.int32))
# |sample| split into high and low bytes, as bytes.translate tables: two C-speed translate+sum passes give the
# exact mean ~5x faster than numpy on a 160-byte frame, where numpy's per-call overhead dominates (this VAD
# runs on every caller frame of every call, so the load benchmark would otherwise mostly measure the mock).
_ABS_HI = bytes(int(v) >> 8 for v in _ABS_TABLE)
_ABS_LO = bytes(int(v) & 0xFF for v in _ABS_TABLE)


def frame_level(ulaw: bytes) -> float:
    """Mean absolute amplitude of a μ-law chunk (0..32768); cheap enough to run per frame."""
    if not ulaw:
        return 0.0
    return (sum(ulaw.translate(_ABS_HI)) * 256 + sum(ulaw.translate(_ABS_LO))) / len(ulaw)


class EnergyVad:
    """A tiny streaming endpointer over μ-law frames with hysteresis.

    Speech starts after ``start_ms`` of frames above ``threshold``; it ends after ``end_ms`` below it.
    Works on audio time (bytes), not wall time, so it behaves the same however fast frames arrive.
    """

    def __init__(self, threshold: float = 500.0, start_ms: int = 60, end_ms: int = 400) -> None:
        self.threshold = threshold
        self.start_samples = start_ms * 8
        self.end_samples = end_ms * 8
        self.in_speech = False
        self._above = 0
        self._below = 0

    def process(self, ulaw: bytes) -> str | None:
        """Returns ``"start"``, ``"end"`` or None for this chunk."""
        loud = frame_level(ulaw) >= self.threshold
        n = len(ulaw)
        if not self.in_speech:
            self._above = self._above + n if loud else 0
            if self._above >= self.start_samples:
                self.in_speech, self._below = True, 0
                return "start"
        else:
            self._below = 0 if loud else self._below + n
            if self._below >= self.end_samples:
                self.in_speech, self._above = False, 0
                return "end"
        return None


class MockStt:
    """An STT whose words are scripted but whose timing comes from the caller's real audio."""

    name = "mock"

    def __init__(
        self,
        script: Iterable[str] = (),
        *,
        vad: bool = True,
        threshold: float = 500.0,
        end_ms: int = 400,
        default_text: str | None = None,
        **kwargs: Any,
    ) -> None:
        self._kwargs = kwargs
        self.script: deque[str] = deque(script)
        self.default_text = default_text
        self.on_committed: Callable[[str], None] | None = None
        self.on_recognizing: Callable[[str], None] | None = None
        self.on_error: Callable[[str], None] | None = None
        self.on_speech_started: Callable[[], None] | None = None
        #: The endpoint: called with the estimated ``time.monotonic()`` at which the caller's sound stopped
        #: (the endpointing frame's arrival minus the trailing silence the VAD needed to be sure).
        self.on_speech_ended: Callable[[float | None], None] | None = None
        self.speaking = False
        self.frames_received = 0
        self.bytes_received = 0
        self.last_frame_at = 0.0
        self.utterances = 0
        self.on_frame: Callable[[bytes], None] | None = None  # benchmark hook (latency probes)
        self._vad = EnergyVad(threshold=threshold, end_ms=end_ms) if vad else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._input_ended = False  # the queue's None came: the stream is over
        self.feed_audio: Callable[[bytes], None] | None = None  # set by start (the inline path)
        self.started = threading.Event()
        self.stopped = threading.Event()

    # -- injection (tests) -----------------------------------------------------------------------
    def inject(self, text: str) -> None:
        """Commit ``text`` now, from any thread."""
        self._dispatch(self._commit, text)

    def inject_partial(self, text: str) -> None:
        self._dispatch(lambda t: self.on_recognizing and self.on_recognizing(t), text)

    def inject_error(self, message: str) -> None:
        self._dispatch(lambda m: self.on_error and self.on_error(m), message)

    def inject_speech_started(self) -> None:
        self._dispatch(lambda _x: self.on_speech_started and self.on_speech_started(), None)

    def inject_speech_ended(self, ended_at: float | None = None) -> None:
        self._dispatch(lambda at: self.on_speech_ended and self.on_speech_ended(at), ended_at)

    def _dispatch(self, fn: Callable[[Any], Any], arg: Any) -> None:
        loop = self._loop
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(fn, arg)
        else:
            fn(arg)

    def _commit(self, text: str) -> None:
        self.utterances += 1
        callback = self.on_committed
        if callback is not None:
            callback(text)

    # -- provider protocol -----------------------------------------------------------------------
    def set_speaking(self, speaking: bool) -> None:
        self.speaking = speaking

    async def start(self, inbound_queue: asyncio.Queue[bytes | None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._input_ended = False
        self._task = asyncio.create_task(self._consume(inbound_queue), name="mock_stt_consume")
        if not reads_its_queue_itself(self, MockStt, "_consume"):
            # The inline path (VoiceSession.feed_stt_inline): the same bookkeeping as a queued chunk, with no
            # reader task step per frame.
            self.feed_audio = self._take_frame
        self.started.set()

    async def _consume(self, queue: asyncio.Queue[bytes | None]) -> None:
        while True:
            frame = await queue.get()
            if frame is None:
                self._input_ended = True
                return
            self._take_frame(frame)

    def _take_frame(self, frame: bytes) -> None:
        """One caller chunk, from the queue or inline on the loop (``feed_audio``, once started)."""
        if self._input_ended or self._task is None:  # the stream ended, or stop() ran
            return
        self.frames_received += 1
        self.bytes_received += len(frame)
        self.last_frame_at = time.monotonic()
        if self.on_frame is not None:
            self.on_frame(frame)
        if self._vad is None:
            return
        change = self._vad.process(frame)
        try:
            if change == "start":
                if self.on_speech_started is not None:
                    self.on_speech_started()
                if self.on_recognizing is not None and self.script:
                    self.on_recognizing(self.script[0].split(" ")[0])
            elif change == "end":
                if self.on_speech_ended is not None:
                    self.on_speech_ended(self.last_frame_at - self._vad.end_samples / 8000)
                text = self.script.popleft() if self.script else self.default_text
                if text:
                    self._commit(text)
        except Exception:
            log.exception("MockStt callback failed")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.stopped.set()


def tone_speech(seconds: float, *, frequency: float = 220.0, amplitude: float = 9000.0, rate: int = 8000) -> np.ndarray:
    """A speech-like test signal: a harmonic tone with a 4 Hz syllable envelope (int16)."""
    n = max(1, int(seconds * rate))
    t = np.arange(n, dtype=np.float64) / rate
    carrier = np.sin(2 * math.pi * frequency * t) + 0.5 * np.sin(2 * math.pi * 2 * frequency * t)
    envelope = 0.55 + 0.45 * np.sin(2 * math.pi * 4.0 * t - math.pi / 2) ** 2
    ramp = np.minimum(1.0, np.minimum(t, t[-1] - t + 1 / rate) / 0.02)  # 20 ms fade in/out
    return (carrier * envelope * ramp * amplitude / 1.5).astype(np.int16)


class MockTts(StreamingTtsBase):
    """Real audio of plausible duration for any text; optional synthesis delay and injected failures."""

    mark_timeout = 10.0  # 0.1.x MockTts waited 10 s for its mark (the real providers 30 s)
    name = "mock"

    def __init__(
        self,
        on_spoken: Callable[[str], None] | None = None,
        *,
        chars_per_second: float = 14.0,
        min_seconds: float = 0.4,
        frequency: float = 220.0,
        chunk_ms: int = 100,
        synthesis_speed: float | None = None,
        first_chunk_delay: float = 0.0,
        fail_with: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.on_spoken = on_spoken
        self.on_error: Callable[[str], None] | None = None
        self.spoken: list[str] = []
        self.chars_per_second = chars_per_second
        self.min_seconds = min_seconds
        self.frequency = frequency
        self.chunk_bytes = max(1, chunk_ms * 8)
        self.synthesis_speed = synthesis_speed  # e.g. 10.0 = produce audio 10x faster than real time
        self.first_chunk_delay = first_chunk_delay
        self.fail_with = fail_with
        self._kwargs = kwargs
        self._cache: dict[float, bytes] = {}

    def duration_for(self, text: str) -> float:
        return max(self.min_seconds, len(text.strip()) / self.chars_per_second)

    def audio_for(self, text: str) -> bytes:
        seconds = round(self.duration_for(text), 2)
        audio = self._cache.get(seconds)
        if audio is None:
            audio = pcm16_to_ulaw(tone_speech(seconds, frequency=self.frequency))
            if len(self._cache) < 256:
                self._cache[seconds] = audio
        return audio

    def synthesize(self, text: str, stop_event: threading.Event) -> Iterator[bytes]:
        self.spoken.append(text)
        if self.on_spoken is not None:
            try:
                self.on_spoken(text)
            except Exception:
                log.exception("MockTts on_spoken callback failed")
        if self.fail_with:
            raise ProviderError(self.fail_with, provider="mock", retryable=False)
        if self.first_chunk_delay and stop_event.wait(self.first_chunk_delay):
            return
        audio = self.audio_for(text)
        step = self.chunk_bytes
        for start in range(0, len(audio), step):
            if stop_event.is_set():
                return
            chunk = audio[start : start + step]
            yield chunk
            if self.synthesis_speed and stop_event.wait(len(chunk) / 8000 / self.synthesis_speed):
                return
