"""Graceful drain: stop taking calls, let live ones finish, hang up the rest at a deadline.

Why this exists: uvicorn's own shutdown closes every open WebSocket with 1012 the moment it starts and only
*then* waits for tasks (anchors §2.2). For a phone call that means the caller is cut off mid-sentence on
every deploy. A voice server must instead

1. stop accepting new calls at once (new stream upgrades are refused before ``accept()``: HTTP 403, so the
   carrier fails over or retries elsewhere);
2. let the calls already in progress run to their natural end, up to a configurable ``deadline``;
3. at the deadline, hang up each remaining call *through the carrier's REST API* (``server.call_controls``:
   otherwise the carrier keeps the PSTN leg up and bills for it) and close its socket with **1012**
   ("service restart"), which flushes its recording through the normal end-of-call path;
4. only then let the web server shut down.

:func:`drain` does 1–3 and returns a :class:`DrainReport`; the runners
(:class:`voice_runtime.server.runners.GracefulServer` for FastAPI mode, the native mode's foreground loop)
run it on SIGTERM/SIGINT and exit with status 0 once drained. ``VoiceServer.serve(drain_deadline=...)`` uses it; ``await VoiceServer.drain(deadline)`` runs a
drain from your own shutdown hook when you mount ``server.app`` elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from voice_runtime.lifecycle import EndReason

if TYPE_CHECKING:  # pragma: no cover
    from voice_runtime.server.app import VoiceServer
    from voice_runtime.server.connection import CallConnection

log = logging.getLogger(__name__)

#: "Service restart" (RFC 6455 §7.4.1 registry): the close code uvicorn itself uses on shutdown, telling a
#: well-behaved client that the server is going away on purpose.
SERVICE_RESTART = 1012


@dataclass
class DrainReport:
    """What a drain did. ``finished`` ended on their own before the deadline; ``hung_up`` were cut at it."""

    active_at_start: int = 0
    finished: int = 0
    cut_at_deadline: int = 0  # calls still up at the deadline (each hung up or failed)
    hung_up: int = 0  # of those, REST hangup succeeded (or no REST needed) and the socket was closed
    rest_hangup_failures: int = 0  # of those, the REST hangup failed or timed out: the carrier may keep them up
    flow_threads_left: int = 0
    elapsed: float = 0.0
    hung_up_calls: list[str] = field(default_factory=list)
    failed_calls: list[str] = field(default_factory=list)
    flows_left_calls: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """Nothing left behind: every late call hung up, every flow thread returned."""
        return self.rest_hangup_failures == 0 and self.flow_threads_left == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "active_at_start": self.active_at_start,
            "finished": self.finished,
            "cut_at_deadline": self.cut_at_deadline,
            "hung_up": self.hung_up,
            "rest_hangup_failures": self.rest_hangup_failures,
            "flow_threads_left": self.flow_threads_left,
            "elapsed": round(self.elapsed, 3),
            "hung_up_calls": list(self.hung_up_calls),
            "failed_calls": list(self.failed_calls),
            "flows_left_calls": list(self.flows_left_calls),
        }


async def drain(
    server: VoiceServer,
    deadline: float = 30.0,
    *,
    close_code: int = SERVICE_RESTART,
    hangup_timeout: float = 5.0,
    close_timeout: float = 5.0,
    flow_grace: float = 2.0,
) -> DrainReport:
    """Drain ``server`` (run on its event loop). See the module docstring for the sequence.

    ``deadline`` bounds how long live calls may continue; ``hangup_timeout`` bounds each REST hangup,
    ``close_timeout`` the wait for the late calls' loops to finish (recordings flushed) after their sockets
    were closed, and ``flow_grace`` the wait for flow threads to return once their calls have ended.
    """
    started = time.monotonic()
    server.accepting = False
    report = DrainReport(active_at_start=len(server.connections))
    log.info("draining: refusing new calls; %d call(s) in progress, deadline %.1fs", report.active_at_start, deadline)

    initial = list(server.connections)
    if initial:
        waits = [asyncio.ensure_future(c.closed.wait()) for c in initial]
        try:
            await asyncio.wait(waits, timeout=max(0.0, deadline))
        finally:
            for waiter in waits:  # leave no task behind
                waiter.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
    late = [c for c in list(server.connections) if not c.closed.is_set()]
    report.finished = sum(1 for c in initial if c.closed.is_set())

    if late:
        log.warning("drain deadline reached: hanging up %d call(s)", len(late))
        report.cut_at_deadline = len(late)
        # Every hangup starts now, each on a thread of its own (CallControlBase.hangup runs off the loop with
        # run_off_loop, not the 6-thread default executor): none waits behind another's carrier latency.
        results = await asyncio.gather(
            *(_hang_up_late(server, c, close_code, hangup_timeout, close_timeout) for c in late), return_exceptions=True
        )
        for connection, result in zip(late, results):
            session = connection.session
            call_id = (session.call_sid if session is not None else None) or "?"
            if result is True:
                report.hung_up += 1
                report.hung_up_calls.append(call_id)
            else:
                report.rest_hangup_failures += 1
                report.failed_calls.append(call_id)

    report.flow_threads_left = await asyncio.to_thread(_join_flows, server, flow_grace)
    if not await asyncio.to_thread(server.end_hooks.drain, flow_grace):  # on_call_report/on_call_ended of the ended calls
        log.warning("end-of-call hooks still running after %.1fs; exiting without waiting for them", flow_grace)
    watch = getattr(server, "flow_watch", None)
    if watch is not None and report.flow_threads_left:
        report.flows_left_calls = watch.alive()
    report.elapsed = time.monotonic() - started
    log.info("drain complete: %s", report.as_dict())
    if report.rest_hangup_failures:
        log.error(
            "drain: %d call(s) could not be hung up over REST and may still be connected (and billed) at the "
            "carrier: %s", report.rest_hangup_failures, ", ".join(report.failed_calls[:20])
        )
    if report.flow_threads_left:
        log.error(
            "drain: %d flow thread(s) still running after their calls ended (they ignore hangup): %s",
            report.flow_threads_left, ", ".join(report.flows_left_calls[:20]) or "call ids unknown"
        )
    return report


async def _hang_up_late(
    server: VoiceServer, connection: CallConnection, close_code: int, hangup_timeout: float, close_timeout: float
) -> bool:
    """REST hangup (when the carrier has call control), then close 1012; returns whether REST succeeded."""
    session = connection.session
    rest_ok = True
    if session is not None:
        # End the session first: every waiter in the flow wakes with a clear reason, and the end is
        # reported once (the connection's own ``signal_disconnected`` becomes a no-op).
        session.signal_disconnected(EndReason.SERVER_SHUTDOWN)
        try:
            await asyncio.wait_for(server.hangup_via_carrier(session), hangup_timeout)
        except Exception as exc:  # a failed REST hangup must not stop the drain
            rest_ok = False
            log.warning("REST hangup of call %s failed during drain: %s", session.call_sid, type(exc).__name__)
    try:
        await asyncio.wait_for(connection.wire.close(close_code, "server shutting down"), close_timeout)
    except Exception:
        pass
    try:
        await asyncio.wait_for(connection.closed.wait(), close_timeout)
    except asyncio.TimeoutError:
        log.warning("call %s did not finish within %.1fs of its close", getattr(session, "call_sid", None), close_timeout)
    return rest_ok


def _join_flows(server: VoiceServer, grace: float) -> int:
    """Wait (bounded) for flow threads whose calls have ended; returns how many are still running."""
    end = time.monotonic() + grace
    threads = [t for t in list(server.flow_threads) if t.is_alive() and t is not threading.current_thread()]
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    return sum(1 for t in threads if t.is_alive())
