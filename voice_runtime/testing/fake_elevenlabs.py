"""A fake ElevenLabs on loopback: real HTTP and real WebSockets speaking the documented protocol.

Why a fake server and not mocks: the things that break in production are on the wire — status codes that
must be checked before a body is treated as audio, chunk timing, sockets that die mid-utterance, both
committed-transcript variants, keepalive timeouts. Only a real socket exercises our client's handling of
those, so tests and benchmarks point the providers' ``base_url`` here.

Two listeners, one event loop in one background thread:

* **HTTP** (uvicorn serving a tiny raw ASGI app, no framework): ``POST /v1/text-to-speech/{voice}/stream``
  (and the non-streaming ``POST /v1/text-to-speech/{voice}``) stream audio at a controllable rate in the
  requested ``output_format`` (``ulaw_8000``, ``pcm_8000``/``pcm_16000``, or ``mp3_*`` if ffmpeg is
  installed); ``GET /v1/models`` answers for warm-up. The app watches for the client going away, so a test
  can assert that barge-in really closed the stream.
* **WebSocket** (``websockets``): ``/v1/speech-to-text/realtime`` (Scribe realtime) and
  ``/v1/text-to-speech/{voice}/stream-input``. A separate listener because only a raw ``websockets``
  server can *abort* a TCP connection with no close frame, which is how a network failure looks.

The STT side needs something to "recognise". :func:`encode_text_as_speech` turns text into loud μ-law frames
(one 20 ms frame per character) that the fake decodes back, so a transcript is whole only if every frame of
the utterance reached one server session in order — which is exactly what a reconnect test must prove.
Ordinary audio (e.g. a tone) is segmented by an energy VAD and transcribed from ``stt_script``.

Everything the fake receives is recorded (:class:`TtsRecord`, :class:`SttRecord`); cues (``fail_tts``,
``stt_kill``, ``stt_error``, ``reject_stt`` ...) are thread-safe and take effect on the fake's loop.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import shutil
import subprocess
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import orjson
import websockets
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from voice_runtime.audio.g711 import pcm16_to_ulaw
from voice_runtime.providers.mock import frame_level, tone_speech
from voice_runtime.testing.speech_timing import DEFAULT_CHARS_PER_SECOND, DEFAULT_MIN_SECONDS, paced_due, speech_seconds

__all__ = [
    "FakeElevenLabs",
    "SttRecord",
    "TtsRecord",
    "decode_speech_text",
    "encode_text_as_speech",
    "ffmpeg_available",
]

log = logging.getLogger(__name__)

FRAME = 160  # 20 ms of μ-law at 8 kHz
_MAGIC = bytes([0x81, 0x82, 0x83, 0x84])
_SPEECH_LEVEL = 500.0


def encode_text_as_speech(text: str) -> bytes:
    """μ-law "speech" carrying ``text``: one loud 20 ms frame per ASCII character.

    Every byte is in 0x80-0x8F (|sample| > 15000), so any energy VAD calls it speech.
    """
    out = bytearray()
    for char in text:
        code = ord(char) & 0x7F
        hi, lo = 0x80 + (code >> 4), 0x80 + (code & 0x0F)
        out += _MAGIC + bytes([hi]) * 78 + bytes([lo]) * 78
    return bytes(out)


def decode_speech_text(audio: bytes) -> str:
    """Inverse of :func:`encode_text_as_speech` over 160-byte-aligned audio; other frames are skipped."""
    chars: list[str] = []
    for start in range(0, len(audio) - FRAME + 1, FRAME):
        if audio[start : start + 4] == _MAGIC:
            chars.append(chr(((audio[start + 4] - 0x80) << 4) | (audio[start + 82] - 0x80)))
    return "".join(chars)


def ffmpeg_available() -> bool:
    return shutil.which("ffmpeg") is not None


@dataclass(eq=False)
class TtsRecord:
    """One TTS request as the fake saw it (HTTP stream or stream-input socket)."""

    kind: str  # "http" | "ws"
    voice_id: str
    query: dict[str, str]
    body: dict[str, Any] = field(default_factory=dict)
    status: int = 200
    client: tuple[str, int] | None = None  # the client's address: equal ports = a reused pooled connection
    started_at: float = field(default_factory=time.monotonic)
    first_byte_at: float | None = None
    bytes_sent: int = 0
    completed: bool = False  # the whole audio was sent
    client_gone: bool = False  # the client disconnected before the end (barge-in)
    close_code: int | None = None  # ws only: the client's close code
    texts: list[str] = field(default_factory=list)  # ws only: text messages
    flushes: int = 0
    keepalives: int = 0
    ended: threading.Event = field(default_factory=threading.Event)


@dataclass(eq=False)
class SttRecord:
    """One realtime STT session as the fake saw it."""

    query: dict[str, str]
    api_key: str | None
    audio: bytearray = field(default_factory=bytearray)
    chunks: int = 0
    empty_chunks: int = 0  # keepalives
    commits_requested: int = 0
    previous_texts: list[str] = field(default_factory=list)
    partials: list[str] = field(default_factory=list)
    commits: list[str] = field(default_factory=list)
    opened_at: float = field(default_factory=time.monotonic)
    closed: threading.Event = field(default_factory=threading.Event)
    close_code: int | None = None
    killed: bool = False
    ws: ServerConnection | None = field(default=None, repr=False)


class _Segmenter:
    """Energy VAD over 160-byte frames (audio time): speech start, periodic partials, commit after silence."""

    def __init__(self, silence_secs: float) -> None:
        self.silence_frames = max(1, round(silence_secs / 0.02))
        self.pending = bytearray()
        self.segment = bytearray()
        self.in_speech = False
        self.quiet = 0
        self.speech_frames = 0

    def feed(self, audio: bytes) -> Iterable[tuple[str, bytes]]:
        """Yields ("frame", segment_so_far) on each speech frame and ("commit", segment) at its end."""
        self.pending += audio
        while len(self.pending) >= FRAME:
            frame = bytes(self.pending[:FRAME])
            del self.pending[:FRAME]
            loud = frame_level(frame) >= _SPEECH_LEVEL
            if loud:
                self.in_speech = True
                self.quiet = 0
                self.segment += frame
                self.speech_frames += 1
                yield "frame", bytes(self.segment)
            elif self.in_speech:
                self.quiet += 1
                if self.quiet >= self.silence_frames:
                    yield "commit", self.take()

    def take(self) -> bytes:
        segment = bytes(self.segment)
        self.segment.clear()
        self.in_speech, self.quiet, self.speech_frames = False, 0, 0
        return segment


_MP3_BITRATES = {"mp3_22050_32": 32, "mp3_24000_48": 48, "mp3_44100_32": 32, "mp3_44100_64": 64, "mp3_44100_96": 96, "mp3_44100_128": 128, "mp3_44100_192": 192}


class FakeElevenLabs:
    """The fake service. Use as a context manager; read ``http_url`` / ``ws_url`` for the providers."""

    def __init__(
        self,
        api_key: str = "test-key",
        *,
        tts_realtime_factor: float | None = 4.0,
        tts_chunk_bytes: int = FRAME,
        tts_first_byte_delay: float = 0.0,
        tts_chars_per_second: float = DEFAULT_CHARS_PER_SECOND,
        tts_min_seconds: float = DEFAULT_MIN_SECONDS,
        stream_input_timeout: float = 20.0,
        stt_partial_every: int = 5,
        stt_both_committed: bool = False,
        stt_script: Iterable[str] = (),
    ) -> None:
        self.api_key = api_key
        self.tts_realtime_factor = tts_realtime_factor  # audio seconds streamed per wall second; None = no pacing
        self.tts_chunk_bytes = tts_chunk_bytes
        self.tts_first_byte_delay = tts_first_byte_delay
        self.tts_chars_per_second = tts_chars_per_second
        self.tts_min_seconds = tts_min_seconds
        self.stream_input_timeout = stream_input_timeout
        self.stt_partial_every = stt_partial_every
        self.stt_both_committed = stt_both_committed
        self.stt_script: deque[str] = deque(stt_script)
        self.tts_requests: list[TtsRecord] = []
        self.stt_sessions: list[SttRecord] = []
        self.stt_rejected = 0
        self._tts_failures: deque[tuple[int, Any]] = deque()
        self._stt_rejects: deque[int] = deque()
        self._cond = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._start_error: BaseException | None = None
        self._audio_cache: dict[tuple[float, str], tuple[bytes, float]] = {}
        self.http_port = 0
        self.ws_port = 0

    # ================================================================================ lifecycle
    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}"

    def start(self, timeout: float = 10.0) -> FakeElevenLabs:
        self._thread = threading.Thread(target=self._run, name="fake-elevenlabs", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("fake ElevenLabs did not start in time")
        if self._start_error is not None:
            raise RuntimeError(f"fake ElevenLabs failed to start: {self._start_error}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:
                pass
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> FakeElevenLabs:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # pragma: no cover - surfaced through start()
            self._start_error = exc
            self._ready.set()

    async def _main(self) -> None:
        import socket

        import uvicorn

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.http_port = sock.getsockname()[1]
        config = uvicorn.Config(self._asgi, interface="asgi3", lifespan="off", log_level="warning", access_log=False)
        http = uvicorn.Server(config)
        http.install_signal_handlers = lambda: None  # type: ignore[attr-defined]  # older uvicorn installs them
        http_task = asyncio.create_task(http.serve(sockets=[sock]))
        async with websockets.serve(
            self._ws_handler, "127.0.0.1", 0, process_request=self._process_request, max_size=2**24, ping_interval=None
        ) as ws_server:
            self.ws_port = ws_server.sockets[0].getsockname()[1]
            while not http.started and not http_task.done():
                await asyncio.sleep(0.005)
            self._ready.set()
            await self._stop.wait()
            http.should_exit = True
            for record in list(self.stt_sessions):
                if record.ws is not None:
                    record.ws.transport.abort()
        await asyncio.wait_for(http_task, 10)

    # ================================================================================ waiting / cues
    def _changed(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Block until ``predicate()`` holds (re-checked whenever the fake records something)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
            return True

    def _on_loop(self, fn: Callable[[], Any]) -> None:
        assert self._loop is not None, "fake not started"
        self._loop.call_soon_threadsafe(fn)

    def fail_tts(self, status: int, error: Any = None, *, times: int = 1) -> None:
        """The next ``times`` TTS requests get ``status`` with a JSON error body (ElevenLabs' ``detail`` shape)."""
        if error is None:
            error = {"detail": {"status": HTTPStatus(status).phrase.lower().replace(" ", "_"), "message": HTTPStatus(status).phrase}}
        for _ in range(times):
            self._tts_failures.append((status, error))

    def reject_stt(self, times: int = 1, status: int = 503) -> None:
        """Refuse the next ``times`` STT WebSocket handshakes with an HTTP ``status``."""
        for _ in range(times):
            self._stt_rejects.append(status)

    @property
    def open_stt_sessions(self) -> list[SttRecord]:
        return [r for r in self.stt_sessions if not r.closed.is_set()]

    def stt_kill(self) -> None:
        """Abort every open STT socket at the TCP level: no close frame (a network failure)."""

        def kill() -> None:
            for record in self.open_stt_sessions:
                if record.ws is not None:
                    record.killed = True
                    record.ws.transport.abort()

        self._on_loop(kill)

    def stt_close(self, code: int = 1000, reason: str = "") -> None:
        """Close every open STT socket cleanly with ``code`` (e.g. the service's idle close)."""
        self._on_loop(lambda: [asyncio.ensure_future(r.ws.close(code, reason)) for r in self.open_stt_sessions if r.ws])

    def stt_send(self, message: dict[str, Any]) -> None:
        """Send a raw server message to every open STT session (e.g. a stale partial)."""
        text = json.dumps(message)
        self._on_loop(lambda: [asyncio.ensure_future(self._safe_send(r.ws, text)) for r in self.open_stt_sessions if r.ws])

    def stt_error(self, message_type: str, error: str = "", *, close_code: int | None = 1008) -> None:
        """Send an error message (``auth_error``, ``quota_exceeded``, ``transcriber_error`` ...), then close."""

        async def send(ws: ServerConnection) -> None:
            await self._safe_send(ws, json.dumps({"message_type": message_type, "error": error or message_type}))
            if close_code is not None:
                await ws.close(close_code, message_type)

        self._on_loop(lambda: [asyncio.ensure_future(send(r.ws)) for r in self.open_stt_sessions if r.ws])

    @staticmethod
    async def _safe_send(ws: ServerConnection | None, text: str) -> None:
        if ws is None:
            return
        try:
            await ws.send(text)
        except websockets.ConnectionClosed:
            pass

    # ================================================================================ audio
    def tts_seconds(self, text: str) -> float:
        return speech_seconds(text, chars_per_second=self.tts_chars_per_second, min_seconds=self.tts_min_seconds)

    def _audio(self, text: str, output_format: str) -> tuple[bytes, float]:
        """(audio bytes, bytes per second of audio) for ``text`` in ``output_format``, made once per duration.

        Why cached: a load benchmark asks for the same few utterances thousands of times, and making each anew
        was a fifth of the fake's CPU on the machine it shares with the runtime (MP3 also runs ffmpeg). Bounded:
        durations are rounded to 10 ms, but texts are not limited."""
        key = (round(self.tts_seconds(text), 2), output_format)
        made = self._audio_cache.get(key)
        if made is None:
            made = self._make_audio(*key)
            if len(self._audio_cache) >= 512:
                self._audio_cache.pop(next(iter(self._audio_cache)))
            self._audio_cache[key] = made
        return made

    def _make_audio(self, seconds: float, output_format: str) -> tuple[bytes, float]:
        if output_format == "ulaw_8000":
            return pcm16_to_ulaw(tone_speech(seconds)), 8000.0
        if output_format in ("pcm_8000", "pcm_16000"):
            rate = int(output_format.split("_")[1])
            return tone_speech(seconds, rate=rate).astype("<i2").tobytes(), 2.0 * rate
        if output_format in _MP3_BITRATES:
            kbps = _MP3_BITRATES[output_format]
            return self._encode_mp3(tone_speech(seconds), kbps, int(output_format.split("_")[1])), kbps * 1000 / 8
        raise ValueError(f"unsupported output_format {output_format!r}")

    @staticmethod
    def _encode_mp3(pcm8k: np.ndarray, kbps: int, rate: int) -> bytes:
        if not ffmpeg_available():
            raise ValueError("mp3 output needs ffmpeg on the fake's host")
        proc = subprocess.run(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "s16le", "-ar", "8000", "-ac", "1", "-i", "pipe:0",
             "-ar", str(rate), "-b:a", f"{kbps}k", "-f", "mp3", "pipe:1"],
            input=pcm8k.astype("<i2").tobytes(), capture_output=True, timeout=30, check=True,
        )
        return proc.stdout

    async def _pace(self, t0: float, sent: int, bytes_per_second: float) -> None:
        delay = paced_due(t0, sent, bytes_per_second, self.tts_realtime_factor) - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    # ================================================================================ HTTP (raw ASGI)
    async def _asgi(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path: str = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        parts = path.strip("/").split("/")
        if headers.get("xi-api-key") != self.api_key:
            await self._json(send, 401, {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}})
            return
        if scope["method"] == "GET" and path == "/v1/models":
            await self._json(send, 200, [{"model_id": "eleven_flash_v2_5"}])
            return
        if scope["method"] != "POST" or len(parts) < 3 or parts[:2] != ["v1", "text-to-speech"] or parts[3:] not in ([], ["stream"]):
            await self._json(send, 404, {"detail": "Not Found"})
            return
        record = TtsRecord("http", parts[2], query, client=tuple(scope["client"]) if scope.get("client") else None)
        with self._cond:
            self.tts_requests.append(record)
        try:
            await self._serve_tts(record, body, query, receive, send)
        finally:
            record.ended.set()
            self._changed()

    async def _serve_tts(self, record: TtsRecord, body: bytes, query: dict[str, str], receive: Any, send: Any) -> None:
        if self._tts_failures:
            status, error = self._tts_failures.popleft()
            record.status = status
            await self._json(send, status, error)
            return
        try:
            record.body = json.loads(body or b"{}")
            text = record.body["text"]
            audio, rate = self._audio(text, query.get("output_format", "mp3_44100_128"))
        except (ValueError, KeyError, TypeError) as exc:
            record.status = 422
            await self._json(send, 422, {"detail": {"status": "invalid_request", "message": str(exc)}})
            return
        gone = asyncio.Event()

        async def watch() -> None:
            while True:
                if (await receive())["type"] == "http.disconnect":
                    gone.set()
                    return

        watcher = asyncio.create_task(watch())
        content_type = "audio/mpeg" if query.get("output_format", "").startswith("mp3") else "audio/basic"
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", content_type.encode())]})
            if self.tts_first_byte_delay:
                await asyncio.sleep(self.tts_first_byte_delay)
            t0 = time.monotonic()
            step = max(1, self.tts_chunk_bytes)
            for start in range(0, len(audio), step):
                await self._pace(t0, start, rate)
                if gone.is_set():
                    record.client_gone = True
                    return
                chunk = audio[start : start + step]
                if record.first_byte_at is None:
                    record.first_byte_at = time.monotonic()  # stamped before the bytes can reach the client
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                record.bytes_sent += len(chunk)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            record.completed = not gone.is_set()
            record.client_gone = gone.is_set()
        except OSError:
            record.client_gone = True
        finally:
            watcher.cancel()

    @staticmethod
    async def _json(send: Any, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": data, "more_body": False})

    # ================================================================================ WebSocket
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path.startswith("/v1/speech-to-text/realtime") and self._stt_rejects:
            status = self._stt_rejects.popleft()
            self.stt_rejected += 1
            self._changed()
            return connection.respond(HTTPStatus(status), f"{HTTPStatus(status).phrase}\n")
        return None

    async def _ws_handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        split = urlsplit(ws.request.path)
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        parts = split.path.strip("/").split("/")
        if split.path == "/v1/speech-to-text/realtime":
            await self._stt_session(ws, query)
        elif len(parts) == 4 and parts[:2] == ["v1", "text-to-speech"] and parts[3] == "stream-input":
            await self._stream_input(ws, parts[2], query)
        else:
            await ws.close(1008, "unknown path")

    # --- realtime STT -------------------------------------------------------------------------------
    async def _stt_session(self, ws: ServerConnection, query: dict[str, str]) -> None:
        key = ws.request.headers.get("xi-api-key") if ws.request else None
        record = SttRecord(query, key, ws=ws)
        with self._cond:
            self.stt_sessions.append(record)
        self._changed()
        try:
            if key != self.api_key and query.get("token") != self.api_key:
                await ws.send(json.dumps({"message_type": "auth_error", "error": "You must be authenticated to use this endpoint."}))
                await ws.close(1008, "auth_error")
                return
            await ws.send(json.dumps({"message_type": "session_started", "session_id": uuid.uuid4().hex, "config": {
                "sample_rate": 8000, "audio_format": query.get("audio_format"), "language_code": query.get("language_code"),
                "commit_strategy": query.get("commit_strategy", "manual"), "model_id": query.get("model_id"),
            }}))
            both = self.stt_both_committed or query.get("include_timestamps") == "true" or query.get("include_language_detection") == "true"
            vad = query.get("commit_strategy") == "vad"
            segmenter = _Segmenter(float(query.get("vad_silence_threshold_secs", "1.5")))
            async for raw in ws:
                if isinstance(raw, bytes):
                    await ws.send(json.dumps({"message_type": "input_error", "error": "binary frames are not supported"}))
                    continue
                try:
                    message = orjson.loads(raw)  # the audio path: one message per 20-100 ms per session
                    audio = base64.b64decode(message.get("audio_base_64") or "", validate=True)
                except (ValueError, TypeError):
                    await ws.send(json.dumps({"message_type": "input_error", "error": "invalid message"}))
                    continue
                if message.get("message_type") != "input_audio_chunk":
                    continue
                if message.get("previous_text"):
                    record.previous_texts.append(message["previous_text"])
                record.chunks += 1
                record.empty_chunks += not audio
                record.audio += audio
                for event, segment in segmenter.feed(audio) if vad else ():
                    if event == "frame" and segmenter.speech_frames % self.stt_partial_every == 1:
                        text = decode_speech_text(segment) or "..."
                        record.partials.append(text)
                        await ws.send(json.dumps({"message_type": "partial_transcript", "text": text}))
                    elif event == "commit":
                        await self._commit(ws, record, segment, both)
                if not vad and message.get("commit"):
                    record.commits_requested += 1
                    await self._commit(ws, record, bytes(record.audio), both)
                self._changed()
        except websockets.ConnectionClosed:
            pass
        finally:
            record.close_code = ws.close_code
            record.closed.set()
            self._changed()

    async def _commit(self, ws: ServerConnection, record: SttRecord, segment: bytes, both: bool) -> None:
        text = decode_speech_text(segment).strip()
        if not text:
            text = self.stt_script.popleft() if self.stt_script else f"speech of {len(segment) / 8000:.2f} seconds"
        record.commits.append(text)
        await ws.send(json.dumps({"message_type": "committed_transcript", "text": text}))
        if both:
            words = [{"text": w, "start": 0.0, "end": 0.0, "type": "word"} for w in text.split()]
            await ws.send(json.dumps({"message_type": "committed_transcript_with_timestamps", "text": text, "language_code": "en", "words": words}))

    # --- stream-input TTS ---------------------------------------------------------------------------
    async def _stream_input(self, ws: ServerConnection, voice_id: str, query: dict[str, str]) -> None:
        record = TtsRecord("ws", voice_id, query)
        with self._cond:
            self.tts_requests.append(record)
        self._changed()
        output_format = query.get("output_format", "mp3_44100_128")
        timeout = float(query.get("inactivity_timeout", self.stream_input_timeout))
        jobs: asyncio.Queue[str | None] = asyncio.Queue()

        async def speak() -> None:
            while (text := await jobs.get()) is not None:
                audio, rate = self._audio(text, output_format)
                step = max(1, self.tts_chunk_bytes)
                job_t0 = time.monotonic()
                for start in range(0, len(audio), step):
                    await self._pace(job_t0, start, rate)
                    if record.first_byte_at is None:
                        record.first_byte_at = time.monotonic()
                    await ws.send(json.dumps({"audio": base64.b64encode(audio[start : start + step]).decode(), "alignment": None, "normalizedAlignment": None}))
                    record.bytes_sent += len(audio[start : start + step])
                    self._changed()
            await ws.send(json.dumps({"isFinal": True}))
            record.completed = True
            await ws.close(1000)

        speaker = asyncio.create_task(speak())
        buffer = ""
        schedule = [120]
        first = True
        try:
            auth_ok = ws.request is not None and ws.request.headers.get("xi-api-key") == self.api_key
            while True:
                try:
                    raw = await asyncio.wait_for(ws.recv(), timeout)
                except asyncio.TimeoutError:
                    await ws.send(json.dumps({
                        "message": f"Have not received a new text input within the timeout of {timeout} seconds. "
                        'Streaming input requires you to send the end of input text (empty string "") when done.',
                        "error": "input_timeout_exceeded", "code": 1008}))
                    await ws.close(1008, "input_timeout_exceeded")
                    return
                message = json.loads(raw)
                if first:
                    first = False
                    auth_ok = auth_ok or message.get("xi-api-key") == self.api_key
                    if not auth_ok:
                        await ws.send(json.dumps({"message": "Invalid API key", "error": "auth_error", "code": 1008}))
                        await ws.close(1008, "auth_error")
                        return
                    schedule = list((message.get("generation_config") or {}).get("chunk_length_schedule") or schedule)
                    record.body = message
                    continue
                text = message.get("text")
                if text == "":
                    if buffer.strip():
                        jobs.put_nowait(buffer)
                    buffer = ""
                    jobs.put_nowait(None)
                    await speaker
                    return
                if text is not None and not text.strip():
                    record.keepalives += 1
                elif text:
                    record.texts.append(text)
                    buffer += text
                if message.get("flush"):
                    record.flushes += 1
                if buffer.strip() and (message.get("flush") or len(buffer) >= schedule[0]):
                    jobs.put_nowait(buffer)
                    buffer = ""
                self._changed()
        except websockets.ConnectionClosed:
            record.client_gone = not record.completed
        finally:
            if not speaker.done():
                speaker.cancel()
                record.client_gone = True
            await asyncio.gather(speaker, return_exceptions=True)
            try:
                await asyncio.wait_for(ws.wait_closed(), 5)
            except Exception:  # pragma: no cover
                pass
            rcvd = ws.protocol.close_rcvd
            record.close_code = rcvd.code if rcvd is not None else None
            record.ended.set()
            self._changed()
