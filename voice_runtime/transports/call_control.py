"""What every carrier's call control shares: dialled-call bookkeeping, status mapping, ``call()``.

Carrier modules (``twilio_control``, ``plivo_control``) subclass :class:`CallControlBase` and implement the
REST parts (``_dial``, ``_hangup_call``) with the carrier's SDK. Everything about *how a call flow experiences
a call* — waiting for the answer, failing fast on busy/no-answer, releasing waiters when a call ends before
its stream connects, hanging up when the flow is done — lives here once, so it is identical on every carrier.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from voice_runtime import call_events as ev
from voice_runtime.errors import CallNotAnsweredError, ConfigError
from voice_runtime.server.app import VoiceServer
from voice_runtime.session import VoiceSession

log = logging.getLogger(__name__)

#: Carrier call statuses after which no media stream will ever arrive.
NOT_ANSWERED_STATUSES = frozenset({"busy", "no-answer", "failed", "canceled", "cancel", "timeout", "rejected"})
ENDED_STATUSES = NOT_ANSWERED_STATUSES | {"completed", "hangup"}


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

    def __init__(self, server: VoiceServer, *, public_url: str | None = None) -> None:
        self.server = server
        self.public_url = public_url or server.public_url
        self._calls: dict[str, VoiceSession] = {}
        self._lock = threading.Lock()
        server.register_call_control(self)

    # ------------------------------------------------------------------ to implement per carrier
    def _dial(self, to: str, stream_url: str, session: VoiceSession, **options: Any) -> str:
        """Place the call over REST; return the carrier's call id."""
        raise NotImplementedError

    def _hangup_call(self, call_id: str) -> None:
        """Blocking REST hangup; "already ended" is success."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared behaviour
    def dial(self, to: str, *, session: VoiceSession | None = None, **options: Any) -> OutboundCall:
        """Dial ``to``; the returned handle's session receives the call's stream when answered."""
        if not to:
            raise ConfigError("dial() needs a destination number")
        session = session or self.server.new_session()
        token = self.server.expect_stream(session)
        stream_url = self.server.stream_url(token, base_url=self.public_url)
        try:
            call_id = self._dial(to, stream_url, session, **options)
        except Exception:
            self.server.registry.revoke(token)
            raise
        session.call_sid = call_id
        session.called_number = session.called_number or to
        session.log.call_id = call_id
        self.track(call_id, session)
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
                self._safe_hangup(outbound.call_id)
                raise
            yield session
        finally:
            if not session.is_disconnected:
                if not session.hangup(hangup_timeout):
                    log.warning("call %s did not end within %.0fs of hangup", outbound.call_id, hangup_timeout)
            self.forget(outbound.call_id)

    def track(self, call_id: str, session: VoiceSession) -> None:
        with self._lock:
            self._calls[call_id] = session

    def forget(self, call_id: str) -> None:
        with self._lock:
            self._calls.pop(call_id, None)

    def session_for_call(self, call_id: str) -> VoiceSession | None:
        with self._lock:
            return self._calls.get(call_id)

    def on_call_status(self, call_id: str, status: str, **data: Any) -> None:
        """Apply a status callback. A call that ends before its stream connects releases every waiter."""
        session = self.session_for_call(call_id)
        if session is None:
            log.info("status %r for unknown call", status)
            return
        session.log.emit(ev.CALL_STATUS, status=status, **data)
        if status in ENDED_STATUSES:
            session.signal_disconnected(status)
            self.forget(call_id)

    def on_answered_by(self, call_id: str, answered_by: str) -> None:
        session = self.session_for_call(call_id)
        if session is not None:
            session._on_answered_by(answered_by)

    async def hangup(self, session: VoiceSession) -> None:
        """The server's hangup hook for ``request_disconnect``: REST first, off the event loop."""
        if not session.call_sid:
            return
        await asyncio.to_thread(self._hangup_call, session.call_sid)

    def _safe_hangup(self, call_id: str) -> None:
        try:
            self._hangup_call(call_id)
        except Exception:
            log.exception("could not cancel call %s", call_id)
