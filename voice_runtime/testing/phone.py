"""A simulated phone: the carrier's side of a media stream, over a real WebSocket, in real time.

It behaves like Twilio/Plivo do towards your server:

* sends ``connected``/``start`` (with your custom parameters), then one 20 ms caller frame every 20 ms —
  silence unless you queued speech with :meth:`SimulatedPhone.say` — plus DTMF on :meth:`press`;
* plays the agent's audio through a real-time playback buffer and echoes each mark only once the audio
  queued before it has played (immediately if nothing is buffered);
* on ``clear`` drops the buffer and, like Twilio, echoes the marks that were pending (Plivo: no echo);
* records what it sent and what it heard, and measures playback underruns (late agent audio);
* listens like a person would: decodes DTMF tones in the agent's audio (a Goertzel detector, so in-band digits
  sent by the server come back as digits), measures the level of every played 20 ms frame (so a test can tell
  a background bed from a silent line), and keeps a **heard log** — the contiguous runs of agent audio it
  played, in order, with the marks reached inside each and how each ended (a clear, the buffer running dry),
  so pause/resume can be checked for audio heard twice or skipped.

It runs its own event loop in a background thread, so tests and demos drive it with plain blocking calls.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import wave
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import websockets
from websockets.asyncio.client import ClientConnection, connect

from voice_runtime.audio.dtmf import DtmfDetector
from voice_runtime.audio.frames import FRAME_BYTES, FRAME_INTERVAL, SILENCE_FRAME
from voice_runtime.audio.g711 import pcm16_to_ulaw, ulaw_to_pcm16
from voice_runtime.audio.resample import resample
from voice_runtime.providers.mock import frame_level
from voice_runtime.testing.carriers import (
    CarrierCodec,
    CarrierViolation,
    ServerClear,
    ServerDtmf,
    ServerMark,
    ServerMedia,
    carrier_codec,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PhoneEvent:
    kind: str  # media | mark | mark_echoed | clear | dtmf_out | playback_start | playback_end | caller_speech_start | caller_speech_end | closed | violation
    at: float
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class HeardSegment:
    """One contiguous run of agent audio the phone played (no silence the phone inserted is included).

    ``marks`` are ``(byte offset within audio, wire name)`` for each mark reached while playing it; ``ended`` is
    ``"clear"`` (the server cleared the buffer), ``"dry"`` (nothing more was buffered) or ``"open"`` (still playing).
    """

    started_at: float
    audio: bytearray = field(default_factory=bytearray)
    marks: list[tuple[int, str]] = field(default_factory=list)
    ended_at: float | None = None
    ended: str = "open"

    @property
    def seconds(self) -> float:
        return len(self.audio) / 8000


@dataclass(frozen=True)
class PlayedFrame:
    """The level of one 20 ms tick of playback: ``level`` is the mean |sample| (0..32768) of what played,
    ``audio`` is False when the phone had nothing buffered and played its own silence."""

    at: float
    level: float
    audio: bool


def locate(audio: bytes, reference: bytes) -> int | None:
    """Byte offset at which ``audio`` occurs in ``reference`` (exact match), or None."""
    if not audio:
        return None
    index = reference.find(bytes(audio))
    return None if index < 0 else index


class Utterance:
    """Caller audio queued with :meth:`SimulatedPhone.say` (``text`` when it was synthesized from text)."""

    def __init__(self, audio: bytes, text: str | None = None) -> None:
        self.audio = audio
        self.text = text
        self.started = threading.Event()
        self.finished = threading.Event()
        self.start_time: float | None = None
        self.end_time: float | None = None

    @property
    def duration(self) -> float:
        return len(self.audio) / 8000

    def wait_finished(self, timeout: float = 30.0) -> bool:
        return self.finished.wait(timeout)


class PhoneRejected(ConnectionError):
    """The server refused the WebSocket upgrade (e.g. 403 for a bad signature or token)."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status


def looks_like_audio_file(value: str | Path) -> bool:
    """A ``Path``, or a string naming an existing file or ending in ``.wav`` (anything else is text to say)."""
    if isinstance(value, Path):
        return True
    return value.lower().endswith(".wav") or Path(value).is_file()


def synthesize_caller_speech(text: str, tts: Any = None) -> bytes:
    """μ-law 8 kHz for ``text``: with ``tts`` (a provider or a ``create_tts`` name such as ``"local"``), else the
    mock TTS's speech-like tone, as long as the text would take to say (the mock STT hears its timing, not words)."""
    if not text.strip():
        raise ValueError("say() needs some text (or audio)")
    if tts is None or tts == "mock":
        from voice_runtime.providers.mock import MockTts

        return MockTts(frequency=180.0).audio_for(text)
    if isinstance(tts, str):
        from voice_runtime.tts import create_tts

        tts = create_tts(tts)
    stop = threading.Event()
    return b"".join(tts.synthesize(text, stop))


def to_ulaw(audio: bytes | np.ndarray | str | Path, sample_rate: int = 8000) -> bytes:
    """Accept μ-law bytes, int16 PCM at ``sample_rate``, or a WAV file path; return μ-law 8 kHz."""
    if isinstance(audio, (bytes, bytearray)):
        return bytes(audio)
    if isinstance(audio, (str, Path)):
        if not Path(audio).is_file():
            raise FileNotFoundError(f"no WAV file {str(audio)!r} (to say text, pass text that is not a .wav path)")
        with wave.open(str(audio), "rb") as wav:
            if wav.getsampwidth() != 2:
                raise ValueError("only 16-bit PCM WAV files are supported")
            frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
            channels = wav.getnchannels()
            if channels > 1:
                frames = frames.reshape(-1, channels).mean(axis=1).astype(np.int16)
            return to_ulaw(frames, wav.getframerate())
    samples = np.asarray(audio)
    if samples.dtype != np.int16:
        if np.issubdtype(samples.dtype, np.floating):
            samples = np.clip(samples * 32767.0, -32768, 32767).astype(np.int16)
        else:
            samples = samples.astype(np.int16)
    if sample_rate != 8000:
        samples = resample(samples, sample_rate, 8000)
    return pcm16_to_ulaw(samples)


class SimulatedPhone:
    """One simulated carrier call against ``url`` (``ws://host:port/stream[/token]``)."""

    def __init__(
        self,
        url: str,
        *,
        carrier: str = "twilio",
        custom_parameters: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        codec: CarrierCodec | None = None,
        max_record_seconds: float = 900.0,
        send_silence: bool = True,
        caller_source: Callable[[int], bytes | None] | None = None,
        detect_tones: bool = True,
        **codec_kwargs: Any,
    ) -> None:
        self.url = url
        self.headers = headers or {}
        self.codec = codec or carrier_codec(carrier, custom_parameters=dict(custom_parameters or {}), **codec_kwargs)
        self.send_silence = send_silence
        #: Called with the frame index when no queued speech is playing; returns 160 μ-law bytes (or None
        #: for silence). Lets a test generate caller audio on the fly (noise, tones, a live feed).
        self.caller_source = caller_source
        self.max_record_bytes = int(max_record_seconds * 8000)
        self.events: list[PhoneEvent] = []
        self._listeners: list[Callable[[PhoneEvent], None]] = []
        self._events_cond = threading.Condition()
        self.violations: list[str] = []
        # stats
        self.frames_sent = 0
        self.media_messages = 0
        self.media_bytes = 0
        self.underruns: list[float] = []  # seconds of silence inside an utterance, per underrun
        self.close_code: int | None = None
        self.marks_echoed: list[str] = []
        # recording: what the phone sent (caller) and what it played (agent)
        self.caller_track = bytearray()
        self.agent_track = bytearray()
        self.agent_received = bytearray()  # the agent's audio as it arrived: no playout timing, no clears
        # listening: DTMF heard in the agent audio, per-frame levels, and the heard log
        self.tones_heard = ""
        self._tone_detector = DtmfDetector(on_digit=self._on_tone) if detect_tones else None
        self.played_frames: deque[PlayedFrame] = deque(maxlen=max(1, int(max_record_seconds * 50)))
        self.heard: list[HeardSegment] = []
        self._heard_bytes = 0
        self._segment: HeardSegment | None = None
        # loop-thread state
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ws: ClientConnection | None = None
        self._playback: deque[bytes | str] = deque()  # bytes = audio, str = mark name
        self._playback_bytes = 0
        self._caller: deque[Utterance] = deque()
        self._caller_offset = 0
        self._in_utterance = False
        self._dry_since: float | None = None
        self._playing = False
        self._chunk = 0
        self._t0 = 0.0
        self._tasks: list[asyncio.Task[Any]] = []
        self._winding_down = False  # set on the loop thread once _main has returned (see _start_shutdown)
        self._closed = threading.Event()
        self._connected = threading.Event()
        self._connect_error: BaseException | None = None

    # ================================================================================ control (any thread)
    def connect(self, timeout: float = 5.0) -> SimulatedPhone:
        """Open the WebSocket, send the carrier's opening messages and start streaming."""
        self._thread = threading.Thread(target=self._run_loop, name="simulated-phone", daemon=True)
        self._thread.start()
        if not self._connected.wait(timeout):
            self.close()
            raise TimeoutError(f"phone could not connect to {self.url} within {timeout}s")
        if self._connect_error is not None:
            raise self._connect_error
        return self

    def say(self, audio: bytes | np.ndarray | str | Path, sample_rate: int = 8000, *, tts: Any = None) -> Utterance:
        """Queue caller speech, sent in real time after anything queued before.

        ``audio`` is μ-law 8 kHz ``bytes``, int16 (or float) PCM samples at ``sample_rate``, a WAV file (a ``Path``
        or a string ending in ``.wav``), or **text**: ``say("yes")`` synthesizes it — with the mock TTS by default
        (a speech-like tone as long as the words; the mock STT's VAD hears it and commits its scripted text), or
        with ``tts="local"`` (Piper) / any TTS provider object, so a real STT can recognize the words.
        """
        if isinstance(audio, str) and not looks_like_audio_file(audio):
            utterance = Utterance(synthesize_caller_speech(audio, tts), text=audio)
        else:
            utterance = Utterance(to_ulaw(audio, sample_rate))
        self._call(self._caller.append, utterance)
        return utterance

    def press(self, digits: str) -> None:
        """Send DTMF digits (one message each)."""
        for digit in digits:
            self._call(self._send_soon, self.codec.dtmf(digit))

    def send_raw(self, message: str | bytes) -> None:
        """Send an arbitrary message (malformed-input tests)."""
        self._call(self._send_soon_raw, message)

    def _send_soon_raw(self, message: str | bytes) -> None:
        async def send() -> None:
            if self._ws is not None and not self._closed.is_set():
                try:
                    await self._ws.send(message)
                except websockets.exceptions.ConnectionClosed:
                    self._mark_closed()

        asyncio.ensure_future(send())

    def hangup(self, timeout: float = 5.0) -> None:
        """End the call like the carrier does: ``stop`` then a clean close."""
        if self._loop is None or self._closed.is_set():
            return
        fut = asyncio.run_coroutine_threadsafe(self._hangup(), self._loop)
        try:
            fut.result(timeout)
        except Exception:
            pass
        self.close(timeout)

    def drop(self, timeout: float = 5.0) -> None:
        """Kill the connection abruptly: no stop message, no close frame (a network failure)."""
        if self._loop is None or self._closed.is_set():
            return

        def abort() -> None:
            if self._ws is not None:
                self._ws.transport.abort()

        self._call(abort)
        self.wait_closed(timeout)
        self.close(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the phone's loop (closing the socket if still open)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            # Schedule a plain callback, not a coroutine: if the loop stops before running it, nothing is left
            # un-awaited. The phone's thread ends once _main's tasks are cancelled, so joining it is the wait.
            try:
                loop.call_soon_threadsafe(self._start_shutdown)
            except RuntimeError:  # the loop closed between the check and the call
                pass
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_closed(self, timeout: float = 10.0) -> bool:
        """Block until the server closed the socket (or we did)."""
        return self._closed.wait(timeout)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def __enter__(self) -> SimulatedPhone:
        if self._thread is None:
            self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._closed.is_set():
            self.hangup()
        self.close()

    # ================================================================================ observation
    def wait_for(
        self, kind: str, timeout: float = 10.0, predicate: Callable[[PhoneEvent], bool] | None = None, *, after: float = 0.0
    ) -> PhoneEvent:
        """Block until an event of ``kind`` (at or after monotonic time ``after``) matching ``predicate``."""
        deadline = time.monotonic() + timeout
        with self._events_cond:
            index = 0
            while True:
                while index < len(self.events):
                    event = self.events[index]
                    index += 1
                    if event.kind == kind and event.at >= after and (predicate is None or predicate(event)):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no {kind!r} event within {timeout}s")
                self._events_cond.wait(remaining)

    def events_of(self, kind: str) -> list[PhoneEvent]:
        with self._events_cond:
            return [e for e in self.events if e.kind == kind]

    def heard_ulaw(self) -> bytes:
        """The agent audio that actually played (silence where nothing played)."""
        return bytes(self.agent_track)

    def received_ulaw(self) -> bytes:
        """The agent audio as it arrived, in order: what the server sent, byte for byte.

        Unlike :meth:`heard_ulaw` it has no silence where playback ran dry (a slow flow on a loaded machine)
        and keeps what a ``clear`` dropped before it played, so it answers "what did the agent send?".
        """
        return bytes(self.agent_received)

    @property
    def playback_buffered_seconds(self) -> float:
        return self._playback_bytes / 8000

    def save_wav(self, path: str | Path) -> Path:
        """Stereo 16-bit WAV: left = what the caller sent, right = what the phone played."""
        path = Path(path)
        n = min(len(self.caller_track), len(self.agent_track))
        left = ulaw_to_pcm16(bytes(self.caller_track[:n]))
        right = ulaw_to_pcm16(bytes(self.agent_track[:n]))
        stereo = np.empty(2 * n, dtype="<i2")
        stereo[0::2], stereo[1::2] = left, right
        with wave.open(str(path), "wb") as wav:
            wav.setnchannels(2)
            wav.setsampwidth(2)
            wav.setframerate(8000)
            wav.writeframes(stereo.tobytes())
        return path

    # ================================================================================ loop thread
    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            raise RuntimeError("phone is not connected")
        loop.call_soon_threadsafe(fn, *args)

    def add_listener(self, listener: Callable[[PhoneEvent], None]) -> None:
        """Call ``listener(event)`` for every phone event (on the phone's thread: keep it quick)."""
        self._listeners.append(listener)

    def _emit(self, kind: str, **data: Any) -> None:
        event = PhoneEvent(kind, time.monotonic(), data)
        with self._events_cond:
            self.events.append(event)
            self._events_cond.notify_all()
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("phone event listener failed")

    def _start_shutdown(self) -> None:
        """Loop side: begin the shutdown, unless the loop is already winding down.

        Once ``_run_loop`` is past ``_main`` it cancels and awaits what is left and closes the loop; a shutdown
        task created then could be dropped by ``loop.close()`` before its first step, leaving its coroutine
        never awaited (a RuntimeWarning at exit). Both run on the loop thread, so the flag is race-free.
        """
        if not self._winding_down:
            asyncio.ensure_future(self._shutdown())

    def _run_loop(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            self._winding_down = True  # from here on close() has nothing to start: this block cleans up
            leftovers = asyncio.all_tasks(loop)  # e.g. a shutdown scheduled as the call ended by itself
            for task in leftovers:
                task.cancel()
            if leftovers:
                loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _main(self) -> None:
        try:
            self._ws = await connect(
                self.url, additional_headers=self.headers or None, open_timeout=5, max_size=2**20, ping_interval=None,
                close_timeout=2,
            )
        except websockets.exceptions.InvalidStatus as exc:
            status = exc.response.status_code
            body = bytes(exc.response.body or b"")[:200].decode("utf-8", "replace").strip()
            self._connect_error = PhoneRejected(
                status, f"server refused the stream upgrade with HTTP {status}" + (f": {body}" if body else "")
            )
        except Exception as exc:
            self._connect_error = PhoneRejected(None, f"could not connect: {exc}")
        if self._connect_error is not None:
            self._closed.set()
            self._connected.set()
            return
        ws = self._ws
        assert ws is not None
        for message in self.codec.opening():
            await ws.send(message)
        self._t0 = time.monotonic()
        self._connected.set()
        self._tasks = [asyncio.ensure_future(self._ticker()), asyncio.ensure_future(self._receiver())]
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _send(self, message: str) -> None:
        ws = self._ws
        if ws is None or self._closed.is_set():
            return
        try:
            await ws.send(message)
        except websockets.exceptions.ConnectionClosed:
            self._mark_closed()

    def _send_soon(self, message: str) -> None:
        asyncio.ensure_future(self._send(message))

    async def _receiver(self) -> None:
        ws = self._ws
        assert ws is not None
        try:
            async for message in ws:
                try:
                    parsed = self.codec.parse(message)
                except (CarrierViolation, ValueError) as exc:
                    self.violations.append(str(exc))
                    self._emit("violation", error=str(exc))
                    continue
                self._on_server_message(parsed)
        except websockets.exceptions.ConnectionClosed:
            pass
        finally:
            self.close_code = ws.close_code
            self._mark_closed()

    def _on_server_message(self, message: Any) -> None:
        now = time.monotonic()
        if isinstance(message, ServerMedia):
            payload = message.payload
            self.media_messages += 1
            self.media_bytes += len(payload)
            if self._in_utterance and self._playback_bytes == 0 and self._dry_since is not None:
                self.underruns.append(now - self._dry_since)
            self._dry_since = None
            self._in_utterance = True
            self._playback.append(payload)
            self._playback_bytes += len(payload)
            if len(self.agent_received) < self.max_record_bytes:
                self.agent_received += payload
            self._emit("media", bytes=len(payload))
        elif isinstance(message, ServerMark):
            self._emit("mark", name=message.name)
            if not self._playback:
                self._echo_mark(message.name)
            else:
                self._playback.append(message.name)
        elif isinstance(message, ServerClear):
            pending = [item for item in self._playback if isinstance(item, str)]
            dropped = self._playback_bytes
            self._playback.clear()
            self._playback_bytes = 0
            self._in_utterance = False
            self._dry_since = None
            self._close_segment("clear")
            self._emit("clear", dropped_bytes=dropped, pending_marks=len(pending))
            if self.codec.echoes_marks_on_clear:
                for name in pending:
                    self._echo_mark(name)
            ack = self.codec.clear_ack()
            if ack is not None:
                self._send_soon(ack)
            if self._playing:
                self._playing = False
                self._emit("playback_end", cleared=True)
        elif isinstance(message, ServerDtmf):
            self._emit("dtmf_out", digits=message.digits)

    def _echo_mark(self, name: str) -> None:
        segment = self._segment
        if segment is not None:
            segment.marks.append((len(segment.audio), name))
        self._in_utterance = False  # a mark ends an utterance: silence after it is not an underrun
        self._dry_since = None
        self.marks_echoed.append(name)
        self._emit("mark_echoed", name=name)
        self._send_soon(self.codec.mark_echo(name))

    async def _ticker(self) -> None:
        """Every 20 ms: send one caller frame, play one agent frame, echo reached marks."""
        next_tick = time.monotonic()
        while not self._closed.is_set():
            now = time.monotonic()
            if now < next_tick:
                await asyncio.sleep(next_tick - now)
            next_tick += FRAME_INTERVAL
            behind = time.monotonic() - next_tick
            if behind > 0.1:  # we fell far behind (stalled machine): resynchronise rather than burst
                next_tick = time.monotonic() + FRAME_INTERVAL
            await self._tick()

    async def _tick(self) -> None:
        # --- caller side
        frame = self._next_caller_frame()
        if frame is not None:
            self._chunk += 1
            timestamp = int((self._chunk - 1) * 20)
            self.frames_sent += 1
            if len(self.caller_track) < self.max_record_bytes:
                self.caller_track += frame
            await self._send(self.codec.media(frame, self._chunk, timestamp))
        # --- agent side
        played = self._play_frame()
        if len(self.agent_track) < self.max_record_bytes:
            self.agent_track += played
        self._listen(played)

    def _next_caller_frame(self) -> bytes | None:
        while self._caller:
            utterance = self._caller[0]
            if self._caller_offset == 0:
                utterance.start_time = time.monotonic()
                utterance.started.set()
                self._emit("caller_speech_start", seconds=utterance.duration)
            frame = utterance.audio[self._caller_offset : self._caller_offset + FRAME_BYTES]
            self._caller_offset += FRAME_BYTES
            if self._caller_offset >= len(utterance.audio):
                self._caller.popleft()
                self._caller_offset = 0
                utterance.end_time = time.monotonic() + FRAME_INTERVAL
                utterance.finished.set()
                self._emit("caller_speech_end")
            if not frame:
                continue
            if len(frame) < FRAME_BYTES:
                frame += SILENCE_FRAME[: FRAME_BYTES - len(frame)]
            return frame
        if self.caller_source is not None:
            generated = self.caller_source(self._chunk)
            if generated:
                return generated[:FRAME_BYTES].ljust(FRAME_BYTES, b"\xff")
        return SILENCE_FRAME if self.send_silence else None

    def _play_frame(self) -> bytes:
        need = FRAME_BYTES
        parts: list[bytes] = []
        playback = self._playback
        while playback and isinstance(playback[0], str):  # marks whose audio already played
            self._echo_mark(playback.popleft())  # type: ignore[arg-type]
        while need and playback:
            head = playback[0]
            if isinstance(head, str):
                break
            take = head[:need]
            parts.append(take)
            self._add_heard(take)  # before the marks that follow it, so their offsets are exact
            need -= len(take)
            self._playback_bytes -= len(take)
            if len(take) == len(head):
                playback.popleft()
            else:
                playback[0] = head[len(take) :]
        while playback and isinstance(playback[0], str):
            self._echo_mark(playback.popleft())  # type: ignore[arg-type]
        if parts and not self._playing:
            self._playing = True
            self._emit("playback_start")
        if parts:
            self._frame_had_audio = True
        else:
            self._frame_had_audio = False
            self._close_segment("dry")
            if self._playing:
                self._playing = False
                self._emit("playback_end", cleared=False)
            if self._in_utterance and self._dry_since is None:
                self._dry_since = time.monotonic()
            return SILENCE_FRAME
        if need:
            parts.append(SILENCE_FRAME[:need])
            if self._in_utterance and self._dry_since is None:
                self._dry_since = time.monotonic()
        return b"".join(parts)

    # ================================================================================ listening (loop thread)
    _frame_had_audio = False

    def _listen(self, played: bytes) -> None:
        level = frame_level(played) if self._frame_had_audio else 0.0
        self.played_frames.append(PlayedFrame(time.monotonic(), level, self._frame_had_audio))
        if self._tone_detector is not None:
            self._tone_detector.process(played)

    def _on_tone(self, digit: str) -> None:
        self.tones_heard += digit
        self._emit("dtmf_tone", digit=digit)

    def _add_heard(self, part: bytes) -> None:
        segment = self._segment
        if segment is None:
            segment = self._segment = HeardSegment(time.monotonic())
            self.heard.append(segment)
        if self._heard_bytes < self.max_record_bytes:
            segment.audio += part
            self._heard_bytes += len(part)

    def _close_segment(self, how: str) -> None:
        segment = self._segment
        if segment is not None:
            segment.ended, segment.ended_at = how, time.monotonic()
            self._segment = None

    def heard_log(self) -> list[HeardSegment]:
        """The heard log so far (see :class:`HeardSegment`), oldest first."""
        return list(self.heard)

    def heard_audio(self) -> bytes:
        """All agent audio the phone played, concatenated, without the silence it filled in itself."""
        return b"".join(bytes(segment.audio) for segment in self.heard)

    def levels(self, after: float = 0.0, before: float = float("inf")) -> list[PlayedFrame]:
        """Per-tick playback levels between two monotonic times (see :class:`PlayedFrame`)."""
        return [f for f in list(self.played_frames) if after <= f.at < before]

    def wait_for_tones(self, digits: str, timeout: float = 10.0) -> str:
        """Block until the decoded in-band digits end with ``digits``; returns everything decoded so far."""
        self.wait_for("dtmf_tone", timeout, lambda _e: self.tones_heard.endswith(digits))
        return self.tones_heard

    def _mark_closed(self) -> None:
        if not self._closed.is_set():
            # Record the close code *before* announcing the close: a send that fails can notice the closed
            # socket before the receiver does, and waiters read close_code as soon as wait_closed() returns.
            if self.close_code is None and self._ws is not None:
                self.close_code = self._ws.close_code
            self._closed.set()
            self._emit("closed", code=self.close_code)

    async def _hangup(self) -> None:
        stop = self.codec.stop()
        if stop is not None:
            await self._send(stop)
        if self._ws is not None:
            await self._ws.close()

    async def _shutdown(self) -> None:
        if self._ws is not None and not self._closed.is_set():
            try:
                await asyncio.wait_for(self._ws.close(), 2)
            except Exception:
                pass
        self._mark_closed()
        for task in self._tasks:
            task.cancel()
