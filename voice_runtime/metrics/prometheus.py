"""Prometheus metrics for a :class:`~voice_runtime.server.VoiceServer` (``prometheus_client``).

Labels are low-cardinality by construction: carrier, end reason, provider name, error kind, drop reason —
never a call id or a phone number.

Multi-process servers (``serve_native(workers=N)``, gunicorn-style) use ``prometheus_client``'s multiprocess
mode: set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory before the server starts; every worker writes
its samples there and whichever worker answers ``/metrics`` reports the sum over all of them.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
FAST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)
PREFIX = "voice_runtime"


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")


class ServerMetrics:
    """Every metric one server exports; ``render()`` gives the ``/metrics`` body."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.multiprocess = multiprocess_dir() is not None
        # In multiprocess mode samples go to files, and /metrics builds a fresh collector over them; a private
        # registry otherwise, so two servers in one process (tests) do not collide.
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        reg = None if self.multiprocess else self.registry
        p = PREFIX
        self.calls_active = Gauge(f"{p}_calls_active", "Calls with a live media stream.", registry=reg,
                                  multiprocess_mode="livesum")
        self.calls_started = Counter(f"{p}_calls_started", "Media streams started.", ["carrier"], registry=reg)
        self.calls_ended = Counter(f"{p}_calls_ended", "Calls ended, by end reason.", ["carrier", "reason"], registry=reg)
        self.turn_latency = Histogram(
            f"{p}_turn_latency_seconds", "Caller stopped talking -> agent audible at the carrier.",
            ["carrier"], buckets=LATENCY_BUCKETS, registry=reg,
        )
        self.tts_ttfb = Histogram(f"{p}_tts_ttfb_seconds", "speak() -> first TTS audio, per TTS provider.",
                                  ["provider"], buckets=FAST_BUCKETS, registry=reg)
        self.stt_latency = Histogram(f"{p}_stt_latency_seconds", "Caller stopped -> final transcript, per STT provider.",
                                     ["provider"], buckets=LATENCY_BUCKETS, registry=reg)
        self.barge_in_latency = Histogram(f"{p}_barge_in_seconds", "Caller started over the agent -> clear on the wire.",
                                          buckets=FAST_BUCKETS, registry=reg)
        self.frames_dropped = Counter(f"{p}_frames_dropped", "Caller audio frames lost (sequence gaps) or dropped by us.",
                                      ["kind"], registry=reg)
        self.protocol_errors = Counter(f"{p}_protocol_errors", "Carrier messages dropped as malformed or unexpected.",
                                       ["carrier"], registry=reg)
        self.signature_rejections = Counter(f"{p}_signature_rejections", "Stream upgrades refused for a bad or missing signature.",
                                            ["reason"], registry=reg)
        self.provider_errors = Counter(f"{p}_provider_errors", "Provider failures, by provider and kind.",
                                       ["provider", "kind"], registry=reg)
        self.draining = Gauge(f"{p}_draining", "1 while the server refuses new calls (drain).", registry=reg,
                              multiprocess_mode="livemax")

    def render(self) -> tuple[bytes, str]:
        """``(body, content_type)`` for a ``/metrics`` response."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """The current value of one sample (tests, health pages); None if absent. Single-process only."""
        value: Any = self.registry.get_sample_value(name, labels or {})
        return None if value is None else float(value)


def mark_worker_dead(pid: int) -> None:
    """A worker process exited: drop its live gauges (multiprocess mode; a no-op otherwise)."""
    if multiprocess_dir() is None:
        return
    from prometheus_client import multiprocess

    try:
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
    except OSError:
        pass
