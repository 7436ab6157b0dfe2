"""What every carrier's call control shares: the one carrier seam.

Carrier modules (``twilio_control``, ``plivo_control``) subclass :class:`CallControlBase` and implement only
what differs between carriers — the REST calls (``_dial``, ``_hangup_call``) with the carrier's SDK, and
their webhook routes and documents. Everything about *how a call flow experiences a call* lives here once,
so it is identical on every carrier:

* dialled-call bookkeeping: carrier call id → session, and the single-use stream token bound to it (revoked
  on every path where the stream can no longer come);
* callbacks that arrive before the REST response told us the call id (kept briefly, then replayed) and late
  callbacks for calls already finished (ignored);
* status mapping: busy / no-answer / failed end the call and release every waiter with a typed
  :class:`~voice_runtime.lifecycle.EndReason`;
* **inbound answering and the one flow runner**: a webhook creates the session (off the event loop), binds a
  stream token, and runs the inbound flow once the stream is live; a stream that never comes ends the
  session (``stream_never_connected``) and revokes its token;
* the hangup policy: the flow's end hangs up over REST unless the call was transferred;
* ``call()``: dial, wait for the answer, run the block, hang up.

Carrier REST failures raise :class:`~voice_runtime.errors.CarrierApiError` on every carrier.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from voice_runtime import call_events as ev
from voice_runtime.conversation.flows import as_flow
from voice_runtime.errors import CallError, CallNotAnsweredError, CallTimeoutError, ConfigError
from voice_runtime.lifecycle import NOT_ANSWERED, EndReason
from voice_runtime.offloop import run_off_loop
from voice_runtime.once import NonceCache, ReplayCache
from voice_runtime.server.connection import SessionUnavailable
from voice_runtime.server.overload import capacity_response
from voice_runtime.server.provider_setup import report_setup_failure
from voice_runtime.session import VoiceSession
from voice_runtime.transports.webhooks import InboundAnswers, refuse_repoint

if TYPE_CHECKING:  # pragma: no cover
    from voice_runtime.server.app import VoiceServer

log = logging.getLogger(__name__)

Flow = Callable[[VoiceSession], Any]

#: Carrier call statuses after which no media stream will ever arrive.
NOT_ANSWERED_STATUSES = frozenset(str(r) for r in NOT_ANSWERED) | {"cancel"}
ENDED_STATUSES = NOT_ANSWERED_STATUSES | {"completed", "hangup"}

_MAX_EARLY_CALLS = 256
_MAX_EARLY_EVENTS = 16


@dataclass
class OutboundCall:
    """A call we dialled: its carrier id, its session and the stream token bound to it."""

    call_id: str
    session: VoiceSession
    token: str
    carrier: str

    def wait_answered(self, timeout: float = 60.0) -> VoiceSession:
        """Block until the media stream is live; raises :class:`CallNotAnsweredError` (with status)."""
        self.session.wait_for_ws_connect(timeout)
        return self.session


class CallControlBase:
    """Carrier-neutral half of call control. Subclasses set ``carrier`` and implement the REST calls."""

    carrier: str = ""
    #: The VoiceSession subclass for this carrier's calls (None: the server's ``session_class``).
    session_class: type[VoiceSession] | None = None

    def __init__(self, server: VoiceServer, *, public_url: str | None = None, inbound_stream_timeout: float = 30.0) -> None:
        self.server = server
        self.public_url = public_url or server.public_url
        self.inbound_flow = None
        self.inbound_stream_timeout = inbound_stream_timeout
        self._calls: dict[str, VoiceSession] = {}
        self._tokens: dict[str, str] = {}  # call id -> stream token, until the stream arrives or the call ends
        self._transferred: set[str] = set()
        self._early: OrderedDict[str, list[tuple[str, Any]]] = OrderedDict()
        self._finished: OrderedDict[str, None] = OrderedDict()  # recently forgotten: late callbacks are noise
        self._lock = threading.RLock()
        self.inbound_answers = InboundAnswers()  # call id -> the one answer document it ever gets
        server.register_call_control(self)

    def nonce_cache(self, ttl: float) -> ReplayCache:
        """This carrier's signature-nonce cache: the process's own, or the fleet's in Redis once the server's
        replay guards are shared (:func:`voice_runtime.fleet_replay.share_replay_guards`)."""
        shared = self.server.shared_replay
        return NonceCache(ttl=ttl) if shared is None else shared.nonce_cache(self.carrier, ttl, fallback=NonceCache(ttl=ttl))

    # ------------------------------------------------------------------ to implement per carrier
    def _dial(self, to: str, stream_url: str, session: VoiceSession, **options: Any) -> str:
        """Place the call over REST; return the carrier's call id. Failures raise ``CarrierApiError``."""
        raise NotImplementedError

    def _hangup_call(self, call_id: str) -> None:
        """Blocking REST hangup; "already ended" is success. Failures raise ``CarrierApiError``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ dialling
    def dial(self, to: str, *, session: VoiceSession | None = None, **options: Any) -> OutboundCall:
        """Dial ``to``; the returned handle's session receives the call's stream when answered."""
        if not to:
            raise ConfigError("dial() needs a destination number")
        session = session or self.new_session()
        session.carrier = self.carrier
        token = self.server.expect_stream(session, carrier=self.carrier)
        stream_url = self.server.stream_url(token, base_url=self.public_url)
        try:
            call_id = self._dial(to, stream_url, session, **options)
        except Exception:
            self.server.registry.revoke(token)
            raise
        session.call_sid = call_id
        session.called_number = session.called_number or to
        session.log.call_id = call_id
        with self._lock:
            self._tokens[call_id] = token
        self.track(call_id, session)
        if session.is_disconnected:  # busy/failed arrived while we were still dialling
            self.forget(call_id)
        return OutboundCall(call_id, session, token, self.carrier)

    @contextlib.contextmanager
    def call(self, to: str, *, answer_timeout: float = 60.0, hangup_timeout: float = 10.0, **options: Any) -> Iterator[VoiceSession]:
        """One call, one flow: ``with control.call("+1555...") as session: session.speak(...)``.

        Waits for the answer (raising :class:`CallNotAnsweredError` on busy/no-answer/failed or timeout, after
        cancelling the dial), yields the live session, and hangs up when the block exits.
        """
        outbound = self.dial(to, **options)
        session = outbound.session
        try:
            try:
                outbound.wait_answered(answer_timeout)
            except CallNotAnsweredError:
                if session.end_reason not in NOT_ANSWERED:  # busy/no-answer/failed: the carrier ended it already
                    self._safe_hangup(outbound.call_id)  # our own timeout: cancel the dial
                raise
            yield session
        finally:
            self._end_flow(session, hangup_timeout)
            self.forget(outbound.call_id)
            if session.call_sid and session.call_sid != outbound.call_id:  # re-keyed (Plivo: CallUUID)
                self.forget(session.call_sid)

    # ------------------------------------------------------------------ sessions and flows
    def new_session(self, **overrides: Any) -> VoiceSession:
        """A session for one of this carrier's calls: the server's defaults and this control's ``session_class``."""
        return self.server.new_session(session_class=self.session_class, **overrides)

    def set_session_class(self, session_class: type[VoiceSession] | None) -> None:
        """Give this carrier's calls their own VoiceSession subclass (checked now; None: the server's)."""
        from voice_runtime.server.app import check_session_class

        self.session_class = None if session_class is None else check_session_class(session_class)

    @property
    def inbound_flow(self) -> Flow | None:
        """This carrier's inbound flow (checked and adapted at registration: see ``conversation.flows``)."""
        return self._inbound_flow

    @inbound_flow.setter
    def inbound_flow(self, flow: Flow | None) -> None:
        self._inbound_flow = as_flow(flow)

    # ------------------------------------------------------------------ inbound answering (every carrier)
    def on_inbound_call(self, flow: Flow) -> Flow:
        """Decorator: run ``flow(session)`` in its own thread for every inbound call to our answer webhook."""
        self.inbound_flow = flow
        return flow

    def inbound_flow_or_none(self) -> Flow | None:
        return self.inbound_flow or self.server.inbound_flow

    async def answer_inbound_once(
        self, call_id: str, build: Callable[[], Awaitable[str | None]]
    ) -> Response | tuple[str | None, bool]:
        """Idempotent inbound answering: one answer document per carrier call id, ever.

        The first webhook for ``call_id`` runs ``build`` (which calls :meth:`answer_inbound` and renders the
        carrier's document); a retried or replayed webhook for the same id gets the same document back and
        creates nothing (its stream token is single use). Returns ``(document, fresh)``, or a ready 503 +
        ``Retry-After`` response when the server is at ``max_calls`` (the carrier retries or fails over).
        """
        if not self.inbound_answers.known(call_id) and self.server.at_call_capacity():
            return capacity_response(self.server.limits)
        document, fresh = await self.inbound_answers.answer(call_id, build)
        if not fresh:
            log.info("repeated %s answer webhook for call %s: same document, nothing created", self.carrier, call_id)
        return document, fresh

    async def answer_inbound(
        self, call_id: str, *, caller: str | None, called: str | None, base_url: str | None = None
    ) -> tuple[VoiceSession, str]:
        """Create the session for an answered inbound call and start its flow; returns it and its stream URL.

        The session is built off the event loop (a TTS factory may block), the stream token is bound to it,
        and the flow starts in its own thread, waiting for the stream.
        """
        flow = self.inbound_flow_or_none()
        assert flow is not None, "check inbound_flow_or_none() before answering"
        try:
            session = await asyncio.to_thread(
                self.new_session, call_sid=call_id or None, caller_number=caller, called_number=called, carrier=self.carrier
            )
        except Exception as exc:  # a provider factory raised: counted, logged once, announced; no 500 traceback
            report_setup_failure(self.server, call_id, exc)
            raise SessionUnavailable(f"{type(exc).__name__}: {exc}") from exc
        session.log.call_id = call_id or None
        if call_id and not self.track(call_id, session):  # the call id already has a session: never re-point
            session.signal_disconnected(EndReason.REFUSED)
            raise SessionUnavailable(f"call {call_id} already has a session")
        token = self.server.expect_stream(session, carrier=self.carrier)
        stream_url = self.server.stream_url(token, base_url=base_url or self.public_url)
        if call_id:
            with self._lock:
                self._tokens[call_id] = token
        self.server.start_flow(session, self._inbound_runner(flow, call_id, token))
        log.info("answering inbound %s call %s", self.carrier, call_id or "?")
        return session, stream_url

    def _inbound_runner(self, flow: Flow, call_id: str, token: str) -> Flow:
        """Run ``flow`` once the stream is live; a stream that never comes ends the session instead."""
        timeout = self.inbound_stream_timeout

        def run(session: VoiceSession) -> Any:
            try:
                session.wait_for_ws_connect(timeout)
            except CallNotAnsweredError as exc:
                log.warning("inbound %s call %s: %s", self.carrier, call_id or "?", exc)
                self.server.registry.revoke(token)
                session.signal_disconnected(EndReason.STREAM_NEVER_CONNECTED)
                if call_id:
                    self.forget(call_id)
                return None
            try:
                return flow(session)
            finally:
                self._end_flow(session, 10.0)
                if call_id:
                    self.forget(call_id)

        return run

    def _end_flow(self, session: VoiceSession, timeout: float) -> None:
        """The flow is done: hang up (the one hangup policy), bounded by ``timeout``."""
        if session.is_disconnected:
            return
        try:
            session.hangup(timeout)
        except CallTimeoutError:
            log.warning("call %s did not end within %.0fs of hangup", session.call_sid, timeout)
        except CallError as exc:
            log.info("hangup of call %s: %s", session.call_sid, exc)

    # ------------------------------------------------------------------ bookkeeping
    def track(self, call_id: str, session: VoiceSession) -> bool:
        """Bind ``call_id`` to ``session`` and replay callbacks that arrived before we knew the call.

        A call id already bound to *another* session is never re-pointed (returns False): a second request
        must not steal the real call's status/AMD callbacks, nor let its clean-up forget the real call.
        """
        with self._lock:
            if not refuse_repoint(self._calls, call_id, session):
                return False
            self._finished.pop(call_id, None)
            early = self._early.pop(call_id, [])
        for kind, payload in early:
            if kind == "status":
                status, data = payload
                self._apply_status(session, call_id, status, data)
            elif kind == "amd":
                session.receive_answered_by(payload)
        return True

    def rekey(self, old_id: str, new_id: str) -> None:
        """The carrier told us the call's lasting id (Plivo: request_uuid → CallUUID): move its bookkeeping."""
        with self._lock:
            session = self._calls.pop(old_id, None)
            token = self._tokens.pop(old_id, None)
            if token is not None:
                self._tokens[new_id] = token
            if old_id in self._transferred:
                self._transferred.discard(old_id)
                self._transferred.add(new_id)
        if session is not None:
            self.track(new_id, session)

    def forget(self, call_id: str) -> None:
        """Drop the call's bookkeeping; a stream token it never used is revoked with it."""
        with self._lock:
            self._calls.pop(call_id, None)
            self._transferred.discard(call_id)
            token = self._tokens.pop(call_id, None)
            self._finished[call_id] = None
            while len(self._finished) > _MAX_EARLY_CALLS:
                self._finished.popitem(last=False)
        if token is not None:
            self.server.registry.revoke(token)  # no-op if the stream already claimed it

    def session_for_call(self, call_id: str) -> VoiceSession | None:
        with self._lock:
            return self._calls.get(call_id)

    def _remember_early(self, call_id: str, kind: str, payload: Any) -> None:
        with self._lock:
            if call_id in self._finished:
                log.debug("late %s callback for finished call %s ignored", kind, call_id)
                return
            events = self._early.setdefault(call_id, [])
            self._early.move_to_end(call_id)
            if len(events) < _MAX_EARLY_EVENTS:
                events.append((kind, payload))
            while len(self._early) > _MAX_EARLY_CALLS:
                self._early.popitem(last=False)

    # ------------------------------------------------------------------ callbacks
    def on_call_status(self, call_id: str, status: str, **data: Any) -> None:
        """Apply a status callback. A call that ends before its stream connects releases every waiter."""
        session = self.session_for_call(call_id)
        if session is None:
            self._remember_early(call_id, "status", (status, data))
            log.debug("status %r for a call not (yet) known; kept for replay", status)
            return
        self._apply_status(session, call_id, status, data)

    def _apply_status(self, session: VoiceSession, call_id: str, status: str, data: dict[str, Any]) -> None:
        session.log.emit(ev.CALL_STATUS, status=status, **data)
        if status in ENDED_STATUSES:
            session.signal_disconnected(EndReason.coerce(status))
            self.forget(call_id)

    def on_answered_by(self, call_id: str, answered_by: str) -> None:
        session = self.session_for_call(call_id)
        if session is None:
            self._remember_early(call_id, "amd", answered_by)
            return
        session.receive_answered_by(answered_by)

    # ------------------------------------------------------------------ hangup
    def mark_transferred(self, call_id: str, transferred: bool = True) -> None:
        """A transferred call lives on at its new destination: the flow's end must not hang it up."""
        with self._lock:
            (self._transferred.add if transferred else self._transferred.discard)(call_id)

    async def hangup(self, session: VoiceSession) -> None:
        """The server's hangup hook for ``request_disconnect``: REST first, off the event loop.

        A transferred call is left alone: only its stream closes.
        """
        call_id = session.call_sid
        if not call_id:
            return
        with self._lock:
            transferred = call_id in self._transferred
        if transferred:
            log.info("call %s was transferred; closing the stream without a REST hangup", call_id)
            return
        # A thread per hangup, not the loop's 6-thread default executor: at a drain deadline every late call's
        # REST hangup must start at once (200 calls x 1 s of carrier latency queued behind 6 threads = 34 s).
        await run_off_loop(self._hangup_call, call_id, name="rest-hangup")

    def _safe_hangup(self, call_id: str) -> None:
        try:
            self._hangup_call(call_id)
        except Exception:
            log.exception("could not cancel call %s", call_id)
