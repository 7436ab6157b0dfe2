"""The server's observer: per-call turn tracking, the ``CallReport``, JSON-lines logs, Prometheus, log lines.

One :class:`CallObserver` per :class:`~voice_runtime.server.VoiceServer`. The server calls exactly two
methods: :meth:`call_started` when it adopts a session (before the call's first event) and
:meth:`call_finished` when it reports the call ended (after the connection finished, on the loop: report, metrics,
log line), then :meth:`deliver_report` on its end-hook thread (the user's ``on_call_report``).
Everything in between is an event subscriber, so nothing here runs in, or reaches into, the call loop.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voice_runtime import call_events as ev
from voice_runtime.call_events import CallEvent
from voice_runtime.metrics.jsonl import JsonlCallLog
from voice_runtime.metrics.report import CallReport, build_report
from voice_runtime.metrics.turns import TurnTracker

if TYPE_CHECKING:  # pragma: no cover
    from voice_runtime.metrics.prometheus import ServerMetrics
    from voice_runtime.session import VoiceSession

log = logging.getLogger("voice_runtime.calls")

ReportHook = Callable[["VoiceSession", CallReport], None]


def provider_name(provider: Any) -> str:
    """A provider's low-cardinality name: its ``name`` attribute, else its class name."""
    if provider is None:
        return "none"
    primary = getattr(provider, "primary", None)  # SttTee: the primary's name
    if primary is not None:
        provider = primary
    name = getattr(provider, "name", None)
    return str(name) if isinstance(name, str) and name else type(provider).__name__


@dataclass
class _Watch:
    tracker: TurnTracker
    jsonl: JsonlCallLog | None
    unsubscribe: Callable[[], None] = field(default=lambda: None)
    started: bool = False


class CallObserver:
    """Turns each call's events into a report, metrics and lifecycle log lines."""

    def __init__(
        self,
        *,
        metrics: ServerMetrics | None = None,
        call_log_dir: str | Path | None = None,
        on_call_report: ReportHook | None = None,
        enabled: bool = True,
    ) -> None:
        self.enabled = enabled
        self.metrics = metrics
        self.call_log_dir = Path(call_log_dir) if call_log_dir else None
        self.on_call_report = on_call_report
        # Weak keys: a session the server adopted that never became a call must not be kept alive by us.
        self._watches: weakref.WeakKeyDictionary[VoiceSession, _Watch] = weakref.WeakKeyDictionary()
        self._closing: weakref.WeakKeyDictionary[VoiceSession, JsonlCallLog] = weakref.WeakKeyDictionary()
        self.reports_built = 0

    # ------------------------------------------------------------------------------------ per call
    def call_started(self, session: VoiceSession) -> None:
        """Subscribe to ``session``'s events (idempotent)."""
        if not self.enabled or session in self._watches:
            return
        metrics = self.metrics
        tracker = TurnTracker(on_latency=self._latency_hook(session) if metrics is not None else None)
        jsonl = JsonlCallLog(self.call_log_dir) if self.call_log_dir is not None else None
        watch = _Watch(tracker, jsonl)
        listeners = [tracker.on_event, self._lifecycle(session, watch)]
        if jsonl is not None:
            listeners.append(jsonl.on_event)
        unsubscribers = [session.add_event_listener(fn) for fn in listeners]
        def unsubscribe() -> None:
            for remove in unsubscribers:
                remove()

        watch.unsubscribe = unsubscribe
        self._watches[session] = watch

    def call_finished(self, session: VoiceSession | None) -> CallReport | None:
        """The call's connection is done: build the report, hand it out, close the call's log."""
        if session is None:
            return None
        watch = self._watches.pop(session, None)
        if watch is None:
            return None
        watch.unsubscribe()
        stt = session.stt
        stt_stats = getattr(stt, "stats", None)
        report = build_report(
            watch.tracker,
            call_id=session.call_sid,
            session_stats=dict(session.stats),
            stt_stats=dict(stt_stats) if isinstance(stt_stats, dict) else None,
            stt_active=stt is not None,
            wall_clock_offset=time.time() - time.monotonic(),
        )
        self.reports_built += 1
        session.call_report = report  # type: ignore[attr-defined]
        session.call_stats.report = report
        if watch.jsonl is not None:
            watch.jsonl.write_report(session.call_sid, report.as_dict())
            watch.jsonl.close(wait=False)  # on the event loop: the call-log thread finishes the file
            self._closing[session] = watch.jsonl
        if watch.started:
            self._record_end(session, report)
            log.info(
                "call %s ended: reason=%s duration=%.1fs turns=%d caller/%d agent, response p50=%s",
                report.call_id, report.end_reason, report.duration_s, report.caller_turns, report.agent_turns,
                "-" if report.response_p50 is None else f"{report.response_p50:.3f}s",
            )
        return report

    def deliver_report(self, session: VoiceSession, report: CallReport, *, log_timeout: float = 10.0) -> None:
        """Run ``on_call_report`` once the call's log file is complete (the server calls this on its end-hook
        thread, never on the event loop: see ``voice_runtime/on_demand_thread.py``)."""
        call_log = self._closing.pop(session, None)
        if call_log is not None and not call_log.wait_closed(log_timeout):
            log.warning("call log of %s not finished within %.0fs; reporting anyway", report.call_id, log_timeout)
        if self.on_call_report is not None:
            try:
                self.on_call_report(session, report)
            except Exception:
                log.exception("on_call_report hook failed")

    # ------------------------------------------------------------------------------------ server-wide
    def signature_rejected(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.signature_rejections.labels(reason).inc()

    @property
    def active_calls(self) -> int:
        return sum(1 for w in self._watches.values() if w.started)

    # ------------------------------------------------------------------------------------ internals
    def _lifecycle(self, session: VoiceSession, watch: _Watch) -> Callable[[CallEvent], None]:
        """INFO for the call's start, DEBUG for marks, clears and provider trouble; never per frame."""
        metrics = self.metrics
        debug = log.isEnabledFor
        session_ref = weakref.ref(session)  # held by the session's own event log: no strong cycle through us

        def on_event(event: CallEvent) -> None:
            kind = event.kind
            if kind == ev.STREAM_STARTED:
                watch.started = True
                carrier = str(event.data.get("carrier") or "unknown")
                log.info("call %s started: carrier=%s stream=%s", event.call_id, carrier, event.data.get("stream_id"))
                if metrics is not None:
                    metrics.calls_active.inc()
                    metrics.calls_started.labels(carrier).inc()
            elif kind in (ev.MARK_PLAYED, ev.MARK_CLEARED, ev.CLEAR_SENT, ev.BARGE_IN):
                if debug(logging.DEBUG):
                    log.debug("%s %s", kind, _brief(event.data))
            elif kind in (ev.STT_ERROR, ev.TTS_ERROR):
                log.debug("%s %s", kind, event.data.get("error"))
            elif kind == ev.PROTOCOL_ERROR and metrics is not None:
                live = session_ref()
                count = event.data.get("count", 1)  # coalesced: one event may stand for many drops
                metrics.protocol_errors.labels((live.carrier if live is not None else None) or "unknown").inc(
                    count if isinstance(count, int) and count > 0 else 1
                )

        return on_event

    def _latency_hook(self, session: VoiceSession) -> Callable[[str, float], None]:
        metrics = self.metrics
        assert metrics is not None
        session_ref = weakref.ref(session)  # the tracker lives in our table: it must not keep the session alive

        def observe(name: str, seconds: float) -> None:
            session = session_ref()
            if session is None:
                return
            if name == "response":
                metrics.turn_latency.labels(session.carrier or "unknown").observe(seconds)
            elif name == "tts_ttfb":
                metrics.tts_ttfb.labels(provider_name(session.tts)).observe(seconds)
            elif name == "stt":
                metrics.stt_latency.labels(provider_name(session.stt)).observe(seconds)
            elif name == "barge_in":
                metrics.barge_in_latency.observe(seconds)

        return observe

    def _record_end(self, session: VoiceSession, report: CallReport) -> None:
        metrics = self.metrics
        if metrics is None:
            return
        carrier = report.carrier or "unknown"
        metrics.calls_active.dec()
        metrics.calls_ended.labels(carrier, report.end_reason or "unknown").inc()
        if report.frames_lost:
            metrics.frames_dropped.labels("lost").inc(report.frames_lost)
        if report.frames_dropped:
            metrics.frames_dropped.labels("inbound_queue_full").inc(report.frames_dropped)
        for kind, count in report.provider_errors.items():
            if count:
                provider = provider_name(session.tts if kind == "tts" else session.stt)
                metrics.provider_errors.labels(provider, kind).inc(count)


def _brief(data: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in data.items() if k in ("name", "marks_cleared", "local_marks", "sent"))
