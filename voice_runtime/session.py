"""``VoiceSession``: one call, seen from a plain sequential Python thread.

The flow thread calls *blocking intents* (``speak``, ``send_mark_and_wait``, ``listen``,
``request_clear_buffer``, ``request_disconnect``, ``wait_for_dtmf`` ...). The event-loop thread (the
transport) drains outbound audio, marks and intents and feeds back inbound audio, mark echoes, DTMF and STT
results. This module imports no transport and no provider: the transport attaches itself through the small
:class:`SessionLink` protocol, providers through the protocols in :mod:`voice_runtime.providers.base`.

Threading rules, which every method below obeys:

* Shared state is guarded by one lock; every waiter waits on one condition with a deadline. A hangup
  notifies the condition and resolves every mark, so every blocked call wakes at once.
* The loop is never blocked: loop-side methods (prefixed ``_on_`` / ``_take_``) only take the lock briefly.
* Flow-side intents reach the loop with ``loop.call_soon_threadsafe`` — once per intent, never per frame.

Bounded memory (the overflow policies):

* Outbound agent audio not yet sent: at most ``max_outbound_seconds``; a producer that would exceed it
  blocks (back-pressure on the TTS) until the transport drains, the buffer is cleared, or the call ends.
* Inbound caller audio waiting for STT: at most ``inbound_max_frames`` items; when full the *oldest* frame
  is dropped and counted (``stats["inbound_dropped"]``) — fresh audio matters more for a live call.
* Committed utterances and DTMF digits not yet consumed: bounded deques, oldest dropped and counted.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from voice_runtime import call_events as ev
from voice_runtime.audio.frames import FRAME_BYTES, ulaw_duration
from voice_runtime.call_events import CallEvent, EventLog
from voice_runtime.errors import (
    CallHangupError,
    CallNotAnsweredError,
    CallTimeoutError,
    ConfigError,
    LocalProtocolError,
    MissingStreamUrlError,
)
from voice_runtime.marks import Mark, MarkOutcome

__all__ = [
    "VoiceSession",
    "SpeechResult",
    "SessionLink",
    "Mark",
    "MarkOutcome",
    "CallNotAnsweredError",
    "CallHangupError",
    "MissingStreamUrlError",
    "FRAME_BYTES",
]

log = logging.getLogger(__name__)


class SessionLink(Protocol):
    """What the transport offers the session. Every method is called *on the event loop*."""

    supports_dtmf_out: bool

    def wake(self) -> None:
        """Outbound items are waiting."""

    def clear(self) -> None:
        """Send a clear to the carrier now (local buffers were already emptied)."""

    def disconnect(self) -> None:
        """Hang up / close the stream."""

    def send_dtmf(self, digits: str) -> None:
        """Send DTMF to the far end."""


@dataclass(eq=False)
class SpeechResult:
    """What happened to one ``speak``. ``as_dict()`` gives the prior art's result shape."""

    text: str
    mark: Mark | None = None
    error: str | None = None
    call_disconnected: bool = False
    stopped: bool = False  # synthesis was stopped early (barge-in or the caller's stop_event)
    first_audio_latency: float | None = None  # seconds from speak() to the first audio chunk queued
    audio_seconds: float = 0.0

    def wait(self, timeout: float | None = 30.0) -> MarkOutcome | None:
        """Block until the caller has heard it (or it was cleared, or the call ended)."""
        if self.mark is None:
            return None
        outcome = self.mark.wait(timeout)
        if outcome is MarkOutcome.HUNG_UP:
            self.call_disconnected = True
        return outcome

    @property
    def interrupted(self) -> bool:
        return self.stopped or (self.mark is not None and self.mark.outcome is MarkOutcome.CLEARED)

    @property
    def heard(self) -> bool:
        return self.mark is not None and self.mark.outcome is MarkOutcome.PLAYED

    def as_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {"last_spoken": "" if self.call_disconnected and self.mark is None else self.text}
        result["interrupted"] = self.interrupted
        if self.call_disconnected:
            result["call_disconnected"] = True
        if self.error:
            result["error"] = self.error
        return result


@dataclass(eq=False)
class VoiceSession:
    """One call's coordinator. Create one per call (the server does this for you); never share one."""

    call_sid: str | None = None
    stream_sid: str | None = None
    caller_number: str | None = None
    stt: Any = None
    stt_factory: Callable[[], Any] | None = None
    stt_secondary_factory: Callable[[], Any] | None = None
    on_stt_ready: Callable[[Any], None] | None = None
    on_disconnected: Callable[[], None] | None = None
    tts: Any = None
    called_number: str | None = None
    carrier: str | None = None
    custom_parameters: dict[str, str] = field(default_factory=dict)
    barge_in: bool = True
    on_dtmf: Callable[[str], None] | None = None
    max_outbound_seconds: float = 60.0
    inbound_max_frames: int = 500
    max_pending_utterances: int = 64
    event_log_size: int = 128  # recent events kept for ``events``; listeners see every event regardless

    # --- private state (not constructor arguments) ------------------------------------------------
    _lock: threading.RLock = field(init=False, repr=False)
    _cond: threading.Condition = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self.log = EventLog(self.event_log_size)
        self.stats: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._link: SessionLink | None = None
        self._call_generation = 0
        self._mixer: Any = None
        self._out_waiters = 0  # producers blocked on a full outbound buffer (so the pump notifies only then)
        self._init_call_state()

    def _init_call_state(self) -> None:
        self._ws_connected = threading.Event()
        self._disconnected = threading.Event()
        self._end_reason: str | None = None
        self.inbound: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=self.inbound_max_frames)
        self._out: deque[bytes | Mark] = deque()
        self._out_bytes = 0
        self._pump_idle = True
        self._marks_in_flight: dict[str, Mark] = {}
        # Wire names of marks resolved CLEARED: Twilio still echoes them after the clear, and those echoes are
        # expected, not unknown. Played marks need no memory (their echo already came).
        self._resolved_wire_names: deque[str] = deque(maxlen=256)
        self._utterances: deque[str] = deque()
        self._dtmf: deque[str] = deque(maxlen=256)
        self._answered_by: str | None = None
        self._speech_stop: threading.Event | None = None
        self._speaking_until = 0.0  # monotonic time the carrier's buffer runs dry (set by the transport)
        self._active_speeches = 0

    # ============================================================================ lifecycle (loop side)
    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop

    def set_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Prior-art hook: remember the loop that serves this session."""
        self._loop = loop

    def _attach(
        self,
        loop: asyncio.AbstractEventLoop,
        link: SessionLink,
        *,
        stream_id: str,
        call_id: str,
        carrier: str,
        custom_parameters: dict[str, str] | None = None,
        before_connected: Callable[[], None] | None = None,
    ) -> None:
        """Called by the transport on the loop when the carrier's ``start`` arrives.

        ``before_connected`` runs once the call's ids are set but before ``wait_for_ws_connect`` returns,
        so what it prepares (the STT object) is there for the flow the moment the flow is told "connected".
        """
        with self._lock:
            self._loop, self._link = loop, link
            self.stream_sid, self.call_sid, self.carrier = stream_id, call_id, carrier
            params = dict(custom_parameters or {})
            self.custom_parameters.update(params)
            self.caller_number = self.caller_number or params.get("from_number") or params.get("From")
            self.called_number = self.called_number or params.get("to_number") or params.get("To")
            self.log.call_id = call_id
        if before_connected is not None:
            before_connected()
        with self._lock:
            pending = bool(self._out)
            self._pump_idle = not pending
            self._ws_connected.set()
            self._cond.notify_all()
        self.log.emit(ev.STREAM_STARTED, stream_id=stream_id, carrier=carrier, parameters=params)
        if pending:
            link.wake()

    def signal_ws_connected(self, stream_sid: str) -> None:
        """Prior-art hook for transports that do not use :meth:`_attach`."""
        with self._lock:
            self.stream_sid = stream_sid
            if self._loop is None:
                try:
                    self._loop = asyncio.get_running_loop()
                except RuntimeError:
                    pass
            self._ws_connected.set()
            self._cond.notify_all()
        self.log.emit(ev.WS_CONNECTED, stream_id=stream_sid)

    def signal_disconnected(self, reason: str = "disconnected") -> None:
        """The call is over. Idempotent; wakes every waiter at once. Safe from any thread."""
        with self._lock:
            if self._disconnected.is_set():
                return
            self._end_reason = reason
            self._disconnected.set()
            for mark in list(self._marks_in_flight.values()):
                mark.resolve(MarkOutcome.HUNG_UP)
            self._marks_in_flight.clear()
            for item in self._out:
                if isinstance(item, Mark):
                    item.resolve(MarkOutcome.HUNG_UP)
            self._out.clear()
            self._out_bytes = 0
            if self._speech_stop is not None:
                self._speech_stop.set()
            self._cond.notify_all()
        self._push_inbound_sentinel()
        self.log.emit(ev.CALL_ENDED, reason=reason)
        callback = self.on_disconnected
        if callback is not None:
            try:
                callback()
            except Exception:
                log.exception("on_disconnected callback failed")

    def _push_inbound_sentinel(self) -> None:
        def push() -> None:
            q = self.inbound
            while True:
                try:
                    q.put_nowait(None)
                    return
                except asyncio.QueueFull:
                    q.get_nowait()

        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            push()
        else:
            try:
                loop.call_soon_threadsafe(push)
            except RuntimeError:  # loop closed meanwhile
                pass

    @property
    def is_disconnected(self) -> bool:
        return self._disconnected.is_set()

    @property
    def is_connected(self) -> bool:
        return self._ws_connected.is_set() and not self._disconnected.is_set()

    @property
    def end_reason(self) -> str | None:
        return self._end_reason

    @property
    def generation(self) -> int:
        """Increments on every :meth:`reset`; pass it to ``request_disconnect`` to avoid hanging up a newer call."""
        return self._call_generation

    def reset(self) -> None:
        """Prepare this object for another call (prior-art sequential reuse).

        New code should create one session per call instead; the server does. Pending waiters of the old
        call are released as hung up first.
        """
        self.signal_disconnected("reset")
        stt = self.stt
        loop = self._loop
        if stt is not None and loop is not None and loop.is_running():
            asyncio.run_coroutine_threadsafe(stt.stop(), loop)
        with self._lock:
            self._call_generation += 1
            self.stt = None
            self.stream_sid = None
            self._link = None
            self._init_call_state()
            self.stats.clear()
            self.log.clear()

    # ============================================================================ waiting for the call
    def wait_for_ws_connect(self, timeout: float = 30.0) -> None:
        """Block until the media stream has started. Raises :class:`CallNotAnsweredError` otherwise."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._ws_connected.is_set():
                if self._disconnected.is_set():
                    raise CallNotAnsweredError(
                        f"call ended before its media stream connected ({self._end_reason})",
                        call_id=self.call_sid,
                        status=self._end_reason,
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CallNotAnsweredError(timeout, call_id=self.call_sid)
                self._cond.wait(remaining)

    def wait_until_disconnected(self, timeout: float | None = 30.0) -> bool:
        """Block until the call has ended; returns False at the deadline."""
        return self._disconnected.wait(timeout)

    # ============================================================================ outbound audio
    def put_outbound_sync(self, data: bytes, timeout: float | None = 30.0) -> None:
        """Queue μ-law 8 kHz agent audio. Blocks (back-pressure) while the buffer is full.

        Raises :class:`CallHangupError` if the call is gone and :class:`CallTimeoutError` if the buffer
        stayed full for ``timeout`` seconds (the transport stopped draining).
        """
        if not data:
            return
        limit = int(self.max_outbound_seconds * 8000)
        deadline = None if timeout is None else time.monotonic() + timeout
        generation = self._call_generation
        with self._cond:
            while True:
                if self._disconnected.is_set() or generation != self._call_generation:
                    raise CallHangupError("call ended while queueing audio", call_id=self.call_sid)
                if self._out_bytes + len(data) <= limit or self._out_bytes == 0:
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise CallTimeoutError("outbound audio buffer stayed full", call_id=self.call_sid)
                self.stats["outbound_backpressure_waits"] += 1
                self._out_waiters += 1
                try:
                    self._cond.wait(remaining)
                finally:
                    self._out_waiters -= 1
            self._out.append(bytes(data))
            self._out_bytes += len(data)
            wake = self._pump_idle and self._link is not None
            if wake:
                self._pump_idle = False
        if wake:
            self._call_on_loop("wake")

    @property
    def outbound_buffered_seconds(self) -> float:
        """Agent audio queued locally and not yet handed to the carrier."""
        return ulaw_duration(self._out_bytes)

    def _take_outbound(self, max_bytes: int) -> tuple[bytes, Mark | None]:
        """Loop side: pop up to ``max_bytes`` of audio, or the mark at the head of the queue.

        Returns ``(audio, None)`` or ``(b"", mark)`` or ``(b"", None)`` when empty (then the pump is idle
        and the next producer will wake it).
        """
        with self._cond:
            out = self._out
            if not out:
                self._pump_idle = True
                return b"", None
            head = out[0]
            if isinstance(head, Mark):
                out.popleft()
                head.sent_at = time.monotonic()
                self._marks_in_flight[head.wire_name] = head
                return b"", head
            parts: list[bytes] = []
            size = 0
            while out and not isinstance(out[0], Mark) and size < max_bytes:
                chunk = out[0]
                room = max_bytes - size
                if len(chunk) <= room:
                    parts.append(out.popleft())  # type: ignore[arg-type]
                    size += len(chunk)
                else:
                    parts.append(chunk[:room])  # type: ignore[index]
                    out[0] = chunk[room:]  # type: ignore[index]
                    size += room
            self._out_bytes -= size
            if self._out_waiters:  # room for blocked producers; notify_all is not free, and runs per batch
                self._cond.notify_all()
            return parts[0] if len(parts) == 1 else b"".join(parts), None

    def _has_outbound(self) -> bool:
        return bool(self._out)

    # ============================================================================ marks
    def send_mark(self, label: str = "mark") -> Mark:
        """Queue a mark after all audio queued so far; returns a handle whose ``wait()`` blocks."""
        mark = Mark(label, call_id=self.call_sid)
        with self._cond:
            if self._disconnected.is_set():
                mark.resolve(MarkOutcome.HUNG_UP)
                return mark
            self._out.append(mark)
            wake = self._pump_idle and self._link is not None
            if wake:
                self._pump_idle = False
        if wake:
            self._call_on_loop("wake")
        return mark

    def send_mark_and_wait(self, mark_name: str = "mark", timeout: float = 10.0) -> MarkOutcome:
        """Queue a mark and block until the caller heard everything before it.

        Returns ``PLAYED``, ``CLEARED`` (a clear dropped the audio first) or ``HUNG_UP`` (the call ended —
        the prior art's "returns quietly when disconnected"). Raises :class:`CallTimeoutError` (also a
        ``TimeoutError``) if the carrier did not echo in time while the call was still up.
        """
        return self.send_mark(mark_name).wait(timeout)

    def signal_mark_received(self, name: str) -> None:
        """Loop side: the carrier echoed ``name``."""
        with self._cond:
            mark = self._marks_in_flight.pop(name, None)
            if mark is None:
                if name in self._resolved_wire_names:
                    self.stats["mark_echo_after_clear"] += 1  # Twilio echoes cleared marks: expected
                else:
                    self.stats["mark_echo_unknown"] += 1
                    log.debug("echo for unknown mark %r", name)
                return
            mark.resolve(MarkOutcome.PLAYED)
            self._cond.notify_all()
        self.log.emit(ev.MARK_PLAYED, name=mark.label, wire_name=name, waited=mark.resolved_at - (mark.sent_at or mark.created_at))  # type: ignore[operator]

    def _on_mark_sent(self, mark: Mark) -> None:
        self.log.emit(ev.MARK_SENT, name=mark.label, wire_name=mark.wire_name)

    # ============================================================================ clear / barge-in
    def request_clear_buffer(self) -> None:
        """Drop every bit of agent audio not yet played: local queue now, carrier buffer via ``clear``.

        Marks queued behind the dropped audio resolve ``CLEARED`` at once; marks already at the carrier
        resolve ``CLEARED`` when the clear goes out (their later echoes are ignored).
        """
        cleared: list[Mark] = []
        with self._cond:
            if self._disconnected.is_set():
                return
            for item in self._out:
                if isinstance(item, Mark):
                    cleared.append(item)
            self._out.clear()
            self._out_bytes = 0
            for mark in cleared:
                mark.resolve(MarkOutcome.CLEARED)
            self._cond.notify_all()
            has_link = self._link is not None
        self.log.emit(ev.CLEAR_REQUESTED, local_marks=len(cleared))
        for mark in cleared:
            self.log.emit(ev.MARK_CLEARED, name=mark.label, wire_name=mark.wire_name, sent=False)
        if has_link:
            self._call_on_loop("clear")

    def _on_clear_sent(self) -> list[Mark]:
        """Loop side: the clear is on the wire; everything the carrier still held is cleared."""
        with self._cond:
            cleared = list(self._marks_in_flight.values())
            for mark in cleared:
                mark.resolve(MarkOutcome.CLEARED)
                self._resolved_wire_names.append(mark.wire_name)
            self._marks_in_flight.clear()
            self._speaking_until = 0.0
            self._cond.notify_all()
        self.log.emit(ev.CLEAR_SENT, marks_cleared=len(cleared))
        for mark in cleared:
            self.log.emit(ev.MARK_CLEARED, name=mark.label, wire_name=mark.wire_name)
        return cleared

    def _set_playout_until(self, when: float) -> None:
        """Loop side: the transport's estimate of when the carrier's buffer runs dry."""
        self._speaking_until = when

    @property
    def agent_speaking(self) -> bool:
        """True while agent audio is queued, at the carrier, or a ``speak`` is producing it."""
        return self._active_speeches > 0 or bool(self._out) or time.monotonic() < self._speaking_until

    def _on_speech_started(self) -> None:
        """The STT heard the caller start talking. Barge-in: stop the agent within a frame."""
        barge = self.barge_in and self.agent_speaking and not self._disconnected.is_set()
        self.log.emit(ev.STT_SPEECH_STARTED, barge_in=barge)
        if not barge:
            return
        self.stats["barge_ins"] += 1
        self.log.emit(ev.BARGE_IN)
        with self._lock:
            stop = self._speech_stop
        if stop is not None:
            stop.set()
        self.request_clear_buffer()

    # ============================================================================ speaking
    def speak(
        self,
        text: str,
        *,
        wait: bool = False,
        timeout: float | None = 30.0,
        tts: Any = None,
        stop_event: threading.Event | None = None,
    ) -> SpeechResult:
        """Synthesize ``text`` with the session's TTS and queue it, followed by a mark.

        Returns once all audio is queued (``wait=False``) or once the caller heard it, it was cleared, or
        the call ended (``wait=True``; ``timeout`` bounds that wait). Barge-in (``barge_in=True`` and an STT
        that signals speech start) stops synthesis and clears playback. Provider failures are reported in
        ``result.error`` and through the provider's ``on_error``; they never raise.
        """
        provider = tts if tts is not None else self.tts
        if provider is None:
            raise ConfigError("no TTS configured: set session.tts (e.g. create_tts('local'))")
        if self._disconnected.is_set():
            return SpeechResult(text, call_disconnected=True)
        if not text.strip():
            return SpeechResult(text)
        synthesize = getattr(provider, "synthesize", None)
        if synthesize is None:  # a prior-art style provider that only knows speak(text, session, stop)
            legacy = provider.speak(text, self, stop_event)
            return SpeechResult(
                text,
                error=legacy.get("error"),
                call_disconnected=bool(legacy.get("call_disconnected")),
                stopped=bool(legacy.get("interrupted")),
            )
        stop = threading.Event()
        with self._lock:
            previous = self._speech_stop
            self._speech_stop = stop
            self._active_speeches += 1
        result = SpeechResult(text)
        started = time.monotonic()
        self.log.emit(ev.TTS_START, text=text)
        self._set_stt_speaking(True)
        queued = 0
        try:
            for chunk in synthesize(text, stop):
                if stop.is_set() or (stop_event is not None and stop_event.is_set()):
                    result.stopped = True
                    break
                if not chunk:
                    continue
                if queued == 0:
                    result.first_audio_latency = time.monotonic() - started
                    self.log.emit(ev.TTS_FIRST_AUDIO, latency=result.first_audio_latency)
                self.put_outbound_sync(chunk)
                queued += len(chunk)
            else:
                if stop.is_set():
                    result.stopped = True
        except CallHangupError:
            result.call_disconnected = True
        except Exception as exc:  # provider failure: report, never raise into the flow
            result.error = f"{type(exc).__name__}: {exc}"
            self.log.emit(ev.TTS_ERROR, error=result.error)
            on_error = getattr(provider, "on_error", None)
            if on_error is not None:
                try:
                    on_error(result.error)
                except Exception:
                    log.exception("tts on_error callback failed")
        finally:
            with self._lock:
                self._active_speeches -= 1
                if self._speech_stop is stop:
                    self._speech_stop = previous
        result.audio_seconds = ulaw_duration(queued)
        self.log.emit(ev.TTS_END, text=text, audio_seconds=result.audio_seconds, stopped=result.stopped, error=result.error)
        if result.call_disconnected or self._disconnected.is_set():
            result.call_disconnected = True
            self._set_stt_speaking(False)
            return result
        result.mark = self.send_mark("speech")
        result.mark.add_done_callback(lambda _m: self._set_stt_speaking(self._active_speeches > 0))
        if wait:
            try:
                result.wait(timeout)
            except CallTimeoutError:
                result.error = result.error or "timed out waiting for playback"
        return result

    def _set_stt_speaking(self, speaking: bool) -> None:
        stt = self.stt
        if stt is None:
            return
        try:
            stt.set_speaking(speaking)
        except Exception:
            log.exception("stt.set_speaking failed")

    # ============================================================================ listening
    def _bind_stt(self, stt: Any) -> None:
        """Loop side: route the provider's callbacks into the session (chaining any user callbacks)."""
        user_committed = getattr(stt, "on_committed", None)
        user_recognizing = getattr(stt, "on_recognizing", None)
        user_error = getattr(stt, "on_error", None)
        user_speech = getattr(stt, "on_speech_started", None)

        def on_committed(text: str) -> None:
            self._on_transcript(text)
            if user_committed is not None:
                user_committed(text)

        def on_recognizing(text: str) -> None:
            self.log.emit(ev.STT_PARTIAL, text=text)
            if user_recognizing is not None:
                user_recognizing(text)

        def on_error(message: str) -> None:
            self.stats["stt_errors"] += 1
            self.log.emit(ev.STT_ERROR, error=message)
            if user_error is not None:
                user_error(message)

        def on_speech_started() -> None:
            self._on_speech_started()
            if user_speech is not None:
                user_speech()

        stt.on_committed = on_committed
        stt.on_recognizing = on_recognizing
        stt.on_error = on_error
        try:
            stt.on_speech_started = on_speech_started
        except AttributeError:  # provider with __slots__ and no barge-in support
            pass
        self.stt = stt

    def _on_transcript(self, text: str) -> None:
        """A committed utterance from the STT (any thread)."""
        text = text.strip()
        if not text:
            return
        with self._cond:
            if len(self._utterances) >= self.max_pending_utterances:
                self._utterances.popleft()
                self.stats["utterances_dropped"] += 1
            self._utterances.append(text)
            self._cond.notify_all()
        self.log.emit(ev.STT_FINAL, text=text)

    def inject_transcript(self, text: str) -> None:
        """Deliver ``text`` as if the STT had committed it (tests, text-only channels)."""
        self._on_transcript(text)

    def listen(self, timeout: float | None = 30.0) -> str:
        """Return the next committed utterance.

        Utterances that arrived earlier and were not consumed are returned first. Raises
        :class:`CallHangupError` when the call ends (after queued utterances are consumed) and
        :class:`CallTimeoutError` at the deadline.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._utterances:
                if self._disconnected.is_set():
                    raise CallHangupError("Call was hung up during listen operation", call_id=self.call_sid)
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise CallTimeoutError(f"nothing heard within {timeout}s", call_id=self.call_sid)
                self._cond.wait(remaining)
            return self._utterances.popleft()

    def say_and_listen(self, text: str, timeout: float | None = 30.0) -> str:
        """Speak, wait until heard (or barged into), then return the caller's answer.

        The listen timeout starts after the prompt has played, so long prompts do not eat it. Anything the
        caller said *before* the prompt started is discarded; anything said during it (barge-in) counts.
        """
        self.clear_transcripts()
        self.speak(text, wait=True, timeout=max(30.0, timeout or 0.0))
        return self.listen(timeout)

    def clear_transcripts(self) -> None:
        with self._cond:
            self._utterances.clear()

    def clear_inbound(self) -> None:
        """Drop caller audio waiting for the STT and any unconsumed utterances."""
        self.clear_transcripts()
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def drain() -> None:
            q = self.inbound
            while not q.empty():
                if q.get_nowait() is None:  # keep the end-of-stream sentinel
                    q.put_nowait(None)
                    break

        try:
            if asyncio.get_running_loop() is loop:
                drain()
                return
        except RuntimeError:
            pass
        loop.call_soon_threadsafe(drain)

    # ============================================================================ inbound audio (loop side)
    def _feed_inbound(self, ulaw: bytes) -> None:
        """Loop side, per frame: hand caller audio to the STT queue (drop oldest when full)."""
        q = self.inbound
        if q.full():
            try:
                q.get_nowait()
            except asyncio.QueueEmpty:  # pragma: no cover
                pass
            self.stats["inbound_dropped"] += 1
        q.put_nowait(ulaw)

    def put_inbound(self, data: bytes | None) -> None:
        """Prior-art entry point: feed caller audio (or ``None`` to end) from any thread."""
        loop = self._loop
        if loop is None:
            self.stats["inbound_without_loop"] += 1
            return
        if data is None:
            self._push_inbound_sentinel()
        else:
            loop.call_soon_threadsafe(self._feed_inbound, data)

    # ============================================================================ DTMF
    def _on_dtmf(self, digit: str) -> None:
        with self._cond:
            self._dtmf.append(digit)
            self._cond.notify_all()
        self.log.emit(ev.DTMF_RECEIVED, digit=digit)
        callback = self.on_dtmf
        if callback is not None:
            try:
                callback(digit)
            except Exception:
                log.exception("on_dtmf callback failed")

    def wait_for_dtmf(self, timeout: float | None = 10.0) -> str:
        """Return the next key the caller pressed (earlier unread presses first)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._dtmf:
                if self._disconnected.is_set():
                    raise CallHangupError("call ended while waiting for DTMF", call_id=self.call_sid)
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise CallTimeoutError(f"no key pressed within {timeout}s", call_id=self.call_sid)
                self._cond.wait(remaining)
            return self._dtmf.popleft()

    def collect_dtmf(
        self, max_digits: int = 32, *, timeout: float = 10.0, inter_digit_timeout: float = 5.0, terminator: str | None = "#"
    ) -> str:
        """Collect digits until ``max_digits``, the terminator, or a pause. Returns what was collected."""
        digits = ""
        first = True
        while len(digits) < max_digits:
            try:
                digit = self.wait_for_dtmf(timeout if first else inter_digit_timeout)
            except CallTimeoutError:
                if first:
                    raise
                break
            first = False
            if terminator is not None and digit == terminator:
                break
            digits += digit
        return digits

    def clear_dtmf(self) -> None:
        with self._cond:
            self._dtmf.clear()

    def send_dtmf(self, digits: str) -> None:
        """Send DTMF to the far end over the stream (Plivo). Raises ``LocalProtocolError`` where unsupported."""
        bad = [d for d in digits if d not in "0123456789*#ABCDabcdwW"]
        if not digits or bad:
            raise ValueError(f"invalid DTMF digits {digits!r}")
        link = self._link
        if link is None or self._disconnected.is_set():
            raise CallHangupError("no live stream to send DTMF on", call_id=self.call_sid)
        if not link.supports_dtmf_out:
            raise LocalProtocolError(
                f"{self.carrier} media streams cannot send DTMF; use SendDigits when dialling instead"
            )
        self.log.emit(ev.DTMF_SENT, digits=digits)
        self._call_on_loop("send_dtmf", digits)

    # ============================================================================ hangup
    def request_disconnect(self, generation: int | None = None) -> None:
        """Ask the transport to hang up (REST where configured, then close the socket). Non-blocking."""
        if generation is not None and generation != self._call_generation:
            log.warning("request_disconnect for stale generation %s ignored", generation)
            return
        if self._disconnected.is_set():
            return
        self.log.emit(ev.HANGUP_REQUESTED)
        if self._link is None:
            self.signal_disconnected("hangup_before_connect")
            return
        self._call_on_loop("disconnect")

    def hangup(self, timeout: float = 10.0) -> bool:
        """Request a disconnect and wait for the call to end. Returns False if it did not end in time."""
        self.request_disconnect()
        return self._disconnected.wait(timeout)

    # ============================================================================ AMD / status (call control feeds these)
    def _on_answered_by(self, answered_by: str) -> None:
        with self._cond:
            self._answered_by = answered_by
            self._cond.notify_all()
        self.log.emit(ev.ANSWERED_BY, answered_by=answered_by)

    def wait_for_answered_by(self, timeout: float = 30.0) -> str:
        """Block until answering-machine detection reports (``human``, ``machine_start``, ...)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._answered_by is None:
                if self._disconnected.is_set():
                    raise CallHangupError("call ended before machine detection finished", call_id=self.call_sid)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CallTimeoutError("no answering-machine result in time", call_id=self.call_sid)
                self._cond.wait(remaining)
            return self._answered_by

    @property
    def answered_by(self) -> str | None:
        return self._answered_by

    # ============================================================================ mixer taps (prior art)
    def set_mixer(self, mixer: Any) -> None:
        self._mixer = mixer

    @property
    def mixer(self) -> Any:
        return self._mixer

    def tap_caller(self, chunk: bytes, at: float | None = None) -> None:
        mixer = self._mixer
        if mixer is not None:
            mixer.write_caller(chunk, at)

    def tap_agent(self, chunk: bytes, at: float | None = None) -> None:
        mixer = self._mixer
        if mixer is not None:
            mixer.write_agent(chunk, at)

    # ============================================================================ events
    def add_event_listener(self, listener: Callable[[CallEvent], None]) -> Callable[[], None]:
        """Subscribe to this call's structured events; returns an unsubscribe function."""
        return self.log.subscribe(listener)

    @property
    def events(self) -> list[CallEvent]:
        return self.log.snapshot()

    # ============================================================================ helpers
    def _call_on_loop(self, method: str, *args: Any) -> None:
        link, loop = self._link, self._loop
        if link is None or loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(getattr(link, method), *args)
        except RuntimeError:  # loop closed between the check and the call
            pass

    def __enter__(self) -> VoiceSession:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._disconnected.is_set():
            self.hangup(timeout=5.0)


def iter_chunks(data: bytes, size: int) -> Iterable[bytes]:
    """Split ``data`` into ``size``-byte pieces (the last may be shorter)."""
    for start in range(0, len(data), size):
        yield data[start : start + size]
