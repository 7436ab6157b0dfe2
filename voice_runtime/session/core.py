"""``VoiceSession``: one call, seen from a plain sequential Python thread.

The flow thread calls *blocking intents* (``speak``, ``send_mark_and_wait``, ``listen``,
``request_clear_buffer``, ``hangup``, ``wait_for_dtmf`` ...). The event-loop thread (the transport) drains
outbound audio and marks and feeds back caller audio, mark echoes, DTMF and STT results through the public
:class:`~voice_runtime.session.link.TransportSide` methods. This module imports no transport and no provider.

The session is a coordinator over small collaborators, each with one job:

* :mod:`~voice_runtime.lifecycle` — the call's state table; :meth:`VoiceSession._transition` is the one place
  that moves it, wakes every waiter, resolves every mark and emits the event;
* :class:`~voice_runtime.session.outbound.OutboundQueue` — agent audio and marks, in order, bounded;
* :class:`~voice_runtime.session.inbox.Inbox` — utterances and DTMF keys not yet consumed, one waiter each;
* :class:`~voice_runtime.session.speech.Speaker` — TTS driving and barge-in (provider code, never under the lock);
* :class:`~voice_runtime.session.playback.Playback` — ``play``, pause/resume, beds, hold, DTMF tones and DTMF
  barge-in (made on first use; knows how much of each played item the caller heard);
* :func:`~voice_runtime.session.waits.wait_until` — the one deadline loop every blocking intent uses;
* :class:`~voice_runtime.call_events.EventLog` and :class:`~voice_runtime.stats.CallStats`.

Threading rules, which every method below obeys:

* Shared state is guarded by one lock; every waiter waits on one condition with a deadline. The end of the
  call notifies the condition and resolves every mark, so every blocked call wakes at once.
* The loop is never blocked: loop-side methods only take the lock briefly, and never call providers.
* Flow-side intents reach the loop with ``loop.call_soon_threadsafe`` — once per intent, never per frame.

Bounded memory (the overflow policies):

* Outbound agent audio not yet sent: at most ``max_outbound_seconds``; a producer that would exceed it
  blocks (back-pressure on the TTS) until the transport drains, the buffer is cleared, or the call ends.
* Inbound caller audio waiting for STT: at most ``inbound_max_frames`` items; when full the *oldest* frame
  is dropped and counted (``stats["inbound_dropped"]``) — fresh audio matters more for a live call.
* Committed utterances and DTMF digits not yet consumed: bounded, oldest dropped and counted.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from voice_runtime import call_events as ev
from voice_runtime.audio.frames import FRAME_BYTES, SAMPLE_RATE, ulaw_duration
from voice_runtime.bounded import put_drop_oldest
from voice_runtime.call_events import CallEvent, EventLog
from voice_runtime.conversation.helpers import ConversationHelpers
from voice_runtime.errors import (
    CallHangupError,
    CallNotAnsweredError,
    CallTimeoutError,
    LocalProtocolError,
    MissingStreamUrlError,
)
from voice_runtime.lifecycle import CallState, EndReason, Transition, next_state
from voice_runtime.marks import Mark, MarkOutcome
from voice_runtime.session.audio_in import AsyncAudioIn, AudioIn
from voice_runtime.session.inbox import Inbox
from voice_runtime.session.link import SessionLink
from voice_runtime.session.outbound import OutboundQueue
from voice_runtime.session.playback import Playback, PlayResult
from voice_runtime.session.speech import Speaker, SpeechResult
from voice_runtime.session.waits import wait_until
from voice_runtime.stats import CallStats

if TYPE_CHECKING:  # the provider protocols type the fields; the session imports no provider at run time
    from voice_runtime.providers.base import StreamingTts, SttProvider, TtsProvider

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

_ENDED = CallState.ENDED  # read per frame by send_audio on the loop

_DTMF_OUT = frozenset("0123456789*#ABCDabcdwW")


@dataclass(eq=False)
class VoiceSession(ConversationHelpers):
    """One call's coordinator. Create one per call (the server does this for you); never share one."""

    # What every caller frame and every inline echo read of the session, as slots side by side in the object:
    # on a server with hundreds of calls a session is out of the CPU caches by its call's next frame (20 ms on),
    # and a frame then costs about the cache lines it touches (benchmarks/README.md, "Stop 31"). In the
    # instance's attribute array these were spread over six lines; here they fill two. Everything else (and
    # every attribute a subclass adds) still lives in the instance ``__dict__``, which the base class provides.
    __slots__ = (
        "_audio_sinks", "_stt_feed", "_loop_thread", "_out", "_state", "_transport_send_now", "background_mixer",
        "_playout_until",
    )

    call_sid: str | None = None
    stream_sid: str | None = None
    caller_number: str | None = None
    stt: SttProvider | None = None
    stt_factory: Callable[[], SttProvider] | None = None
    stt_secondary_factory: Callable[[], SttProvider] | None = None
    on_stt_ready: Callable[[SttProvider], None] | None = None
    on_disconnected: Callable[[], None] | None = None
    tts: StreamingTts | TtsProvider | None = None
    called_number: str | None = None
    carrier: str | None = None
    custom_parameters: dict[str, str] = field(default_factory=dict)
    barge_in: bool = True
    on_dtmf: Callable[[str], None] | None = None
    max_outbound_seconds: float = 60.0
    inbound_max_frames: int = 500
    max_pending_utterances: int = 64
    event_log_size: int = 128  # recent events kept for ``events``; listeners see every event regardless
    dtmf_barge_in: bool = True  # a key stops the played prompt being heard (per play/speak: dtmf_interrupt=)
    false_barge_in_window: float | None = None  # seconds; see docs/audio.md (None: a barge-in cut always stands)
    # speak() queues position marks so pause/resume and false barge-in recovery continue it (docs/audio.md);
    # off by default: the marks cost ~5 messages a second each way while the agent speaks
    resumable_speech: bool = False
    # How far ahead of the carrier speech is read from a streaming TTS (seconds queued here, not yet sent). Past
    # it the speech worker waits until half of it has been sent: a provider streaming faster than real time then
    # waits in its socket, not in the call's memory, and the worker wakes a few times per utterance, not once per
    # network chunk (each HTTP chunk is still its own piece: benchmarks/README.md, "Speech read-ahead"). It never
    # delays audio the carrier needs (the first chunk goes at once, and the wait ends with ~half of it still
    # queued). None: read as fast as the provider sends (up to ``max_outbound_seconds``).
    speech_read_ahead_seconds: float | None = 1.0

    def __post_init__(self) -> None:
        # One lock per call. Hot loop-side paths take the RLock itself (a C call); waits use the condition on it.
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self.log = EventLog(self.event_log_size)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._link: SessionLink | None = None
        self._transport_send_now: Callable[[bytes], bool] | None = None
        self._loop_thread: int | None = None
        self._generation = 0
        self._mixer: Any = None
        self._mixer_watcher: Callable[[], None] | None = None
        self._playback: Any = None
        #: Loop side: the outbound path's bed mixer (the playback's), or None while no playback feature was used.
        #: An attribute, set with the playback, because the transport reads it for every frame it sends.
        self.background_mixer: Any = None
        self._init_call_state()

    def _init_call_state(self) -> None:
        """Everything that belongs to one call (a :meth:`reset` starts over from here)."""
        self._state = CallState.AWAITING_STREAM
        self._end_reason: EndReason | None = None
        self._requested_end_reason: EndReason | None = None  # request_disconnect(reason=...)
        self._ended = threading.Event()  # mirrors state ENDED, for lock-free reads and plain waits
        self.call_stats = CallStats(created_at=time.monotonic())
        self.stats: Counter[str] = self.call_stats.counters
        self.inbound: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=self.inbound_max_frames)
        self._out = OutboundQueue(self.max_outbound_seconds)
        self._utterances: Inbox[str] = Inbox("utterances (listen)", self.max_pending_utterances)
        self._dtmf: Inbox[str] = Inbox("DTMF keys (wait_for_dtmf)", 256)
        self._answered_by: str | None = None
        self._clear_epoch = 0  # bumped by every clear
        self._playout_until = 0.0  # monotonic time the carrier's buffer runs dry (set by the transport)
        self._speaker = Speaker(self)
        self._audio_readers: list[AudioIn | AsyncAudioIn] = []  # told when the call ends
        self._audio_sinks: list[Callable[[bytes], None]] = []  # called per caller chunk, on the loop
        self._stt_feed: Callable[[bytes], None] | None = None  # the STT's feed_audio, once it takes audio inline
        if self._playback is not None:  # a reused session (reset): the old call's playback goes with it
            self._playback.close()
            self._playback = None
            self.background_mixer = None

    # ============================================================================ the lifecycle
    @property
    def state(self) -> CallState:
        return self._state

    def _transition(
        self,
        transition: Transition,
        reason: EndReason | str | None = None,
        announce: tuple[ev.EventKind, dict[str, Any]] | None = None,
    ) -> bool:
        """The one place the call's state changes. Returns False when the state stays the same.

        Under the lock: move the state (an illegal move raises ``LocalProtocolError``), resolve every mark on
        the way to ENDED, wake every waiter. Then, outside it: emit ``announce`` (the event that caused the move,
        e.g. ``stream_started``), ``state_changed``, and on the way to ENDED the marks' and the call's end.
        """
        detail = None
        with self._cond:
            old = self._state
            new = next_state(old, transition)
            if new is old and transition is not Transition.RESET:
                return False
            now = time.monotonic()
            hung_up: list[Mark] = []
            if transition is Transition.RESET:
                self._generation += 1
                self._link = None
                self._transport_send_now = None
                self.stream_sid = None
                self.stt = None
                self._init_call_state()
                self.log.clear()
            else:
                self._state = new
            if new is CallState.LIVE:
                self.call_stats.started_at = now
            elif new is CallState.ENDED:
                end = EndReason.coerce(reason if reason is not None else EndReason.DISCONNECTED)
                if old is CallState.ENDING and self._requested_end_reason is not None and end is EndReason.HANGUP:
                    end = self._requested_end_reason  # the hangup we asked for, with the reason we gave
                if end is EndReason.OTHER:
                    detail = str(reason)
                self._end_reason = self.call_stats.end_reason = end
                self.call_stats.ended_at = now
                hung_up = self._out.hang_up()
                self._ended.set()
            self._cond.notify_all()
        if announce is not None:
            self.log.emit(announce[0], **announce[1])
        self.log.emit(ev.STATE_CHANGED, old=old, new=new)
        if new is CallState.ENDED:
            for mark in hung_up:
                self.log.emit(ev.MARK_HUNG_UP, name=mark.label, wire_name=mark.wire_name)
            self._speaker.stop_current()
            for reader in tuple(self._audio_readers):
                reader.ended()
            self._speaker.queue.cancel_pending(hung_up=True)
            self._push_inbound_sentinel()
            self.log.emit(ev.CALL_ENDED, reason=self._end_reason, detail=detail)
            callback = self.on_disconnected
            if callback is not None:
                try:
                    callback()
                except Exception:
                    log.exception("on_disconnected callback failed")
        return True

    @property
    def is_disconnected(self) -> bool:
        return self._ended.is_set()

    @property
    def is_connected(self) -> bool:
        return self._state is CallState.LIVE or self._state is CallState.ENDING

    @property
    def end_reason(self) -> EndReason | None:
        return self._end_reason

    @property
    def generation(self) -> int:
        """Increments on every :meth:`reset`; pass it to ``request_disconnect`` to avoid hanging up a newer call."""
        return self._generation

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop

    def set_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Prior-art hook: remember the loop that serves this session."""
        self._loop = loop

    def reset(self) -> None:
        """Prepare this object for another call (prior-art sequential reuse).

        New code should create one session per call instead; the server does. Pending waiters of the old
        call are released as hung up first.
        """
        self.signal_disconnected(EndReason.RESET)
        stt, loop = self.stt, self._loop
        if stt is not None and loop is not None and loop.is_running():
            asyncio.run_coroutine_threadsafe(stt.stop(), loop)
        self._transition(Transition.RESET)

    # ============================================================================ transport side (TransportSide)
    def attach_stream(
        self,
        loop: asyncio.AbstractEventLoop,
        link: SessionLink,
        *,
        stream_id: str,
        call_id: str,
        carrier: str,
        custom_parameters: dict[str, str] | None = None,
        before_live: Callable[[], None] | None = None,
    ) -> None:
        """The carrier's ``start`` arrived (on the loop). See :class:`~voice_runtime.session.link.TransportSide`."""
        params = dict(custom_parameters or {})
        with self._cond:
            # LIVE without a link: a 0.1.x-style ``signal_ws_connected`` announced the stream before the
            # transport attached (hand-written transports, tests); the transport now takes it over.
            announced = self._state is CallState.LIVE and self._link is None
            if self._state is not CallState.AWAITING_STREAM and not announced:
                raise LocalProtocolError(f"a stream cannot start on a call in state {self._state}")
            self._loop, self._link = loop, link
            # The transport's optional fast path for audio produced on its loop (see send_audio).
            self._transport_send_now = getattr(link, "send_audio_now", None)
            self._loop_thread = threading.get_ident()  # attach_stream runs on the loop's thread
            self.stream_sid, self.call_sid, self.carrier = stream_id, call_id, carrier
            self.custom_parameters.update(params)
            self.caller_number = self.caller_number or params.get("from_number") or params.get("From")
            self.called_number = self.called_number or params.get("to_number") or params.get("To")
            self.log.call_id = call_id
        if before_live is not None:
            before_live()
        announce = (ev.STREAM_STARTED, {"stream_id": stream_id, "carrier": carrier, "parameters": params})
        if announced:
            self.log.emit(announce[0], **announce[1])
        elif not self._transition(Transition.STREAM_STARTED, announce=announce):
            return
        with self._cond:
            wake = self._out.pending and self._out.pump_idle
            if wake:
                self._out.pump_idle = False
        if wake:
            link.wake()

    def signal_ws_connected(self, stream_sid: str) -> None:
        """Prior-art hook for transports that do not use :meth:`attach_stream`."""
        with self._cond:
            self.stream_sid = stream_sid
            if self._loop is None:
                try:
                    self._loop = asyncio.get_running_loop()
                except RuntimeError:
                    pass
        announce = (ev.WS_CONNECTED, {"stream_id": stream_sid})
        if self._state is not CallState.AWAITING_STREAM or not self._transition(Transition.STREAM_STARTED, announce=announce):
            self.log.emit(*announce[:1], **announce[1])

    def signal_disconnected(self, reason: EndReason | str = EndReason.DISCONNECTED) -> None:
        """The call is over. Idempotent; wakes every waiter at once. Safe from any thread."""
        self._transition(Transition.END, reason)

    def feed_caller_audio(self, ulaw: bytes) -> None:
        """Loop side, per frame: hand caller audio to raw-audio readers and the STT queue (drop oldest when full).

        With raw-audio readers and no STT, the STT queue is skipped: nobody would read it. An STT that takes
        audio inline (:meth:`feed_stt_inline`) is one of the listeners, and the queue is skipped for it too.
        """
        sinks = self._audio_sinks
        if sinks:
            # Decided first: a chunk the STT's inline feed was handed (even if it raised) is not queued again.
            unqueued = self.stt is None or self._stt_feed is not None  # nobody reads the queue, or the STT took it
            for sink in sinks:
                try:  # free in 3.11 unless it raises: no wrapper call per listener and frame
                    sink(ulaw)
                except Exception:
                    self._audio_sink_failed(sink)
            if unqueued:
                return
        if put_drop_oldest(self.inbound, ulaw):
            self.stats["inbound_dropped"] += 1

    def put_inbound(self, data: bytes | None) -> None:
        """Prior-art entry point: feed caller audio (or ``None`` to end) from any thread.

        Without a loop the frame is dropped, counted, and one WARNING says so (a transport that forgot
        ``set_loop`` would otherwise lose all caller audio silently). The first frame that is not 160 bytes
        (20 ms) logs one DEBUG line: legal, but worth knowing when an STT misbehaves.
        """
        if data and len(data) != FRAME_BYTES and not self.stats["nonstandard_frames"]:
            self.stats["nonstandard_frames"] += 1
            log.debug("put_inbound: non-standard frame size %d bytes (expected %d)", len(data), FRAME_BYTES)
        loop = self._loop
        if loop is None:
            self.stats["inbound_without_loop"] += 1
            if self.stats["inbound_without_loop"] == 1:
                log.warning("put_inbound: session._loop is None (call set_loop first); caller audio is dropped")
            return
        if data is None:
            self._push_inbound_sentinel()
        else:
            self._run_on_loop(self.feed_caller_audio, data)

    def take_outbound(self, max_bytes: int) -> tuple[bytes, Mark | None]:
        """Loop side: up to ``max_bytes`` of audio, or the mark at the head, or ``(b"", None)`` (now idle)."""
        with self._lock:
            audio, mark = self._out.take(max_bytes)
            if audio and self._out.blocked_producers:  # room for blocked producers; notify only then
                self._cond.notify_all()
            return audio, mark

    def mark_sent(self, mark: Mark) -> None:
        self.log.emit(ev.MARK_SENT, name=mark.label, wire_name=mark.wire_name)

    def clear_sent(self) -> list[Mark]:
        """Loop side: the clear is on the wire; everything the carrier still held is cleared."""
        with self._cond:
            cleared = self._out.clear_at_carrier()
            self._playout_until = 0.0
            self._cond.notify_all()
        self.log.emit(ev.CLEAR_SENT, marks_cleared=len(cleared))
        for mark in cleared:
            self.log.emit(ev.MARK_CLEARED, name=mark.label, wire_name=mark.wire_name)
        return cleared

    @property
    def marks_at_carrier(self) -> bool:
        """Loop side: marks sent and not yet echoed (a clear now would clear them)."""
        return bool(self._out.in_flight)

    def set_playout_until(self, when: float) -> None:
        self._playout_until = when  # read by the speaker's barge-in decision (Speaker.agent_speaking)

    def signal_mark_received(self, name: str) -> None:
        """Loop side: the carrier echoed ``name``."""
        with self._cond:
            mark, expected = self._out.echoed(name)
            if mark is not None:
                self._cond.notify_all()
        if mark is None:
            if expected:
                self.stats["mark_echo_after_clear"] += 1  # Twilio echoes cleared marks: expected
            else:
                self.stats["mark_echo_unknown"] += 1
                log.debug("echo for unknown mark %r", name)
            return
        waited = (mark.resolved_at or 0.0) - (mark.sent_at or mark.created_at)
        self.log.emit(ev.MARK_PLAYED, name=mark.label, wire_name=name, waited=waited)

    def receive_dtmf(self, digit: str) -> None:
        """The caller pressed ``digit`` (loop side)."""
        with self._cond:
            if self._dtmf.put(digit):
                self.stats["dtmf_dropped"] += 1
            self._cond.notify_all()
        self.log.emit(ev.DTMF_RECEIVED, digit=digit)
        if self._playback is not None:
            self._playback.key_pressed(digit)  # DTMF barge-in: a key can stop the prompt being heard
        callback = self.on_dtmf
        if callback is not None:
            try:
                callback(digit)
            except Exception:
                log.exception("on_dtmf callback failed")

    def receive_answered_by(self, answered_by: str) -> None:
        """Answering-machine detection reported (call control side, any thread)."""
        with self._cond:
            self._answered_by = answered_by
            self._cond.notify_all()
        self.log.emit(ev.ANSWERED_BY, answered_by=answered_by)

    # ---------------------------------------------------------------------------- STT sink (the STT binding calls these)
    def receive_transcript(self, text: str) -> None:
        """A committed utterance from the STT (any thread)."""
        text = text.strip()
        if not text:
            return
        with self._cond:
            if self._utterances.put(text):
                self.stats["utterances_dropped"] += 1
            self._cond.notify_all()
        self.log.emit(ev.STT_FINAL, text=text)

    def receive_partial(self, text: str) -> None:
        self.log.emit(ev.STT_PARTIAL, text=text)

    def receive_stt_error(self, message: str) -> None:
        self.stats["stt_errors"] += 1
        self.log.emit(ev.STT_ERROR, error=message)

    def caller_speech_started(self) -> None:
        """The STT heard the caller start talking (barge-in decides here)."""
        self._speaker.caller_started_talking()

    def caller_speech_ended(self, ended_at: float | None = None) -> None:
        """The STT/VAD heard the caller stop talking (the start of the turn-latency clock).

        ``ended_at`` is the provider's estimate (``time.monotonic()``) of when the sound itself stopped — earlier
        than now by the silence the endpointer waited for; None when the provider cannot say.
        """
        stt = self.stt
        provider = getattr(getattr(stt, "primary", stt), "name", None) if stt is not None else None
        self.log.emit(ev.SPEECH_ENDED, ended_at=ended_at, provider=provider)

    def inject_transcript(self, text: str) -> None:
        """Deliver ``text`` as if the STT had committed it (tests, text-only channels)."""
        self.receive_transcript(text)

    # ============================================================================ waiting for the call
    def wait_for_ws_connect(self, timeout: float = 30.0) -> None:
        """Block until the media stream has started. Raises :class:`CallNotAnsweredError` otherwise."""
        with self._cond:
            wait_until(
                self._cond,
                lambda: True if self.call_stats.started_at is not None else None,
                timeout=timeout,
                ended=self._ended.is_set,
                on_end=lambda: CallNotAnsweredError(
                    f"call ended before its media stream connected ({self._end_reason})",
                    call_id=self.call_sid,
                    status=None if self._end_reason is None else str(self._end_reason),
                ),
                on_timeout=lambda: CallNotAnsweredError(timeout, call_id=self.call_sid),
            )

    def wait_until_disconnected(self, timeout: float | None = 30.0) -> bool:
        """Block until the call has ended; returns False at the deadline."""
        return self._ended.wait(timeout)

    # ============================================================================ outbound audio
    def put_outbound_sync(self, data: bytes, timeout: float | None = 30.0) -> None:
        """Queue μ-law 8 kHz agent audio. Blocks (back-pressure) while the buffer is full.

        Speech submitted with ``speak`` before this call is queued before this audio (the call waits for it).
        Raises :class:`CallHangupError` if the call is gone and :class:`CallTimeoutError` if the buffer
        stayed full for ``timeout`` seconds (the transport stopped draining).
        """
        if not data:
            return
        self._speaker.queue.barrier(timeout)
        self._put_outbound(data, timeout, None)

    def _put_outbound(self, data: bytes, timeout: float | None, clear_epoch: int | None) -> bool:
        """Queue audio. With ``clear_epoch`` (the speech worker), refuse it (False) if a clear came since, and
        first wait, past ``speech_read_ahead_seconds`` queued, until half of that is left (see the field)."""
        generation = self._generation
        ended = lambda: self._ended.is_set() or generation != self._generation  # noqa: E731
        size = len(data)
        with self._cond:
            read_ahead = self.speech_read_ahead_seconds
            if clear_epoch is not None and read_ahead is not None and self._out.buffered_bytes > read_ahead * SAMPLE_RATE:
                self._wait_for_read_ahead(int(read_ahead * SAMPLE_RATE) // 2, timeout, clear_epoch, ended)
            if not ended() and not self._out.has_room(size):
                self.stats["outbound_backpressure_waits"] += 1
                self._out.blocked_producers += 1
                try:
                    wait_until(
                        self._cond,
                        lambda: True if ended() or self._out.has_room(size) else None,
                        timeout=timeout,
                        ended=lambda: False,
                        on_end=lambda: CallHangupError(call_id=self.call_sid),
                        on_timeout=lambda: CallTimeoutError("outbound audio buffer stayed full", call_id=self.call_sid),
                    )
                finally:
                    self._out.blocked_producers -= 1
            if ended():
                raise CallHangupError("call ended while queueing audio", call_id=self.call_sid)
            if clear_epoch is not None and clear_epoch != self._clear_epoch:
                return False
            wake = self._out.push_audio(bytes(data)) and self._link is not None
            if not wake and self._link is None:
                self._out.pump_idle = True  # no transport yet: attach_stream wakes it
        if wake:
            self._call_on_loop("wake")
        return True

    def _wait_for_read_ahead(self, resume_at: int, timeout: float | None, clear_epoch: int, ended: Callable[[], bool]) -> None:
        """The speech worker's soft wait (condition held): until ``resume_at`` bytes or fewer are queued, a clear,
        or the end. At ``timeout`` it goes on and queues anyway: a read-ahead limit never fails a speech (a call
        on hold, whose pump does not drain, only makes it queue as it did without one)."""
        self.stats["speech_read_ahead_waits"] += 1
        self._out.blocked_producers += 1  # take_outbound notifies while a producer waits
        try:
            self._cond.wait_for(
                lambda: ended() or self._out.buffered_bytes <= resume_at or clear_epoch != self._clear_epoch, timeout
            )
        finally:
            self._out.blocked_producers -= 1

    @property
    def clear_epoch(self) -> int:
        """How many clears this call has had (the speech worker refuses audio synthesized before the last one)."""
        return self._clear_epoch

    @property
    def outbound_buffered_seconds(self) -> float:
        """Agent audio queued locally and not yet handed to the carrier."""
        return ulaw_duration(self._out.buffered_bytes)

    @property
    def outbound_pending(self) -> bool:
        return self._out.pending

    # ============================================================================ raw audio (speech-to-speech, echo)
    def audio_in(self, *, timeout: float | None = 30.0, max_chunks: int = 500) -> AudioIn:
        """A blocking iterator of the caller's μ-law audio from now on (see :mod:`~voice_runtime.session.audio_in`).

        Each read returns everything that arrived since the last one; the iteration ends when the call ends.
        Bounded: past ``max_chunks`` unread chunks the oldest are dropped (``stats["audio_in_dropped"]``).
        It works next to the STT (both get every frame) or without one.
        """
        return AudioIn(self, timeout=timeout, max_chunks=max_chunks)

    def audio_in_async(self, *, max_chunks: int = 500) -> AsyncAudioIn:
        """The async form of :meth:`audio_in`, to iterate on the session's event loop (``async for``)."""
        return AsyncAudioIn(self, max_chunks=max_chunks)

    def add_audio_listener(self, listener: Callable[[bytes], None]) -> Callable[[], None]:
        """Call ``listener(ulaw)`` with every caller chunk, inline on the event loop; returns a remover.

        The lowest-overhead way to consume caller audio (no buffer, no wake-up): for loop-side code such as an
        echo (``session.add_audio_listener(session.send_audio)``) or a speech-to-speech client's socket send.
        It must be quick and must not block; an exception is logged and the listener removed.
        """

        removed = False

        def remove() -> None:
            nonlocal removed
            if not removed:  # once per registration (a listener added twice is there twice)
                removed = True
                self._remove_audio_sink(listener)

        # Registered as is, not wrapped: feed_caller_audio catches what it raises (see _audio_sink_failed).
        self._audio_sinks = [*self._audio_sinks, listener]  # copy on write: the loop iterates without a lock
        return remove

    def _remove_audio_sink(self, sink: Callable[[bytes], None]) -> None:
        """Drop one registration of ``sink`` (copy on write, like adding)."""
        sinks = list(self._audio_sinks)
        for index, registered in enumerate(sinks):
            if registered is sink:
                del sinks[index]
                break
        self._audio_sinks = sinks

    def _audio_sink_failed(self, sink: Callable[[bytes], None]) -> None:
        """A listener raised (a reader's ``push`` never does): log it and remove it, as documented.

        The STT's inline feed is not lost with it: the STT gets the rest of the call's audio through ``inbound``
        again, from the next frame."""
        if sink is self._stt_feed:
            log.exception("STT feed_audio failed; the STT reads caller audio from its queue again")
            self._stt_feed = None
        else:
            log.exception("audio listener %r failed; removed", sink)
        self._remove_audio_sink(sink)

    def feed_stt_inline(self, feed: Callable[[bytes], None]) -> bool:
        """Loop side: from now on hand each caller chunk to the started STT's ``feed(ulaw)``, not to ``inbound``.

        Why: through the queue every 20 ms frame of every call costs a ``put``, a Future, a wake-up and a step
        of the STT's reader task; a provider that only buffers each chunk (``feed_audio``: ElevenLabs, Azure,
        the mock) can take it inline, like an audio listener. What is queued already goes to ``feed`` first, in
        order, so nothing is lost or reordered by the switch; the end of input (``None``) still comes through
        ``inbound``. The STT bounds its own buffer from then on (``inbound_dropped`` no longer counts for it).
        Returns False, changing nothing, when the call has ended or its input already did.
        """
        queue = self.inbound
        queued: list[bytes | None] = []
        while not queue.empty():
            queued.append(queue.get_nowait())
        if self._state is _ENDED or None in queued:
            for item in queued:
                queue.put_nowait(item)  # back as they were (the queue had room for them a moment ago)
            return False
        for chunk in queued:
            if chunk:
                feed(chunk)
        self._stt_feed = feed
        self._audio_sinks = [*self._audio_sinks, feed]  # copy on write: the loop iterates without a lock
        return True

    def _add_audio_reader(self, reader: AudioIn | AsyncAudioIn) -> Callable[[], None]:
        push = reader.push
        self._audio_readers = [*self._audio_readers, reader]
        self._audio_sinks = [*self._audio_sinks, push]  # copy on write: the loop iterates without a lock

        def remove() -> None:
            self._audio_readers = [r for r in self._audio_readers if r is not reader]
            self._remove_audio_sink(push)

        return remove

    def send_audio(self, ulaw: bytes, timeout: float | None = 30.0) -> bool:
        """Queue raw agent audio (μ-law 8 kHz), the cheap path for echo and speech-to-speech flows.

        From a flow thread it is :meth:`put_outbound_sync` (back-pressure, raises ``CallHangupError`` once the
        call ended). On the session's event loop it never blocks: it appends and wakes the pump directly (no
        thread hop), and returns False — counting ``stats["outbound_overflow"]`` — when the buffer already holds
        ``max_outbound_seconds``. Follow it with :meth:`send_mark` to learn when the caller heard it.
        """
        # Thread identity, not asyncio.get_running_loop(): on 3.11 that costs a getpid() syscall per call.
        if self._loop_thread != threading.get_ident():
            self.put_outbound_sync(ulaw, timeout)
            return True
        # On the loop (inline here, not a helper call: an echo or speech-to-speech flow does this per frame).
        if not ulaw:
            return True
        out = self._out
        # Nothing queued and the transport idle: this audio is next in line whatever it does, so offer it to the
        # transport to send right now (an echo or speech-to-speech flow: one per 20 ms frame) and skip the
        # queue's push, wake and take. Read without the lock: only this thread takes from the queue, and audio
        # another thread appends after this check is queued after this audio — the order it would have anyway.
        if out.pump_idle and not out.items and self._state is not _ENDED:
            send_now = self._transport_send_now
            if send_now is not None and send_now(ulaw if type(ulaw) is bytes else bytes(ulaw)):
                return True
        return self._queue_audio_on_loop(ulaw)

    def _queue_audio_on_loop(self, ulaw: bytes) -> bool:
        """``send_audio`` on the loop when the transport did not take the audio at once: queue it, wake the pump."""
        with self._lock:
            if self._ended.is_set():
                return False
            if not self._out.has_room(len(ulaw)):
                self.stats["outbound_overflow"] += 1
                return False
            link = self._link
            wake = self._out.push_audio(bytes(ulaw)) and link is not None
            if not wake and link is None:
                self._out.pump_idle = True
        if wake:
            link.wake()  # type: ignore[union-attr]
        return True

    # ============================================================================ marks
    def send_mark(self, label: str = "mark") -> Mark:
        """Queue a mark after all audio queued so far — including every ``speak`` submitted before — and
        return a handle whose ``wait()`` blocks."""
        self._speaker.queue.barrier()
        mark = Mark(label, call_id=self.call_sid)
        with self._cond:
            if self._ended.is_set():
                mark.resolve(MarkOutcome.HUNG_UP)
                return mark
            wake = self._out.push_mark(mark) and self._link is not None
            if not wake and self._link is None:
                self._out.pump_idle = True
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

    # ============================================================================ clear / barge-in
    def request_clear_buffer(self) -> None:
        """Drop every bit of agent audio not yet played: local queue now, carrier buffer via ``clear``.

        Marks queued behind the dropped audio resolve ``CLEARED`` at once; marks already at the carrier
        resolve ``CLEARED`` when the clear goes out (their later echoes are ignored).
        """
        self._clear_buffer(cancel_queued_speech=True)

    def _clear_buffer(self, *, cancel_queued_speech: bool) -> None:
        """``request_clear_buffer``; a pause keeps the speeches queued behind (they play after the resume)."""
        if cancel_queued_speech:
            self._speaker.queue.cancel_pending()  # an interrupted agent does not carry on with its queued speech ...
        with self._cond:
            if self._ended.is_set():
                return
            self._clear_epoch += 1  # ... nor with the rest of the utterance being synthesized right now
            cleared = self._out.drop_local()
            self._cond.notify_all()
            has_link = self._link is not None
        self._speaker.stop_current()
        self.log.emit(ev.CLEAR_REQUESTED, local_marks=len(cleared))
        for mark in cleared:
            self.log.emit(ev.MARK_CLEARED, name=mark.label, wire_name=mark.wire_name, sent=False)
        if has_link:
            link = self._link
            if link is not None and self._loop_thread == threading.get_ident():
                # On the loop: tell the transport now, not on the next loop turn, so that audio sent after this
                # clear (the transport may send it at once) cannot reach the carrier before the clear does.
                link.clear()
            else:
                self._call_on_loop("clear")

    @property
    def agent_speaking(self) -> bool:
        """True while agent audio is queued, at the carrier, or a ``speak`` is producing it."""
        return self._speaker.agent_speaking()

    # ============================================================================ speaking
    def speak(
        self,
        text: str | Iterable[str],
        *,
        wait: bool = False,
        timeout: float | None = 30.0,
        tts: Any = None,
        stop_event: threading.Event | None = None,
        dtmf_interrupt: bool | None = None,
        resumable: bool | None = None,
    ) -> SpeechResult:
        """Speak ``text`` with the session's TTS; returns at once (``wait=False``) with a :class:`SpeechResult`.

        Synthesis runs on the call's speech worker (:mod:`voice_runtime.session.speech_queue`), in submission
        order, so the flow can listen or start an LLM request while it plays. ``text`` may be an iterable of
        text chunks (an LLM's tokens): providers with a streaming-input API (``synthesize_stream``) get them
        token by token, the others one sentence at a time as each sentence completes. ``wait=True`` returns
        once the caller heard it, it was cleared (barge-in), or the call ended (``timeout`` bounds that wait).
        Barge-in and clears stop it and drop queued speech. Provider failures are reported in
        ``result.error`` and through the provider's ``on_error``; they never raise.
        A key pressed while it plays stops it when ``dtmf_interrupt`` is true (default False: speech keeps the
        prior art's behaviour).
        ``resumable`` (default: the session's ``resumable_speech``) queues it with position marks, so
        :meth:`pause_playback` / :meth:`resume_playback` and false barge-in recovery continue it from the first
        unheard frame; ``result.wait()`` then follows it across a pause (docs/audio.md).
        """
        if dtmf_interrupt is not None or self._playback is not None:
            self.playback.note_speech(dtmf_interrupt)
        resumable = self.resumable_speech if resumable is None else resumable
        return self._speaker.speak(
            text, wait=wait, timeout=timeout, tts=tts, stop_event=stop_event, resumable=resumable, dtmf_interrupt=dtmf_interrupt
        )

    # ============================================================================ listening
    def listen(self, timeout: float | None = 30.0) -> str:
        """Return the next committed utterance.

        Utterances that arrived earlier and were not consumed are returned first. Raises
        :class:`CallHangupError` when the call ends (after queued utterances are consumed),
        :class:`CallTimeoutError` at the deadline, and :class:`~voice_runtime.errors.ConcurrencyError` if
        another thread is already listening.
        """
        with self._cond:
            self._utterances.claim_waiter()
            try:
                return wait_until(
                    self._cond,
                    self._utterances.pop,
                    timeout=timeout,
                    ended=self._ended.is_set,
                    on_end=lambda: CallHangupError("Call was hung up during listen operation", call_id=self.call_sid),
                    on_timeout=lambda: CallTimeoutError(f"nothing heard within {timeout}s", call_id=self.call_sid),
                )
            finally:
                self._utterances.release_waiter()

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

    def clear_inbound(self, timeout: float = 1.0) -> None:
        """Drop caller audio waiting for the STT and any unconsumed utterances.

        From a flow thread this returns once the loop has drained the queue (at most ``timeout`` seconds,
        0.1.x's bound), so audio heard *before* this call is not transcribed after it.
        """
        self.clear_transcripts()
        done = threading.Event()

        def drain() -> None:
            q = self.inbound
            while not q.empty():
                if q.get_nowait() is None:  # keep the end-of-stream sentinel
                    q.put_nowait(None)
                    break
            done.set()

        self._run_on_loop(drain)
        loop = self._loop
        if loop is not None and loop.is_running() and not done.is_set() and not done.wait(timeout):
            log.debug("clear_inbound drain did not finish within %.1fs", timeout)

    # ============================================================================ DTMF
    def wait_for_dtmf(self, timeout: float | None = 10.0) -> str:
        """Return the next key the caller pressed (earlier unread presses first)."""
        with self._cond:
            self._dtmf.claim_waiter()
            try:
                return wait_until(
                    self._cond,
                    self._dtmf.pop,
                    timeout=timeout,
                    ended=self._ended.is_set,
                    on_end=lambda: CallHangupError("call ended while waiting for DTMF", call_id=self.call_sid),
                    on_timeout=lambda: CallTimeoutError(f"no key pressed within {timeout}s", call_id=self.call_sid),
                )
            finally:
                self._dtmf.release_waiter()

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

    def send_dtmf(self, digits: str, *, method: str = "auto") -> Any:
        """Send DTMF to the far end: a carrier message where the stream has one (Plivo ``sendDTMF``), else
        in-band Q.23 tones in the media path (Twilio). ``method="tones"`` forces tones, ``"message"`` the
        message. Returns the tones' play handle (``None`` for a message). See docs/audio.md."""
        if not digits or any(d not in _DTMF_OUT for d in digits):
            raise ValueError(f"invalid DTMF digits {digits!r}")
        if method not in ("auto", "message", "tones"):
            raise ValueError(f"method must be 'auto', 'message' or 'tones', got {method!r}")
        link = self._link
        if link is None or self._ended.is_set():
            raise CallHangupError("no live stream to send DTMF on", call_id=self.call_sid)
        if method == "tones" or (method == "auto" and not link.supports_dtmf_out):
            return self.playback.send_tones(digits)
        if not link.supports_dtmf_out:
            raise LocalProtocolError(f"{self.carrier} media streams cannot send DTMF messages; use method='tones'")
        self.log.emit(ev.DTMF_SENT, digits=digits, method="message")
        self._call_on_loop("send_dtmf", digits)
        return None

    # ============================================================================ hangup
    def request_disconnect(self, generation: int | None = None, *, reason: EndReason | str | None = None) -> None:
        """Ask the transport to hang up (REST where configured, then close the socket). Non-blocking.

        ``reason`` (e.g. ``EndReason.IDLE``) becomes the call's end reason when the hangup completes, instead
        of the transport's generic ``hangup``.
        """
        if generation is not None and generation != self._generation:
            log.warning("request_disconnect for stale generation %s ignored", generation)
            return
        if self._ended.is_set():
            return
        self.log.emit(ev.HANGUP_REQUESTED)
        if reason is not None:
            with self._cond:
                self._requested_end_reason = EndReason.coerce(reason)
        if self._link is None:
            self.signal_disconnected(reason if reason is not None else EndReason.HANGUP_BEFORE_CONNECT)
            return
        self._transition(Transition.HANGUP_REQUESTED)
        self._call_on_loop("disconnect")

    def hangup(self, timeout: float = 10.0, *, reason: EndReason | str | None = None) -> bool:
        """Hang up and wait until the call has ended, following the rules of every other wait.

        Returns True once the call is over (``end_reason`` says why; ``reason`` sets it, see
        :meth:`request_disconnect`). Raises :class:`CallTimeoutError` if it did not end in time.
        """
        self.request_disconnect(reason=reason)
        if not self._ended.wait(timeout):
            raise CallTimeoutError(f"call did not end within {timeout}s of hangup", call_id=self.call_sid)
        return True

    # ============================================================================ AMD
    def wait_for_answered_by(self, timeout: float = 30.0) -> str:
        """Block until answering-machine detection reports (``human``, ``machine_start``, ...).

        Raises :class:`CallTimeoutError` when no result came in time, :class:`CallHangupError` if the call ended.
        """
        with self._cond:
            return wait_until(
                self._cond,
                lambda: self._answered_by,
                timeout=timeout,
                ended=self._ended.is_set,
                on_end=lambda: CallHangupError("call ended before machine detection finished", call_id=self.call_sid),
                on_timeout=lambda: CallTimeoutError("no answering-machine result in time", call_id=self.call_sid),
            )

    @property
    def answered_by(self) -> str | None:
        return self._answered_by

    # ============================================================================ mixer taps (prior art)
    def set_mixer(self, mixer: Any) -> None:
        self._mixer = mixer
        watcher = self._mixer_watcher
        if watcher is not None:
            watcher()

    def watch_mixer(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` after each :meth:`set_mixer`; returns the function that stops it.

        One watcher at a time: the call's ``CallAudio`` (a newer one replaces it, and the older one's stop then
        leaves the newer in place). Why: the call loop writes each frame to the taps only while something takes
        the audio, and a mixer set mid-call must start getting frames from the next one."""
        self._mixer_watcher = callback

        def stop() -> None:
            if self._mixer_watcher is callback:
                self._mixer_watcher = None

        return stop

    @property
    def mixer(self) -> Any:
        return self._mixer

    def tap_caller(self, chunk: bytes, at: float | None = None) -> None:
        mixer = self._mixer
        if mixer is not None:  # 0.1.x mixers take (chunk) only: pass ``at`` just when there is one
            mixer.write_caller(chunk) if at is None else mixer.write_caller(chunk, at)

    def tap_agent(self, chunk: bytes, at: float | None = None) -> None:
        mixer = self._mixer
        if mixer is not None:
            mixer.write_agent(chunk) if at is None else mixer.write_agent(chunk, at)

    # ============================================================================ hand-written transports (0.1.x)
    @property
    def outbound(self) -> asyncio.Queue[bytes]:
        """0.1.x: agent audio as an ``asyncio.Queue`` (a view of the ordered outbound queue; see
        :mod:`voice_runtime.session.hand_written`)."""
        from voice_runtime.session.hand_written import OutboundQueueView

        view = self.__dict__.get("_outbound_view")
        if view is None:
            view = self.__dict__["_outbound_view"] = OutboundQueueView(self)
        return view

    async def get_outbound(self) -> bytes:
        """For hand-written transports (on the loop): the next chunk of agent audio to send."""
        from voice_runtime.session.hand_written import get_outbound

        return await get_outbound(self)

    async def get_pending_mark(self) -> str:
        """For hand-written transports (on the loop): the next wire mark name to send and later echo back."""
        from voice_runtime.session.hand_written import get_pending_mark

        return await get_pending_mark(self)

    # ============================================================================ recording pause
    def pause_recording(self) -> None:
        """Record silence from now on (every tap: the file, mixers, live listeners) until :meth:`resume_recording`.

        For the part of a call that must not be kept, such as a card number. Agent audio queued during the
        pause stays silent even if it plays after the resume. (The recorders follow these two events.)
        """
        self.log.emit(ev.RECORDING_PAUSED)

    def resume_recording(self) -> None:
        """Record again from now on (see :meth:`pause_recording`)."""
        self.log.emit(ev.RECORDING_RESUMED)

    # ============================================================================ playback (session/playback.py)
    @property
    def playback(self) -> Playback:
        """The call's :class:`~voice_runtime.session.playback.Playback` (made on first use)."""
        playback = self._playback
        if playback is None:
            with self._cond:
                if self._playback is None:
                    self._playback = Playback(self)
                    self._playback.false_barge_in_window = self.false_barge_in_window
                    self.background_mixer = self._playback.background
                playback = self._playback
        return playback

    def play(self, source: Any, *, wait: bool = False, interruptible: bool = True, loop: bool = False, volume: float = 1.0, **kwargs: Any) -> PlayResult:
        """Play a file, raw audio or chunks; returns a handle like ``speak``'s. See docs/audio.md."""
        return self.playback.play(source, wait=wait, interruptible=interruptible, loop=loop, volume=volume, **kwargs)

    def set_background(self, source: Any, volume: float = 0.1, loop: bool = True) -> None:
        """Mix a bed under the agent's speech and silences (frame level; never delays a clear)."""
        self.playback.set_background(source, volume=volume, loop=loop)

    def clear_background(self) -> None:
        self.playback.set_background(None)

    def set_thinking_sound(self, source: Any, volume: float = 0.3) -> None:
        """Play ``source`` in the silence between the caller's turn and the next ``speak``/``play``."""
        self.playback.set_thinking_sound(source, volume=volume)

    def hold(self, music: Any, still_holding_prompt: Any = None, period: float = 30.0) -> None:
        """Music in every silence until :meth:`unhold`, with ``still_holding_prompt`` after each ``period`` s."""
        self.playback.hold(music, still_holding_prompt=still_holding_prompt, period=period)

    def unhold(self) -> float:
        return self.playback.unhold()

    def pause_playback(self) -> bool:
        """Stop agent audio at once; :meth:`resume_playback` continues played items and resumable speech
        (``speak(resumable=True)``) from the first unheard frame. Other speech is cleared, as by a barge-in."""
        return self.playback.pause()

    def resume_playback(self) -> bool:
        return self.playback.resume()

    def stop_speaking(self) -> None:
        """Stop the speech being synthesized and drop all agent audio not yet heard (like a barge-in)."""
        self._speaker.stop_current()
        if self._playback is not None:
            self._playback.stop_speech()  # resumable speech: stopped for good, not paused
        self.request_clear_buffer()

    def wake_outbound(self) -> None:
        """Nudge the transport's pump (a background layer changed while it may be idle). Any thread."""
        self._call_on_loop("wake")

    # ============================================================================ events
    def add_event_listener(self, listener: Callable[[CallEvent], None]) -> Callable[[], None]:
        """Subscribe to this call's structured events; returns an unsubscribe function."""
        return self.log.subscribe(listener)

    @property
    def events(self) -> list[CallEvent]:
        return self.log.snapshot()

    # ============================================================================ helpers
    def _push_inbound_sentinel(self) -> None:
        """End the inbound stream for the STT (``None``), dropping the oldest frame if the queue is full."""
        self._run_on_loop(put_drop_oldest, self.inbound, None)

    def _run_on_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the session's loop: directly when already on it, else thread-safely."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            fn(*args)
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # loop closed between the check and the call
            pass

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
        if not self._ended.is_set():
            try:
                self.hangup(timeout=5.0)
            except CallTimeoutError:
                log.warning("call %s did not end within 5s of hangup on leaving its block", self.call_sid)
