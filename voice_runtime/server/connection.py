"""The one WebSocket loop: drives a :class:`VoiceSession` from any carrier dialect.

One :class:`CallConnection` per carrier socket. It owns three things and nothing else:

* the **receive loop** (this coroutine): text message → dialect → typed event → session;
* the **outbound pump** (one task, the socket's only writer): session's ordered queue of audio and marks,
  plus urgent clears and DTMF, paced a little ahead of real time;
* the call's **STT binding** (:mod:`~voice_runtime.server.stt_binding`): built on ``start``, stopped on the way out.

It talks to the session only through the session's public transport-side contract
(:class:`~voice_runtime.session.link.TransportSide`), and implements the other direction
(:class:`~voice_runtime.session.link.SessionLink`) itself.

It is written against :class:`WireSocket` (receive/send/close), so the same loop runs on Starlette/uvicorn
or on a bare ``websockets`` server. Every task it creates is cancelled and awaited before ``run`` returns.

Why pace at all, when carriers buffer "any size": a barge-in must silence the agent within a frame. Audio
already at the carrier can only be dropped by a ``clear``; audio still in our queue is dropped for free and
never reaches the recording. Keeping a small lead (default 240 ms) at the carrier gives glitch-free playback
under load while keeping the stale audio per barge-in small, and lets us batch many 20 ms frames per message.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from voice_runtime import call_events as ev
from voice_runtime.audio.frames import FRAME_BYTES, SAMPLE_RATE, ulaw_duration
from voice_runtime.errors import RemoteProtocolError
from voice_runtime.lifecycle import EndReason
from voice_runtime.protocols import (
    AudioCleared,
    Connected,
    Dialect,
    DtmfReceived,
    MarkEchoed,
    MediaReceived,
    StreamStarted,
    StreamStopped,
    UnknownEvent,
    detect_dialect,
)
from voice_runtime.offloop import run_off_loop
from voice_runtime.recording.base import Recorder
from voice_runtime.server.push import Deliver, Ended
from voice_runtime.server.stt_binding import SttBinding
from voice_runtime.server.inbound_budget import BudgetConfig, InboundBudget, Verdict
from voice_runtime.session import VoiceSession

log = logging.getLogger(__name__)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class WireClosed(Exception):
    """The carrier socket is closed (cleanly or not)."""


class WireSocket(Protocol):
    async def receive(self) -> str | bytes:
        """Next message; raises :class:`WireClosed` when the socket is gone."""

    async def send(self, text: str) -> None:
        """Send one text message; raises :class:`WireClosed` when the socket is gone."""

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


@dataclass
class ConnectionConfig:
    """Tunables for one call's socket loop."""

    start_timeout: float = 10.0  # carrier must send ``start`` this soon after connecting
    playout_lead: float = 0.24  # seconds of agent audio kept ahead at the carrier
    # Audio per outbound media message. 0.4 s (20 frames) measured ~10 % less server CPU than 0.1 s at 500
    # calls (2.47 vs 2.77 ms per call-second, benchmarks/README.md) with no pacing cost; barge-in is unaffected
    # because a clear empties the carrier's buffer whatever its size. Plivo caps it by payload size.
    max_batch_seconds: float = 0.40
    max_inbound_message: int = 64 * 1024  # larger messages are dropped and counted; the call goes on
    hard_max_inbound_message: int = 1024 * 1024  # the socket layer refuses larger ones outright (close 1009)
    max_protocol_errors: int = 1000  # misbehaviour of any kind (parse, binary, oversize, unknown, order, rate): close 1008
    # Per-connection inbound rate budget (server/inbound_budget.py); None disables it (the benchmark's "before").
    inbound_budget: BudgetConfig | None = field(default_factory=BudgetConfig)
    # At most this many already-queued carrier messages are handled before this call yields the event loop.
    # uvicorn parses a whole 256 KiB socket read (~1,000 Twilio frames) into the queue at once and an await
    # on a non-empty queue never suspends, so without this one flooding socket held the loop for the whole
    # batch and every other call's marks waited behind it (benchmarks/flood_bench.py). A carrier sends ~50
    # messages a second, so a real call almost never reaches it.
    max_messages_per_turn: int = 32
    # Seconds of background bed kept at the carrier in silences, refilled a batch at a time like speech (so a
    # bed stalls no more easily than speech does). Speech never waits behind it: when speech comes and the
    # carrier holds only bed, the pump clears the bed first (CallConnection._drop_fill).
    background_lead: float = 0.24
    stt_stop_timeout: float = 5.0
    close_timeout: float = 1.0


SessionFor = Callable[[StreamStarted, Dialect], Awaitable[VoiceSession | None]]
"""Resolves the session for a stream once ``start`` is known (None: refuse the stream)."""


class SessionUnavailable(Exception):
    """``session_for`` could not produce a session (a provider factory raised): close 1011."""


_DROP_REPORT_INTERVAL = 1.0  # seconds between coalesced protocol_error events of one call
_ACCEPT = Verdict.ACCEPT  # a module global: one lookup, not two, per check on the per-frame path


class CallConnection:
    """Runs one call. Implements the session's :class:`~voice_runtime.session.SessionLink`."""

    # The attributes every caller frame and every inline echo read are slots, side by side in the object: on a
    # server with hundreds of calls a call's objects are out of the CPU caches by its next frame (20 ms later),
    # and what a frame then costs is mostly the cache lines it touches. As slots they fill three lines, where
    # in the instance's attribute array they were spread over seven. Everything else lives in ``__dict__``.
    __slots__ = (
        "session", "dialect", "_budget", "_max_inbound", "_playout_lead", "wire", "_decode", "_tap",
        "_media_bytes_per_second", "_mark_credit", "_send_media_now", "_encode_media_bytes", "_pump_parked",
        "_clear_pending", "_dtmf_pending", "_batch", "_playhead", "_turn_audio_sent", "_stream_t0", "__dict__",
        "__weakref__",
    )

    def __init__(
        self,
        wire: WireSocket,
        session_for: SessionFor,
        *,
        config: ConnectionConfig | None = None,
        recorder_factory: Callable[[VoiceSession], Recorder | None] | None = None,
        hangup: Callable[[VoiceSession], Awaitable[None]] | None = None,
        dialect: Dialect | None = None,
        on_started: Callable[[VoiceSession], None] | None = None,
    ) -> None:
        self.wire = wire
        self.session_for = session_for
        self.config = config or ConnectionConfig()
        # The two settings the per-frame paths read, copied here so a frame does not touch the config's lines too.
        self._max_inbound = self.config.max_inbound_message
        self._playout_lead = self.config.playout_lead
        self.recorder_factory = recorder_factory
        self.hangup_hook = hangup
        self.dialect: Dialect | None = dialect
        self.on_started = on_started
        self.session: VoiceSession | None = None
        self.stats: Counter[str] = Counter()
        self.closed = asyncio.Event()
        self.recorder: Recorder | None = None
        #: Where each frame's audio is written: :attr:`recorder`, or None while it has no use for audio (a
        #: ``CallAudio`` with no sink, mixer or listener: most calls), so the per-frame path skips the call.
        self._tap: Recorder | None = None
        self.stt_binding: SttBinding | None = None
        self.end_reason: EndReason | None = None
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._pacing: asyncio.Future[None] | None = None  # the pump's pacing sleep; clears and DTMF cut it short
        self._bed_wait: asyncio.Future[None] | None = None  # the pump's wait between bed refills; wake cuts it
        self._fill_queued = False  # the last audio sent was background fill (the carrier may hold only bed)
        self._fill_version = -1  # the background layers' version that fill was taken from
        self._clear_pending = False
        self._dtmf_pending: list[str] = []
        self._disconnect_task: asyncio.Task[None] | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._stt_task: asyncio.Task[None] | None = None
        self._hanging_up = False
        self._pump_parked = False  # the pump waits on _wake with nothing to send (inline sends allowed)
        self._send_now: Callable[[str | bytes], None] | None = getattr(wire, "send_nowait", None)
        # _send_now for encoded media (bytes), read just after ``wire.writable``: the wire's cheaper bytes-only
        # sender where it has one (picows' C send, bound). Chosen when the stream starts (None for L16 streams).
        self._send_media_now: Callable[[bytes], None] | None = None
        self._batch = 160
        self._stream_t0 = 0.0
        self._playhead = 0.0
        self._turn_audio_sent = False  # AUDIO_SENT is emitted for the first audio after a mark or clear
        self._encode_media_bytes: Callable[[bytes], bytes] | None = None  # the dialect's, for send_now wires
        self._decode: Callable[[bytes], bytes] | None = None
        self._encode: Callable[[bytes], bytes] | None = None
        self._encoder: Any = None  # stream-format encoder (L16): flushed before marks, reset on clear
        self._warned: set[str] = set()
        self._unreported_drops: Counter[str] = Counter()  # drops counted but not yet in a protocol_error event
        self._reported_drop_reasons: set[str] = set()
        self._drops_reported_at = 0.0
        self._media_bytes_per_second = 8000.0
        self._budget: InboundBudget | None = None
        self._mark_credit = 0  # marks sent and not yet echoed: their echoes are exempt from the event budget
        self._close_reason = "too many protocol errors"

    # ----------------------------------------------------------------------------- SessionLink
    @property
    def supports_dtmf_out(self) -> bool:
        return bool(self.dialect and self.dialect.supports_dtmf_out)

    def wake(self) -> None:
        if (
            self._pump_parked and self._send_now is not None and not self._clear_pending and not self._dtmf_pending
            and not self._bed_active()
        ):
            self._send_inline()
        else:
            self._wake.set()
            if self._bed_wait is not None:  # the pump is between background refills: speech goes first
                _settle(self._bed_wait)

    def _bed_active(self) -> bool:
        """A background layer is on: the pump (which mixes it) must send, not the inline path."""
        bed = self.session.background_mixer if self.session is not None else None
        return bed is not None and bed.active

    def _send_inline(self) -> None:
        """The pump is parked idle and the wire can send without waiting (picows): send right here.

        This skips a task switch and an ``Event`` round trip per outbound chunk — for an echo or a
        speech-to-speech flow that is one per 20 ms frame. It keeps the pump's rules: it runs only while the pump
        is parked (so the socket still has one writer), only for μ-law streams (no resampler holding audio back
        before a mark), only while the socket accepts data at once, and sends only what pacing allows *now*;
        anything else is left in the queue for the pump, which it wakes.
        """
        session, dialect, wire = self.session, self.dialect, self.wire
        send_now, encode = self._send_now, self._encode_media_bytes
        assert session is not None and dialect is not None and send_now is not None and encode is not None
        lead = self._playout_lead
        try:
            while wire.writable:  # type: ignore[attr-defined]
                now = time.monotonic()
                if self._playhead - now > lead:
                    break
                audio, mark = session.take_outbound(self._batch)
                if mark is not None:
                    send_now(dialect.encode_mark(mark.wire_name))
                    session.mark_sent(mark)
                    self._mark_credit += 1
                    self._turn_audio_sent = False
                    continue
                if not audio:
                    return  # drained: the pump stays parked and the queue is idle again
                send_now(encode(audio))
                self._account_sent(audio, now)
        except WireClosed:
            session.signal_disconnected(EndReason.SEND_FAILED)
            return
        self._wake.set()

    def send_audio_now(self, audio: bytes) -> bool:
        """The session's fast path for audio made on the loop with nothing queued before it: send it here.

        ``VoiceSession.send_audio`` on the event loop (an inline listener, an ``async for`` echo, a
        speech-to-speech client) offers each chunk here first when its outbound queue is empty and idle. Under the
        same rules as :meth:`_send_inline` (pump parked, nothing urgent pending, no bed to mix, the socket takes
        data now, pacing allows it, one message's worth) the chunk goes straight to the wire: no queue push, no
        wake, no take. Otherwise False, and the session queues it as before. A clear or DTMF pending makes it
        False, so audio sent after a clear never overtakes it.
        """
        send_now, session = self._send_media_now, self.session
        if (
            send_now is None or not self._pump_parked or self._clear_pending or self._dtmf_pending
            or len(audio) > self._batch or not self.wire.writable  # type: ignore[attr-defined]
        ):
            return False
        assert session is not None
        bed = session.background_mixer
        if bed is not None and bed.active:
            return False  # the pump mixes the bed in: it sends
        now = time.monotonic()
        playhead = self._playhead
        if playhead - now > self._playout_lead:
            return False
        try:
            send_now(self._encode_media_bytes(audio))  # type: ignore[misc]
        except WireClosed:
            session.signal_disconnected(EndReason.SEND_FAILED)
            return True  # taken: the call is ending, and queueing it would only send it nowhere
        # _account_sent, inlined: this runs once per echoed frame of every call.
        if playhead < now:
            self._playhead = playhead = now
        if not self._turn_audio_sent:
            self._first_audio_of_turn()
        recorder = self._tap
        if recorder is not None:
            recorder.write_agent(audio, playhead)
        self._playhead = playhead = playhead + len(audio) / SAMPLE_RATE  # ulaw_duration: a byte per sample
        session.set_playout_until(playhead)
        return True

    def _account_sent(self, audio: bytes, now: float) -> None:
        if self._playhead < now:
            self._playhead = now
        assert self.session is not None
        if not self._turn_audio_sent:
            self._first_audio_of_turn()
        if self._tap is not None:
            self._tap.write_agent(audio, self._playhead)
        self._playhead += ulaw_duration(len(audio))
        self.session.set_playout_until(self._playhead)

    def _watch_recorder(self, recorder: Recorder | None) -> None:
        """Write frames to ``recorder`` only while it wants them.

        A recorder with ``watch_demand`` (``CallAudio``) calls back with True or False whenever it gains or loses
        its last use for audio (a sink, a mixer, a live listener), from any thread; any other recorder is written
        to always. Why: every call has a ``CallAudio`` and most record nothing, and the write per frame each way
        was a Python call, a property and four tests that only said so.
        """
        watch = getattr(recorder, "watch_demand", None)
        if watch is None:
            self._tap = recorder
            return

        def on_demand(wanted: bool) -> None:
            self._tap = recorder if wanted else None  # one attribute store: safe from any thread under the GIL

        watch(on_demand)

    def _first_audio_of_turn(self) -> None:
        """Once per agent turn (reset by a mark or a clear): its first audio is on the wire, and the carrier
        starts playing it at the playhead (later than now while earlier audio is still buffered there)."""
        self._turn_audio_sent = True
        assert self.session is not None
        self.session.log.emit(ev.AUDIO_SENT, playout_at=self._playhead)

    def clear(self) -> None:
        self._clear_pending = True
        self._wake.set()
        self._interrupt_pacing()

    def send_dtmf(self, digits: str) -> None:
        self._dtmf_pending.append(digits)
        self._wake.set()
        self._interrupt_pacing()

    def _interrupt_pacing(self) -> None:
        pacing = self._pacing
        if pacing is not None and not pacing.done():
            pacing.set_result(None)

    def disconnect(self) -> None:
        if self._disconnect_task is None:
            self._hanging_up = True
            self._disconnect_task = asyncio.ensure_future(self._hang_up())

    # ----------------------------------------------------------------------------- main loop
    async def run(self) -> None:
        """Serve the socket until the call ends. Never raises for carrier misbehaviour."""
        reason = EndReason.CARRIER_CLOSED
        # The budget's clock starts now, when the socket is served, not when the session is ready: the carrier
        # streams from its ``start`` on while the session is built (a thread, seconds on a loaded machine), and
        # that backlog is real time it has earned. Started later, the bucket would drop a legitimate catch-up.
        self._budget = InboundBudget(self.config.inbound_budget) if self.config.inbound_budget is not None else None
        try:
            started = await asyncio.wait_for(self._await_start(), self.config.start_timeout)
            if started is None:
                reason = EndReason.NO_START
                return
            try:
                session = await self.session_for(started, self.dialect)  # type: ignore[arg-type]
            except SessionUnavailable as exc:
                reason = EndReason.PROVIDER_FAILED
                self.stats["provider_failed"] += 1
                log.info("call could not be set up: %s; closing 1011", exc)  # counted + logged by admission
                await self._close(1011, "call setup failed")
                return
            if session is None:
                reason = EndReason.REFUSED
                self.stats["refused"] += 1
                await self._close(1008, "unknown stream")
                return
            self._begin(session, started)
            if self.on_started is not None:
                self.on_started(session)
            reason = await self._receive_loop()
        except asyncio.TimeoutError:
            reason = EndReason.START_TIMEOUT
            log.warning("carrier sent no 'start' within %.1fs; closing", self.config.start_timeout)
            await self._close(1008, "no start")
        except WireClosed:
            reason = EndReason.CLOSED_BEFORE_START
        finally:
            await self._finish(reason)

    async def _await_start(self) -> StreamStarted | None:
        for _ in range(16):  # connected (+ a few stray messages) before start, never more
            message = await self.wire.receive()
            if isinstance(message, bytes):
                self._count_drop("binary_frame")
                continue
            if self.dialect is None:
                try:
                    self.dialect = detect_dialect(message)
                except RemoteProtocolError as exc:
                    # Never guess: an opening no registered carrier claims is refused, with a reason.
                    self._count_drop(exc.reason)
                    await self._close(1008, "unknown carrier dialect")
                    return None
            try:
                event = self.dialect.parse(message)
            except RemoteProtocolError as exc:
                self._count_drop(exc.reason)
                continue
            if isinstance(event, StreamStarted):
                return event
        await self._close(1008, "no start")
        return None

    def _begin(self, session: VoiceSession, started: StreamStarted) -> None:
        assert self.dialect is not None
        self.session = session
        self._stream_t0 = time.monotonic()
        self._playhead = self._stream_t0
        fmt = started.media_format
        # Wire payload bytes per second of audio (the budget's "real time"): μ-law 8 kHz = 8000, L16 = 2 x rate.
        self._media_bytes_per_second = 8000.0 if fmt.is_mulaw_8k else 2.0 * fmt.sample_rate
        if not fmt.is_mulaw_8k:
            from voice_runtime.audio import L16Decoder, L16Encoder

            decoder, encoder = L16Decoder(fmt.sample_rate), L16Encoder(fmt.sample_rate)
            self._decode, self._encode = decoder.convert, encoder.convert
            self._encoder = encoder
            self._send_now = None  # a resampler holds audio back before marks: only the pump sends
        if self._send_now is not None:
            self._send_media_now = getattr(self.wire, "send_bytes_nowait", None) or self._send_now
        dialect = self.dialect
        encode_bytes = getattr(dialect, "encode_media_bytes", None)
        self._encode_media_bytes = encode_bytes if encode_bytes is not None else (lambda audio: dialect.encode_media(audio).encode())
        binding = self.stt_binding = SttBinding(session)
        session.attach_stream(
            self._loop,
            self,  # type: ignore[arg-type]  # SessionLink's supports_dtmf_out is a read-only property here
            stream_id=started.stream_id,
            call_id=started.call_id,
            carrier=self.dialect.name,
            custom_parameters=started.custom_parameters,
            before_live=binding.build,
        )
        if self.recorder_factory is not None:
            try:
                self.recorder = self.recorder_factory(session)
            except Exception:
                log.exception("recorder could not be created; call continues unrecorded")
            self._watch_recorder(self.recorder)
        self._pump_task = asyncio.ensure_future(self._pump())
        if binding.stt is not None:
            self._stt_task = asyncio.ensure_future(binding.start())

    async def _receive_loop(self) -> EndReason:
        """Feed every carrier message to :meth:`_dispatch` until the call ends.

        A wire that can *push* messages (``push_to``, e.g. the picows mode) hands each one to ``_dispatch``
        straight from its protocol callback: no queue hop and no future per message. Any other wire is pulled.
        """
        push_to = getattr(self.wire, "push_to", None)
        if push_to is not None:
            reason = await self._receive_pushed(push_to)
        else:
            reason = await self._receive_pulled()
        if reason is EndReason.PROTOCOL_ERRORS:
            await self._close(1008, self._close_reason)
        return reason

    async def _receive_pulled(self) -> EndReason:
        """Pull and dispatch, yielding the loop after every ``max_messages_per_turn`` messages (fairness)."""
        receive, dispatch = self.wire.receive, self._dispatch
        per_turn = max(1, self.config.max_messages_per_turn)
        handled = 0
        while True:
            try:
                message = await receive()
            except WireClosed:
                return EndReason.HANGUP if self._hanging_up else EndReason.CARRIER_CLOSED
            try:  # free unless it raises (3.11)
                reason = dispatch(message)
            except Exception:  # a bug in dispatch ends this call, as on a pushing wire (server/push.py)
                log.exception("carrier message handling failed; ending call")
                return EndReason.PUMP_FAILED
            if reason is not None:
                return reason
            handled += 1
            if handled >= per_turn:
                handled = 0
                self.stats["receive_yields"] += 1
                await asyncio.sleep(0)  # let the other calls' I/O and tasks run before the rest of our queue

    async def _receive_pushed(self, push_to: Callable[[Deliver, Ended], None]) -> EndReason:
        """Let the wire push each message to ``_dispatch`` (the contract: server/push.py) until the call ends."""
        done: asyncio.Future[EndReason] = self._loop.create_future()
        # The wire delivers from its own callback (picows' frame callback, uvicorn's data_received), whose
        # context is the listener's, not this call's task: each message runs in the task's context, so its log
        # lines carry the call id and what it schedules inherits it, as on the receive loop. ``partial`` over
        # ``Context.run``: the wire calls C code straight into _dispatch, with no Python wrapper per message.
        run = contextvars.copy_context().run
        deliver: Deliver = partial(run, self._dispatch)  # type: ignore[call-arg]  # run(callable, *args)

        def finish(result: object) -> None:
            if done.done():
                return
            if result is None:  # the socket closed
                reason = EndReason.HANGUP if self._hanging_up else EndReason.CARRIER_CLOSED
            elif isinstance(result, BaseException):  # a bug in dispatch: it ends this call only
                log.error("carrier message handling failed; ending call", exc_info=result)
                reason = EndReason.PUMP_FAILED
            else:
                reason = result  # type: ignore[assignment]  # what _dispatch returned: an EndReason
            done.set_result(reason)

        push_to(deliver, lambda result: run(finish, result))
        return await done

    def _dispatch(self, message: str | bytes) -> EndReason | None:
        """One carrier message after ``start``: parse it and hand its event to the session.

        Returns the end reason when the message ends the call (``stop``, too many protocol errors, a flood far
        over the inbound rate budget), else None. Runs once per 20 ms frame of every call: one parse, no
        allocation beyond the event, no task. The budget is checked *before* parsing, so a flood of junk
        costs a counter per message, not a JSON parse.
        """
        session, dialect, budget = self.session, self.dialect, self._budget
        assert session is not None and dialect is not None
        if budget is not None:
            verdict = budget.before_parse(len(message))
            if verdict is not _ACCEPT:
                return self._over_budget(verdict, budget)
        if len(message) > self._max_inbound:
            return self._misbehaved("oversized_message")
        if isinstance(message, bytes):
            return self._misbehaved("binary_frame")
        try:
            event = dialect.parse(message)
        except RemoteProtocolError as exc:
            return self._misbehaved(exc.reason)
        kind = type(event)
        if kind is MediaReceived:  # 50 a second per call: first, and nothing on its way it does not need
            payload = event.payload  # type: ignore[union-attr]
            if budget is not None:
                verdict = budget.media_parsed(len(payload) / self._media_bytes_per_second)
                if verdict is not _ACCEPT:
                    return self._over_budget(verdict, budget)
            if self._decode is not None:
                payload = self._decode(payload)
            if payload:
                session.feed_caller_audio(payload)
                recorder = self._tap
                if recorder is not None:
                    ts = event.timestamp_ms  # type: ignore[union-attr]
                    recorder.write_caller(payload, None if ts is None else self._stream_t0 + ts / 1000.0)
            return None
        if kind is MarkEchoed and self._mark_credit > 0:
            # The echo of a mark we sent: the runtime chose that rate (a flow may send marks back to back), so it
            # is not the peer's to budget. Echoes beyond what we sent go to the event budget like any event.
            self._mark_credit -= 1
        elif budget is not None and kind is not StreamStopped:
            verdict = budget.event()
            if verdict is not _ACCEPT:
                return self._over_budget(verdict, budget)
        if kind is MarkEchoed:
            session.signal_mark_received(event.name)  # type: ignore[union-attr]
        elif kind is DtmfReceived:
            session.receive_dtmf(event.digit)  # type: ignore[union-attr]
        elif kind is StreamStopped:
            return EndReason.CARRIER_STOP
        elif kind is AudioCleared:
            self.stats["clear_acked"] += 1
        elif kind is UnknownEvent:
            return self._misbehaved("unknown_event")
        elif kind is Connected:
            return self._misbehaved("late_connected")
        elif kind is StreamStarted:
            return self._misbehaved("out_of_order_start")
        return None

    def _misbehaved(self, reason: str) -> EndReason | None:
        """Count one misbehaviour; past ``max_protocol_errors`` (of any kind), or past the inbound budget's
        ``close_after_drops`` (each misbehaviour is a budget drop too), the call ends with close 1008."""
        self._count_drop(reason)
        budget = self._budget
        if budget is not None and reason != "rate_limited" and budget.misbehaved(reason) is Verdict.CLOSE:
            log.warning("closing call %s: inbound flood of rejected messages (%s)", self._call_id(), reason)
            self._close_reason = f"inbound rate over budget ({reason})"[:120]
            return EndReason.PROTOCOL_ERRORS
        if self.stats["protocol_errors"] <= self.config.max_protocol_errors:
            return None
        log.warning("closing call %s: too many protocol errors (last: %s)", self._call_id(), reason)
        self._close_reason = f"too many protocol errors ({reason})"[:120]
        return EndReason.PROTOCOL_ERRORS

    def _over_budget(self, verdict: Verdict, budget: InboundBudget) -> EndReason | None:
        """A message over the inbound rate budget: dropped and counted; well past it, close 1008."""
        if verdict is Verdict.CLOSE:
            self._count_drop("rate_limited")
            log.warning("closing call %s: inbound flood (%s) far over its rate budget", self._call_id(), budget.last_drop_reason)
            self._close_reason = f"inbound rate over budget ({budget.last_drop_reason})"
            return EndReason.PROTOCOL_ERRORS
        return self._misbehaved("rate_limited")

    def _call_id(self) -> str:
        return str(self.session.call_sid if self.session is not None else None)

    # ----------------------------------------------------------------------------- outbound
    async def _pump(self) -> None:
        """The socket's only writer: clears and DTMF first, then audio and marks in order, paced."""
        session, dialect = self.session, self.dialect
        assert session is not None and dialect is not None
        batch = int(self.config.max_batch_seconds * 8000)
        batch = self._batch = max(160, min(batch, dialect.max_media_payload()))
        lead = self.config.playout_lead
        loop = self._loop
        try:
            while True:
                if self._clear_pending:
                    self._clear_pending = False
                    await self.wire.send(dialect.encode_clear())
                    now = time.monotonic()
                    self._playhead = now
                    self._fill_queued = False
                    session.clear_sent()
                    self._turn_audio_sent = False
                    if self._encoder is not None:
                        self._encoder.reset()  # the resampler's tail is cleared audio too
                    if self.recorder is not None:
                        self.recorder.truncate_agent(now)
                    continue
                if self._dtmf_pending:
                    digits = self._dtmf_pending.pop(0)
                    await self.wire.send(dialect.encode_dtmf(digits))
                    continue
                audio, mark = session.take_outbound(batch)
                if mark is not None:
                    if self._fill_queued:
                        await self._drop_fill()  # the mark (a play's start mark) need not wait behind bed either
                    if self._encoder is not None:
                        # A resampling encoder holds back up to ~100 ms; the mark must follow all of it.
                        tail = self._encoder.flush()
                        if tail:
                            await self.wire.send(dialect.encode_media(tail))
                    await self.wire.send(dialect.encode_mark(mark.wire_name))
                    session.mark_sent(mark)
                    self._mark_credit += 1
                    self._turn_audio_sent = False
                    self._fill_queued = False  # bed sent after this mark must not be cleared (it would clear the mark)
                    continue
                bed = session.background_mixer
                if not audio:
                    if self._fill_queued and (bed is None or bed.version != self._fill_version):
                        await self._drop_fill()  # a layer changed or was cleared: the carrier's bed goes at once
                        # Look again before parking: the clear's send may have suspended, and audio queued
                        # meanwhile set _wake (the queue was idle, so its producer woke us and the next ones
                        # will not). Clearing _wake below without a new take would park the pump on it: a stall.
                        continue
                    if bed is not None and bed.active:
                        await self._fill_background(bed)
                        continue
                    self._wake.clear()
                    self._pump_parked = True
                    try:
                        await self._wake.wait()
                    finally:
                        self._pump_parked = False
                    continue
                if self._fill_queued:
                    await self._drop_fill()  # speech replaces the bed queued at the carrier, never waits behind it
                if bed is not None:
                    audio = bed.mix(audio)
                now = time.monotonic()
                if self._playhead < now:
                    self._playhead = now
                payload = self._encode(audio) if self._encode is not None else audio
                if payload:  # a resampling encoder (L16 16 kHz) may hold a chunk back: nothing to send yet
                    await self.wire.send(dialect.encode_media(payload))
                    if not self._turn_audio_sent:
                        self._first_audio_of_turn()
                if self._tap is not None:
                    self._tap.write_agent(audio, self._playhead)
                self._playhead += ulaw_duration(len(audio))
                session.set_playout_until(self._playhead)
                ahead = self._playhead - time.monotonic() - lead
                if ahead > 0:
                    # A bare future + timer, not wait_for(event.wait()): wait_for wraps the wait in a new Task
                    # each time, and this runs once per outbound batch of every call.
                    pacing = self._pacing = loop.create_future()
                    timer = loop.call_later(ahead, _settle, pacing)
                    try:
                        await pacing
                    finally:
                        timer.cancel()
                        self._pacing = None
        except WireClosed:
            session.signal_disconnected(EndReason.SEND_FAILED)
        except Exception:
            log.exception("outbound pump failed; ending call")
            session.signal_disconnected(EndReason.PUMP_FAILED)
            await self._close(1011, "internal error")

    async def _fill_background(self, bed: Any) -> None:
        """Silence with a bed on: keep ``background_lead`` of it at the carrier, then wait for speech or refill.

        Paced like speech: when less than ``background_lead`` is ahead, one batch (``max_batch_seconds``) goes
        out, so the bed has the same margin against a late event loop as speech and costs as few messages
        (2.5 a second at 0.4 s). It used to be topped up to 120 ms whenever 60 ms were left: a 60 ms margin,
        which a loaded loop missed (benchmarks/README.md, "Background bed"), and ~16 messages a second.
        Not counted as agent speech (no playout update), so the caller talking over a bed is not a barge-in.
        """
        lead = self.config.background_lead
        now = time.monotonic()
        if self._playhead < now:
            self._playhead = now
        if self._playhead - now <= lead:
            need = self._batch // FRAME_BYTES * FRAME_BYTES or FRAME_BYTES
            self._fill_version = bed.version
            fill = bed.fill(need)
            payload = self._encode(fill) if self._encode is not None else fill
            if payload:
                await self.wire.send(self.dialect.encode_media(payload))  # type: ignore[union-attr]
            if self._tap is not None:
                self._tap.write_agent(fill, self._playhead)
            self._playhead += ulaw_duration(need)
            self._fill_queued = True
        if self._wake.is_set() or self._clear_pending or self._dtmf_pending:
            self._wake.clear()
            return
        wait = self._bed_wait = self._loop.create_future()
        timer = self._loop.call_later(max(0.0, self._playhead - time.monotonic() - lead), _settle, wait)
        pacing = self._pacing = wait  # a clear or DTMF cuts the wait short too
        try:
            await wait
        finally:
            timer.cancel()
            self._bed_wait = None
            if self._pacing is pacing:
                self._pacing = None
        self._wake.clear()

    async def _drop_fill(self) -> None:
        """The carrier holds only background fill (sent after the last mark): clear it, so speech, a layer
        change or the end of the bed is heard at once rather than after up to ``background_lead`` + a batch.
        Only bed is lost (the bed reads on from where it was, a jump of under a second in a loop). No mark
        is ever cleared: with a mark still at the carrier (its audio may be playing, ahead of the fill) the
        fill stays, and speech waits behind it as it always did; sending a mark (after dropping the fill before
        it) resets ``_fill_queued``, and so does a clear."""
        self._fill_queued = False
        assert self.session is not None and self.dialect is not None
        now = time.monotonic()
        if self._playhead - now < FRAME_BYTES / 8000 or self.session.marks_at_carrier:
            return  # (almost) nothing of it left to play, or it would take a mark with it
        await self.wire.send(self.dialect.encode_clear())
        now = time.monotonic()
        self._playhead = now
        self.stats["background_fill_cleared"] += 1
        if self._encoder is not None:
            self._encoder.reset()
        if self.recorder is not None:
            self.recorder.truncate_agent(now)

    # ----------------------------------------------------------------------------- ending
    async def _hang_up(self) -> None:
        session = self.session
        if session is not None and self.hangup_hook is not None:
            try:
                await self.hangup_hook(session)
            except Exception:
                log.exception("hangup hook failed; closing the stream instead")
        await self._close(1000, "hangup")

    async def _close(self, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(self.wire.close(code, reason), self.config.close_timeout)
        except (asyncio.TimeoutError, WireClosed, RuntimeError, OSError):
            pass

    async def _finish(self, reason: EndReason) -> None:
        session = self.session
        self.end_reason = reason
        if session is not None:
            self._report_drops()  # before the call's end, so reports and metrics see every drop
            session.signal_disconnected(reason)
        tasks = [t for t in (self._pump_task, self._stt_task) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.stt_binding is not None:
            await self.stt_binding.stop(self.config.stt_stop_timeout)
        if self._disconnect_task is not None and not self._disconnect_task.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._disconnect_task), self.config.close_timeout + 5)
            except Exception:
                self._disconnect_task.cancel()
        await self._close(1000, "call ended")
        if self.recorder is not None:
            await self._close_recorder(self.recorder)
        if session is not None:
            wire = session.call_stats.wire
            wire.update(self.stats)
            if self.dialect is not None:
                wire["sequence_gaps"] += self.dialect.sequence_gaps
                wire["sequence_repeats"] += self.dialect.sequence_repeats
                session.stats["sequence_gaps"] += self.dialect.sequence_gaps
                session.stats["sequence_repeats"] += self.dialect.sequence_repeats
        self.closed.set()

    def _report_drops(self) -> None:
        """Emit one ``protocol_error`` event per reason with drops not yet reported (``count`` of them)."""
        session, pending = self.session, self._unreported_drops
        if session is None or not pending:
            return
        for reason, count in pending.items():
            session.log.emit(ev.PROTOCOL_ERROR, reason=reason, count=count)
        pending.clear()

    async def _close_recorder(self, recorder: Recorder) -> None:
        """Finish the recording off the event loop (file or network I/O may block)."""
        session = self.session
        try:
            finish = getattr(recorder, "shutdown", None) or recorder.close
            if getattr(recorder, "close_blocks", True):
                path = await run_off_loop(finish, name="recorder-close")
            else:
                path = finish()  # nothing to write or hand off: no thread for a no-op (CallAudio.close_blocks)
            if session is not None and path is not None:  # None: nothing kept (no sink, or handed off)
                session.log.emit(ev.RECORDING_SAVED, path=str(path))
        except Exception:
            log.exception("recorder close failed")

    def _count_drop(self, reason: str) -> None:
        """Count one dropped message. Counters move per message; the ``protocol_error`` event is coalesced.

        Why: under a flood the drops arrive at tens of thousands a second, and one event each (with its
        listeners: metrics, the turn tracker) was the largest cost of a dropped message on the shared loop.
        The first drop of each reason is reported at once; later ones are folded into one event per reason
        at most every ``_DROP_REPORT_INTERVAL`` seconds (``count`` = drops it stands for), and whatever is
        left is reported when the call ends, so the totals are exact.
        """
        self.stats["protocol_errors"] += 1
        self.stats[f"dropped_{reason}"] += 1
        if self.dialect is not None:
            self.dialect.dropped[reason] += 1
        if self.session is not None:
            self.session.stats[f"dropped_{reason}"] += 1
            pending = self._unreported_drops
            pending[reason] += 1
            now = time.monotonic()
            if reason not in self._reported_drop_reasons or now - self._drops_reported_at >= _DROP_REPORT_INTERVAL:
                self._reported_drop_reasons.add(reason)
                self._drops_reported_at = now
                self._report_drops()
        if reason not in self._warned:
            self._warned.add(reason)
            log.warning("dropped carrier message (%s); further drops of this kind are counted silently", reason)
