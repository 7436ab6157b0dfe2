"""ElevenLabs realtime Scribe speech-to-text over one persistent WebSocket per call, with lossless reconnect.

Why our own ``websockets`` client and not the SDK's ``speech_to_text.realtime``: the SDK has no reconnect,
dispatches every error twice (the specific event *and* ``error`` — the prior art's double ``on_error`` and
double reconnect), silently ignores coroutine callbacks, swallows handler exceptions with ``print`` and
sends ``previous_text: null`` on every chunk. What this module needs — owning the socket's lifetime, knowing
exactly which audio the server has and has not committed, replaying it after a reconnect — is easiest to get
right with a client we write on ``websockets`` (the same library the SDK uses). The base URL is configurable
(``base_url="http://127.0.0.1:PORT"`` becomes ``ws://``), which is how tests reach the loopback fake.

How audio is never lost
-----------------------
Three tasks, all owned and awaited by :meth:`stop`:

* **intake** drains the session's inbound queue *continuously*, connected or not, into ``pending``;
* **supervisor** connects, runs one connection, and on an abnormal close, a plain close, or a retryable
  error reconnects with bounded exponential backoff (first retry immediate, then ``backoff_initial``·2ⁿ up to
  ``backoff_max``, ±20 % jitter, ``max_reconnect_attempts`` consecutive failures before giving up);
* per connection, a **sender** moves chunks from ``pending`` to ``sent`` and onto the wire, and a
  **receiver** handles transcripts.

``sent`` holds audio the server has received but not yet committed. When a connection dies, ``sent`` is put
back in front of ``pending`` and replayed on the next socket, so an utterance that straddles a socket kill
reaches the new session whole and in order. A commit trims ``sent`` (keeping a short tail in VAD mode,
because the server's commit point is a little behind our send point; the tail is post-utterance silence),
and while nobody is speaking only a lead-in of ``idle_replay_ms`` is kept, so a reconnect after a long
silence replays two seconds, not thirty.
``pending`` + ``sent`` together are bounded by ``replay_seconds`` (oldest dropped and counted in
``stats["audio_dropped_bytes"]``).

Transcripts
-----------
* ``partial_transcript`` → ``on_recognizing`` (stale repeats and echoes of the last commit are dropped).
* The first partial of an utterance → ``on_speech_started`` (barge-in), also while the agent speaks.
* ``committed_transcript`` / ``committed_transcript_with_timestamps`` → ``on_committed`` exactly once per
  utterance: the service sends both variants when timestamps or language detection are on, so the second
  variant with the same text is dropped.
* Echo: an utterance that *starts* within ``echo_discard_seconds`` after the agent stopped speaking is
  discarded (the tail of our own audio). While the agent speaks, speech counts as barge-in unless
  ``barge_in=False``, in which case it is discarded (the prior art's behaviour).

Errors: ``auth_error``, ``quota_exceeded``, ``unaccepted_terms``, ``invalid_request``, ``input_error`` (and a
401/403/4xx handshake) are fatal: ``on_error`` fires once and the provider stops. Everything else reconnects;
running out of attempts is reported once as ``reconnect_exhausted``.

Configuration is read per instance: ``ELEVENLABS_API_KEY``, ``STT_MODEL_ID`` (default
``scribe_v2_realtime``), ``STT_LANGUAGE_CODE`` (default ``en``), ``ELEVENLABS_BASE_URL``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlencode

import orjson

from voice_runtime.compat.names import deprecated_module_names, prior_art_class
from voice_runtime.errors import ConfigError
from voice_runtime.providers import ws_client as ws_client_module
from voice_runtime.providers.backoff import backoff_delay
from voice_runtime.providers.base import reads_its_queue_itself
from voice_runtime.providers.ws_client import ClientClosed, ClientSocket, HandshakeRejected
from voice_runtime.providers.elevenlabs_common import (
    PROVIDER,
    env_or,
    resolve_api_key,
    resolve_base_url,
    shared_ssl_context,
    to_ws_url,
)

__all__ = ["ElevenLabsRealtimeStt", "FATAL_STT_ERRORS", "RETRYABLE_STT_ERRORS"]

log = logging.getLogger(__name__)

FATAL_STT_ERRORS = frozenset({
    "auth_error", "quota_exceeded", "unaccepted_terms", "invalid_request", "input_error",
    "quota_exceeded_error", "unaccepted_terms_error", "auth_error_error",
})
RETRYABLE_STT_ERRORS = frozenset({
    "error", "transcriber_error", "queue_overflow", "resource_exhausted", "rate_limited", "chunk_size_exceeded",
    "session_time_limit_exceeded", "insufficient_audio_activity", "server_error",
})
_COMMITTED = ("committed_transcript", "committed_transcript_with_timestamps")


class _Commit:
    """Marker in the audio stream: a manual commit request (manual commit strategy)."""

    __slots__ = ()


_COMMIT = _Commit()

# The two fixed messages, encoded once: a keepalive (no protocol ping keeps a Scribe session alive) and a commit.
_KEEPALIVE_MESSAGE = orjson.dumps({"message_type": "input_audio_chunk", "audio_base_64": "", "commit": False, "sample_rate": 8000}).decode()
_COMMIT_MESSAGE = orjson.dumps({"message_type": "input_audio_chunk", "audio_base_64": "", "commit": True, "sample_rate": 8000}).decode()
_Item = bytes | _Commit


class _Outcome:
    ENDED, RETRY, FATAL = "ended", "retry", "fatal"


class ElevenLabsRealtimeStt:
    """Realtime Scribe STT for one call. Implements the ``SttProvider`` protocol plus ``on_speech_started``."""

    name = PROVIDER

    def __init__(
        self,
        api_key: str | None = None,
        language_code: str | None = None,
        *,
        model_id: str | None = None,
        base_url: str | None = None,
        commit_strategy: str = "vad",
        vad_silence_threshold_secs: float | None = 1.0,
        vad_threshold: float | None = 0.5,
        min_speech_duration_ms: int | None = 300,
        min_silence_duration_ms: int | None = None,
        keyterms: Iterable[str] = (),
        include_timestamps: bool = False,
        include_language_detection: bool = False,
        enable_logging: bool | None = None,
        previous_text: str | None = None,
        extra_params: Mapping[str, Any] | None = None,
        barge_in: bool = True,
        min_barge_in_chars: int = 1,
        echo_discard_seconds: float = 0.4,
        keepalive_interval: float = 10.0,
        max_chunk_ms: int = 100,
        min_chunk_ms: int = 20,
        replay_seconds: float = 30.0,
        commit_tail_ms: int = 200,
        idle_replay_ms: int = 2000,
        max_reconnect_attempts: int = 6,
        backoff_initial: float = 0.25,
        backoff_max: float = 8.0,
        stable_after: float = 5.0,
        connect_timeout: float = 10.0,
        close_timeout: float = 2.0,
        ws_client: str = "auto",
    ) -> None:
        self._api_key: str | None = env_or(api_key, "ELEVENLABS_API_KEY")  # checked at first use
        self.language_code = env_or(language_code, "STT_LANGUAGE_CODE", "en")
        self.model_id = str(env_or(model_id, "STT_MODEL_ID", "scribe_v2_realtime"))
        self.ws_base_url = to_ws_url(resolve_base_url(base_url))
        if commit_strategy not in ("vad", "manual"):
            raise ConfigError(f"commit_strategy must be 'vad' or 'manual', got {commit_strategy!r}")
        self.commit_strategy = commit_strategy
        _check_range("vad_silence_threshold_secs", vad_silence_threshold_secs, 0.3, 3.0)
        _check_range("vad_threshold", vad_threshold, 0.1, 0.9)
        _check_range("min_speech_duration_ms", min_speech_duration_ms, 50, 2000)
        _check_range("min_silence_duration_ms", min_silence_duration_ms, 50, 2000)
        self.vad = {
            "vad_silence_threshold_secs": vad_silence_threshold_secs,
            "vad_threshold": vad_threshold,
            "min_speech_duration_ms": min_speech_duration_ms,
            "min_silence_duration_ms": min_silence_duration_ms,
        }
        self.keyterms = [str(k) for k in keyterms]
        if len(self.keyterms) > 50 or any(not 0 < len(k) <= 20 for k in self.keyterms):
            raise ConfigError("keyterms: at most 50 terms, each 1-20 characters")
        self.include_timestamps = include_timestamps
        self.include_language_detection = include_language_detection
        self.enable_logging = enable_logging
        self.previous_text = previous_text[-50:] if previous_text else None
        self.extra_params = dict(extra_params or {})
        self.barge_in = barge_in
        self.min_barge_in_chars = max(1, min_barge_in_chars)
        self.echo_discard_seconds = echo_discard_seconds
        self.keepalive_interval = keepalive_interval
        self.max_chunk_bytes = max(160, int(max_chunk_ms * 8))
        # Coalescing: one message per ``min_chunk_ms`` of audio, not per 20 ms carrier frame. Each message costs
        # a JSON encode, a base64, a WebSocket frame with a fresh random mask and a write() on the event loop;
        # at one per frame that was the biggest single item of the loop's time with this client (31 % of GIL
        # samples at 200 calls). The oldest audio waits at most ``min_chunk_ms`` (the commit, i.e. the turn,
        # at most ``min_chunk_ms - 20`` ms longer). The default, 20, sends every frame as it comes: batching that adds
        # latency to the caller's turn is opt-in (60 saved 11-14 % of server CPU at 200 calls in load_bench).
        self.min_chunk_bytes = min(self.max_chunk_bytes, max(0, int(min_chunk_ms * 8)))
        self.min_chunk_seconds = max(0, min_chunk_ms) / 1000.0
        self.max_buffer_bytes = max(8000, int(replay_seconds * 8000))
        self.commit_tail_bytes = max(0, int(commit_tail_ms * 8))
        self.idle_replay_bytes = max(self.commit_tail_bytes, int(idle_replay_ms * 8))
        self.max_reconnect_attempts = max(0, max_reconnect_attempts)
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stable_after = stable_after
        self.connect_timeout = connect_timeout
        self.close_timeout = close_timeout
        if ws_client not in ("auto", *ws_client_module.BACKENDS):
            raise ConfigError(f"ws_client must be 'auto' or one of {', '.join(ws_client_module.BACKENDS)}, got {ws_client!r}")
        #: The WebSocket client the Scribe socket runs on (``providers/ws_client.py``): ``auto`` is picows where
        #: the ``[fast]`` extra is installed (framing and masking in C: this socket sends per chunk of every
        #: call, on the carrier sockets' loop), else websockets.
        self.ws_client = ws_client_module.default_backend() if ws_client == "auto" else ws_client

        self.on_committed: Callable[[str], None] | None = None
        self.on_recognizing: Callable[[str], None] | None = None
        self.on_error: Callable[[str], None] | None = None
        self.on_speech_started: Callable[[], None] | None = None
        #: The service's endpoint (its commit), called just before ``on_committed`` with the estimated
        #: ``time.monotonic()`` at which the caller stopped: with ``commit_strategy="vad"`` the commit comes
        #: ``vad_silence_threshold_secs`` after the speech, so that is subtracted (network time is not).
        self.on_speech_ended: Callable[[float | None], None] | None = None
        self.stats: Counter[str] = Counter()
        self.session_ids: list[str] = []

        # speaking state (written from the flow thread; plain attribute writes are atomic)
        self._speaking = False
        self._discard_until = 0.0
        # loop-side state
        self._pending: deque[_Item] = deque()
        self._sent: deque[_Item] = deque()
        # audio bytes in ``_sent``, kept as items come and go: trimming after every chunk sent used to sum the
        # whole deque (~100 items of idle lead-in), 6 % of the event loop's time at 40 calls
        self._sent_bytes = 0
        self._buffered = 0
        self._pending_since = 0.0  # when the oldest item now in ``_pending`` arrived (coalescing deadline)
        self._audio_ready: asyncio.Event | None = None
        self._connected: asyncio.Event | None = None
        self._input_ended = False
        self._stopping = False
        self._dead = False
        self._error_reported = False
        self._intake_task: asyncio.Task[None] | None = None
        #: The inline path for caller audio (``VoiceSession.feed_stt_inline``), offered once started.
        self.feed_audio: Callable[[bytes], None] | None = None
        self._supervisor_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ws: Any = None
        self._utterance_open = False
        self._utterance_discard = False
        self._last_partial: str | None = None
        self._last_commit: tuple[str, str] | None = None
        self._last_commit_text: str | None = None
        self._commit_in_session = False

    # ================================================================================ protocol

    @property
    def api_key(self) -> str:
        """The API key; missing raises :class:`ConfigError` here, at first use (construction never needs it)."""
        if not self._api_key:
            self._api_key = resolve_api_key(None)  # the environment may have been set since construction
        return self._api_key

    @api_key.setter
    def api_key(self, value: str | None) -> None:
        self._api_key = value

    def check_credentials(self) -> None:
        """Fail fast: raise :class:`ConfigError` now if no API key is configured (e.g. at server start-up)."""
        self.api_key  # noqa: B018
    def set_speaking(self, speaking: bool) -> None:
        """The agent started/stopped talking (any thread). Stopping opens the echo-discard window."""
        if speaking:
            self._speaking = True
        elif self._speaking:
            self._discard_until = time.monotonic() + self.echo_discard_seconds
            self._speaking = False

    async def start(self, inbound_queue: asyncio.Queue[bytes | None]) -> None:
        """Start consuming ``inbound_queue`` and connecting. Returns at once; failures go to ``on_error``."""
        if self._supervisor_task is not None:
            raise RuntimeError("ElevenLabsRealtimeStt.start() called twice; create one provider per call")
        self._loop = asyncio.get_running_loop()
        self._audio_ready = asyncio.Event()
        self._connected = asyncio.Event()
        self._intake_task = asyncio.create_task(self._intake(inbound_queue), name="elevenlabs_stt_intake")
        if not reads_its_queue_itself(self, ElevenLabsRealtimeStt, "_intake"):
            self.feed_audio = self._feed_inline
        self._supervisor_task = asyncio.create_task(self._supervise(), name="elevenlabs_stt_supervisor")

    async def stop(self) -> None:
        """Stop: cancel and await every owned task and close the socket. Idempotent."""
        self._stopping = True
        tasks = [t for t in (self._supervisor_task, self._intake_task) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        ws, self._ws = self._ws, None
        if ws is not None:
            await self._close_ws(ws)

    # ================================================================================ extras
    async def wait_connected(self, timeout: float = 10.0) -> bool:
        """True once a session has started on the current connection (tests, warm-up)."""
        if self._connected is None:
            return False
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def commit(self) -> None:
        """Manual commit strategy: end the current utterance now (any thread)."""
        if self.commit_strategy != "manual":
            raise ConfigError("commit() is only meaningful with commit_strategy='manual'")
        loop = self._loop
        if loop is None:
            return
        loop.call_soon_threadsafe(self._enqueue, _COMMIT)

    @property
    def connected(self) -> bool:
        return self._connected is not None and self._connected.is_set()

    @property
    def buffered_seconds(self) -> float:
        """Audio held for (re)sending: not yet sent plus sent-but-uncommitted."""
        return self._buffered / 8000

    def url(self) -> str:
        query: list[tuple[str, Any]] = [
            ("model_id", self.model_id),
            ("audio_format", "ulaw_8000"),
            ("commit_strategy", self.commit_strategy),
        ]
        if self.language_code:
            query.append(("language_code", self.language_code))
        if self.commit_strategy == "vad":
            query += [(k, v) for k, v in self.vad.items() if v is not None]
        query += [("keyterms", k) for k in self.keyterms]
        if self.include_timestamps:
            query.append(("include_timestamps", "true"))
        if self.include_language_detection:
            query.append(("include_language_detection", "true"))
        if self.enable_logging is not None:
            query.append(("enable_logging", str(self.enable_logging).lower()))
        query += [(k, str(v).lower() if isinstance(v, bool) else v) for k, v in self.extra_params.items()]
        return f"{self.ws_base_url}/v1/speech-to-text/realtime?{urlencode(query)}"

    # ================================================================================ audio buffering
    async def _intake(self, queue: asyncio.Queue[bytes | None]) -> None:
        while True:
            item = await queue.get()
            if item is None:
                self._input_ended = True
                assert self._audio_ready is not None
                self._audio_ready.set()
                return
            if item and not self._dead:
                self._enqueue(item)

    def _feed_inline(self, ulaw: bytes) -> None:
        """One caller chunk, inline on the loop (``feed_audio`` once started: the session calls it instead of
        queueing): buffered for the sender like a queued one, with no reader-task step per frame."""
        if ulaw and not self._dead and not self._input_ended and not self._stopping:
            self._enqueue(ulaw)

    def _enqueue(self, item: _Item) -> None:
        if not self._pending:
            self._pending_since = time.monotonic()
        self._pending.append(item)
        if isinstance(item, bytes):
            self._buffered += len(item)
            self.stats["audio_in_bytes"] += len(item)
            self._trim_to_bound()
        # Wake the sender when it has something to do: the first item (it was idle), a commit, or a full chunk.
        # A frame that only lengthens a short chunk leaves it asleep until its deadline timer.
        if self._audio_ready is not None and (
            len(self._pending) == 1 or not isinstance(item, bytes) or self._buffered - self._sent_bytes >= self.min_chunk_bytes
        ):
            self._audio_ready.set()

    def _trim_to_bound(self) -> None:
        while self._buffered > self.max_buffer_bytes:
            source = self._sent if self._sent else self._pending
            if not source:
                break
            dropped = source.popleft()
            if isinstance(dropped, bytes):
                self._buffered -= len(dropped)
                if source is self._sent:
                    self._sent_bytes -= len(dropped)
                self.stats["audio_dropped_bytes"] += len(dropped)
                if self.stats["audio_dropped_bytes"] == len(dropped):
                    log.warning("ElevenLabs STT replay buffer full (%.0f s): dropping oldest audio", self.max_buffer_bytes / 8000)

    def _trim_after_commit(self) -> None:
        """The server committed: audio before the commit never needs replaying."""
        sent = self._sent
        if self.commit_strategy == "manual":
            while sent:
                item = sent.popleft()
                if isinstance(item, bytes):
                    self._buffered -= len(item)
                    self._sent_bytes -= len(item)
                else:
                    return
            return
        self._trim_sent_to(self.commit_tail_bytes)

    def _trim_sent_to(self, keep: int) -> None:
        """Keep only the newest ``keep`` bytes of sent audio (VAD mode)."""
        sent = self._sent
        excess = self._sent_bytes - keep
        while sent and excess > 0 and isinstance(sent[0], bytes) and len(sent[0]) <= excess:
            item = sent.popleft()
            assert isinstance(item, bytes)
            excess -= len(item)
            self._buffered -= len(item)
            self._sent_bytes -= len(item)

    # ================================================================================ connection lifecycle
    async def _supervise(self) -> None:
        failures = 0
        last_reason = ""
        try:
            while not self._stopping and not self._dead:
                if failures:
                    if failures > self.max_reconnect_attempts:
                        self._fail(f"reconnect_exhausted: {failures - 1} attempts failed ({last_reason})")
                        return
                    delay = self._backoff(failures)
                    if delay:
                        await asyncio.sleep(delay)
                    self.stats["reconnect_attempts"] += 1
                try:
                    ws = await self._connect()
                except _FatalError as exc:
                    self._fail(str(exc))
                    return
                except _RetryableError as exc:
                    last_reason = str(exc)
                    log.info("ElevenLabs STT connect failed (%s); will retry", exc)
                    failures += 1
                    continue
                opened = time.monotonic()
                outcome, detail = await self._run_connection(ws)
                if outcome == _Outcome.ENDED or self._stopping:
                    return
                if outcome == _Outcome.FATAL:
                    self._fail(detail)
                    return
                last_reason = detail
                stable = time.monotonic() - opened >= self.stable_after or self._commit_in_session
                failures = 1 if stable else failures + 1
                self.stats["reconnects"] += 1
                log.info("ElevenLabs STT connection ended (%s); reconnecting (attempt %d)", detail, failures)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must not leave the call silently deaf
            log.exception("ElevenLabs STT supervisor crashed")
            self._fail(f"internal_error: {type(exc).__name__}: {exc}")

    def _backoff(self, failures: int) -> float:
        # failures counts from 1: the first retry is immediate, then backoff_initial * 2**n, ±20 %.
        return backoff_delay(failures - 1, base=self.backoff_initial, maximum=self.backoff_max, immediate_first=True)

    async def _connect(self) -> ClientSocket:
        from websockets.exceptions import InvalidHandshake

        try:
            url = self.url()
            return await ws_client_module.connect(
                url,
                headers={"xi-api-key": self.api_key},
                # wss: the process-wide TLS context; building one per call loads the CA bundle on the event loop
                ssl=shared_ssl_context() if url.startswith("wss://") else None,
                open_timeout=self.connect_timeout,
                close_timeout=self.close_timeout,
                max_size=2**24,
                ping_interval=20,
                backend=self.ws_client,
            )
        except HandshakeRejected as exc:
            code = exc.status
            body = exc.body[:200].decode("utf-8", "replace").strip()
            if code in (401, 403) or (400 <= code < 500 and code not in (408, 425, 429)):
                raise _FatalError(f"handshake_rejected: HTTP {code} {body}".strip()) from None
            raise _RetryableError(f"handshake HTTP {code}") from None
        except ValueError as exc:  # not a ws:// or wss:// URL
            raise _FatalError(f"invalid_url: {exc}") from None
        except (OSError, asyncio.TimeoutError, InvalidHandshake) as exc:
            raise _RetryableError(f"{type(exc).__name__}: {exc}") from None

    async def _run_connection(self, ws: ClientSocket) -> tuple[str, str]:
        self._ws = ws
        self._commit_in_session = False
        self._last_partial = None  # an open utterance stays open: its audio is replayed and continues here
        if self._sent:  # replay what the last session received but never committed
            self.stats["replayed_bytes"] += self._sent_bytes
            self._pending.extendleft(reversed(self._sent))
            self._sent.clear()
            self._sent_bytes = 0
        assert self._audio_ready is not None
        self._audio_ready.set()
        sender = asyncio.create_task(self._send_loop(ws), name="elevenlabs_stt_send")
        receiver = asyncio.create_task(self._recv_loop(ws), name="elevenlabs_stt_recv")
        try:
            done, _ = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
            if receiver in done:
                return receiver.result()
            try:
                return sender.result()
            except ClientClosed as exc:
                return _Outcome.RETRY, f"connection lost while sending (code {exc.code})"
            except Exception as exc:  # any other send failure: this connection is done, a new one may work
                return _Outcome.RETRY, f"send failed: {type(exc).__name__}: {exc}"
        finally:
            for task in (sender, receiver):
                task.cancel()
            await asyncio.gather(sender, receiver, return_exceptions=True)
            if self._connected is not None:
                self._connected.clear()
            self._ws = None
            await self._close_ws(ws)

    async def _close_ws(self, ws: ClientSocket) -> None:
        try:
            await asyncio.wait_for(ws.close(1000), self.close_timeout + 1)
        except Exception:  # already dead, or the close handshake timed out
            ws.abort()

    async def _send_loop(self, ws: ClientSocket) -> tuple[str, str]:
        assert self._audio_ready is not None
        previous_text = self.previous_text if not self.session_ids else (self._last_commit_text or "")[-50:] or None
        first = True
        last_send = time.monotonic()
        while True:
            if not self._pending:
                if self._input_ended:
                    return _Outcome.ENDED, "input ended"
                self._audio_ready.clear()
                idle = self.keepalive_interval - (time.monotonic() - last_send)
                # A timer that sets the same event, not wait_for(): wait_for wraps every wait in a new Task, and
                # this wait happens once per 20 ms caller frame of every call.
                timer = asyncio.get_running_loop().call_later(max(0.0, idle), self._audio_ready.set)
                try:
                    await self._audio_ready.wait()
                finally:
                    timer.cancel()
                if not self._pending and not self._input_ended and time.monotonic() - last_send >= self.keepalive_interval * 0.999:
                    # No protocol ping keeps a Scribe session alive: an empty chunk does.
                    await ws.send(_KEEPALIVE_MESSAGE)
                    self.stats["keepalives"] += 1
                    last_send = time.monotonic()
                continue
            if self._coalescing():
                # Short of a chunk and nothing forces it out: wait for more audio or the oldest one's deadline.
                self._audio_ready.clear()
                wait = self._pending_since + self.min_chunk_seconds - time.monotonic()
                if wait > 0:
                    timer = asyncio.get_running_loop().call_later(wait, self._audio_ready.set)
                    try:
                        await self._audio_ready.wait()
                    finally:
                        timer.cancel()
                    continue
            if isinstance(self._pending[0], _Commit):
                self._sent.append(self._pending.popleft())
                await ws.send(_COMMIT_MESSAGE)
                self.stats["commits_sent"] += 1
                last_send = time.monotonic()
                continue
            parts: list[bytes] = []
            size = 0
            while self._pending and isinstance(self._pending[0], bytes) and (not parts or size + len(self._pending[0]) <= self.max_chunk_bytes):
                item = self._pending.popleft()
                assert isinstance(item, bytes)
                self._sent.append(item)  # before the await: if the send dies, this is replayed
                self._sent_bytes += len(item)
                parts.append(item)
                size += len(item)
            payload: dict[str, Any] = {
                "message_type": "input_audio_chunk",
                "audio_base_64": base64.b64encode(b"".join(parts)).decode("ascii"),
                "commit": False,
                "sample_rate": 8000,
            }
            if first and previous_text:
                payload["previous_text"] = previous_text  # allowed on the first chunk only
            first = False
            await ws.send(orjson.dumps(payload).decode())  # orjson: this runs per chunk of every call
            self.stats["audio_sent_bytes"] += size
            self.stats["chunks_sent"] += 1
            last_send = time.monotonic()
            if self.commit_strategy == "vad" and not self._utterance_open:
                # Nobody is talking: a replay needs only a short lead-in (the service wants ~2 s of context),
                # not every second of silence since the last commit.
                self._trim_sent_to(self.idle_replay_bytes)

    def _coalescing(self) -> bool:
        """Pending audio is shorter than ``min_chunk_ms``, younger than it, and no commit or end is waiting."""
        if self._buffered - self._sent_bytes >= self.min_chunk_bytes or self._input_ended:
            return False
        if time.monotonic() - self._pending_since >= self.min_chunk_seconds:
            return False
        return not any(type(item) is _Commit for item in self._pending)

    async def _recv_loop(self, ws: ClientSocket) -> tuple[str, str]:
        while True:
            try:
                raw = await ws.recv()
            except ClientClosed as exc:  # the server's close (its code) or a dead socket (1006)
                return _Outcome.RETRY, f"connection lost (code {exc.code})"
            try:
                message = orjson.loads(raw)
                kind = str(message.get("message_type", ""))
            except (ValueError, AttributeError, TypeError):
                self.stats["bad_messages"] += 1
                continue
            if kind == "session_started":
                self.session_ids.append(str(message.get("session_id", "")))
                assert self._connected is not None
                self._connected.set()
            elif kind == "partial_transcript":
                self._on_partial(str(message.get("text") or ""))
            elif kind in _COMMITTED:
                self._on_commit(kind, str(message.get("text") or ""))
            elif kind in FATAL_STT_ERRORS:
                return _Outcome.FATAL, f"{kind}: {message.get('error') or message.get('message') or ''}".rstrip(": ")
            elif kind in RETRYABLE_STT_ERRORS or kind.endswith("_error"):
                self.stats[f"error_{kind}"] += 1
                return _Outcome.RETRY, f"{kind}: {message.get('error') or ''}"
            elif kind == "commit_throttled":
                self.stats["commit_throttled"] += 1
            elif kind == "warning":
                log.info("ElevenLabs STT warning: %s", message.get("warning"))

    # ================================================================================ transcripts
    def _on_partial(self, text: str) -> None:
        text = text.strip()
        if not text or text == self._last_partial:
            self.stats["partials_dropped"] += bool(text)
            return
        if not self._utterance_open and text == self._last_commit_text:
            self.stats["partials_dropped"] += 1  # the service echoing what it just committed
            return
        if not self._utterance_open:
            if self._speaking:
                if self.barge_in and len(text) < self.min_barge_in_chars:
                    return  # too little to interrupt the agent for; wait for more
                self._open_utterance(discard=not self.barge_in)
            else:
                self._open_utterance(discard=time.monotonic() < self._discard_until)
        self._last_partial = text
        if not self._utterance_discard:
            self._emit(self.on_recognizing, text)

    def _open_utterance(self, *, discard: bool) -> None:
        self._utterance_open = True
        self._utterance_discard = discard
        if discard:
            self.stats["echo_discarded"] += 1
        else:
            self.stats["speech_started"] += 1
            self._emit(self.on_speech_started)

    def _on_commit(self, kind: str, text: str) -> None:
        text = text.strip()
        last = self._last_commit
        if last is not None and last[0] != kind and last[1] == text:
            self._last_commit = None  # the other variant of the commit we already delivered
            self.stats["duplicate_commits_dropped"] += 1
            return
        self._last_commit = (kind, text)
        self._commit_in_session = True
        self._trim_after_commit()
        if not self._utterance_open and text:
            # a commit with no partial before it: classify it now
            if self._speaking:
                self._open_utterance(discard=not self.barge_in)
            else:
                self._open_utterance(discard=time.monotonic() < self._discard_until)
        discard = self._utterance_discard
        self._utterance_open = self._utterance_discard = False
        self._last_partial = None
        if not text:
            return
        self._last_commit_text = text
        if discard:
            return
        self.stats["committed"] += 1
        silence = self.vad.get("vad_silence_threshold_secs") if self.commit_strategy == "vad" else None
        self._emit(self.on_speech_ended, time.monotonic() - (silence or 0.0))
        self._emit(self.on_committed, text)

    def _emit(self, callback: Callable[..., Any] | None, *args: Any) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:
            log.exception("ElevenLabs STT callback %r failed", callback)

    def _fail(self, message: str) -> None:
        """Report a terminal failure exactly once and stop working (intake keeps draining, discarding)."""
        self._dead = True
        self._pending.clear()
        self._sent.clear()
        self._sent_bytes = 0
        self._buffered = 0
        if self._error_reported:
            return
        self._error_reported = True
        self.stats["fatal_errors"] += 1
        log.warning("ElevenLabs STT gave up: %s", message)
        self._emit(self.on_error, message)


class _FatalError(Exception):
    pass


class _RetryableError(Exception):
    pass


def _check_range(name: str, value: float | None, low: float, high: float) -> None:
    if value is not None and not low <= value <= high:
        raise ConfigError(f"{name} must be within {low}..{high}, got {value}")


# Prior-art name kept for compatibility (``create_stt("elevenlabs")`` resolves it).
_PersistentSttSession = prior_art_class(ElevenLabsRealtimeStt, "PersistentSttSession")  # what the factory builds (see voice_runtime.compat.names)
__getattr__ = deprecated_module_names(__name__, {"PersistentSttSession": (_PersistentSttSession, "ElevenLabsRealtimeStt")})
