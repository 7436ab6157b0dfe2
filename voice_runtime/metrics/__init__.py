"""Observability: per-turn latencies, the per-call ``CallReport``, JSON-lines call logs, Prometheus.

Everything here is a *subscriber* of a call's events (``docs/observability.md``); nothing reaches into the
call loop. ``voice_runtime.metrics.prometheus`` imports ``prometheus_client`` and is loaded only when a
server exports metrics.
"""

from voice_runtime.metrics.jsonl import JsonlCallLog, flush_call_logs, read_call_log
from voice_runtime.metrics.observer import CallObserver
from voice_runtime.metrics.report import LATENCIES, CallReport, LatencySummary, percentile
from voice_runtime.metrics.turns import AgentTurn, BargeIn, CallerTurn, TurnTracker

__all__ = [
    "LATENCIES",
    "AgentTurn",
    "BargeIn",
    "CallObserver",
    "CallReport",
    "CallerTurn",
    "JsonlCallLog",
    "LatencySummary",
    "TurnTracker",
    "flush_call_logs",
    "percentile",
    "read_call_log",
]
