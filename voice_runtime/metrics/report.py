"""``CallReport``: what one call was, in one object, built when the call ends.

It is assembled from the call's :class:`~voice_runtime.metrics.turns.TurnTracker` (the per-turn latencies,
from events) plus the counters the session and its providers kept (``session.stats``, ``stt.stats``). It is
handed to ``VoiceServer(on_call_report=...)``, kept as ``session.call_report``, and written as the last line
of the call's JSON-lines log (``{"kind": "call_report", ...}``, see ``docs/observability.md``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from voice_runtime.metrics.turns import TurnTracker

#: The latency series every report summarises (name → what it measures).
LATENCIES: dict[str, str] = {
    "response": "caller stopped talking -> agent audible at the carrier (the headline)",
    "stt": "caller stopped talking -> final transcript",
    "think": "final transcript -> the flow called speak()",
    "tts_ttfb": "speak() -> first TTS audio",
    "wire": "first TTS audio -> first audio of the turn on the wire",
    "barge_in": "caller started talking over the agent -> clear on the wire",
}


def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100), linear interpolation between ranks; None when empty."""
    data = sorted(values)
    if not data:
        return None
    if len(data) == 1:
        return data[0]
    rank = (len(data) - 1) * q / 100.0
    lo, hi = math.floor(rank), math.ceil(rank)
    return data[lo] + (data[hi] - data[lo]) * (rank - lo)


@dataclass(frozen=True)
class LatencySummary:
    count: int
    p50: float | None
    p95: float | None
    max: float | None

    @classmethod
    def of(cls, values: Iterable[float]) -> LatencySummary:
        data = [v for v in values if v is not None]
        return cls(len(data), percentile(data, 50), percentile(data, 95), max(data) if data else None)


@dataclass
class CallReport:
    """One call's summary. Seconds throughout; ``*_at`` are ``time.monotonic()``."""

    call_id: str | None
    carrier: str | None
    end_reason: str | None
    started_at: float | None  # stream start
    ended_at: float | None
    duration_s: float
    wall_clock_offset: float  # add to a monotonic ``at`` to get Unix time
    turns: list[dict[str, Any]]
    latencies: dict[str, LatencySummary]
    caller_turns: int
    agent_turns: int
    barge_ins: int
    interruptions: int
    dtmf: str
    frames_lost: int  # sequence gaps in the carrier's media (never arrived)
    frames_dropped: int  # arrived, dropped by us (inbound queue full)
    protocol_errors: int
    stt_reconnects: int
    provider_errors: dict[str, int]
    tts_characters: int
    stt_seconds: float  # caller audio streamed to the STT (what streaming STT is billed on)
    counters: dict[str, int] = field(default_factory=dict)  # session.stats as it was at the end

    @property
    def response_p50(self) -> float | None:
        return self.latencies["response"].p50

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON data (turns are already dicts; a shallow copy beats ``dataclasses.asdict`` by far)."""
        data = dict(self.__dict__)
        data["latencies"] = {name: dict(s.__dict__) for name, s in self.latencies.items()}
        data["provider_errors"] = dict(self.provider_errors)
        data["counters"] = dict(self.counters)
        data["turns"] = [dict(t) for t in self.turns]
        return data


def build_report(
    tracker: TurnTracker,
    *,
    call_id: str | None,
    session_stats: Mapping[str, int],
    stt_stats: Mapping[str, int] | None,
    stt_active: bool,
    wall_clock_offset: float,
) -> CallReport:
    agent = tracker.agent_turns
    series: dict[str, list[float]] = {
        "response": [t.response_s for t in agent if t.response_s is not None],
        "stt": [t.stt_latency_s for t in tracker.caller_turns if t.stt_latency_s is not None],
        "think": [t.think_s for t in agent if t.think_s is not None],
        "tts_ttfb": [t.ttfb_s for t in agent if t.ttfb_s is not None],
        "wire": [t.wire_s for t in agent if t.wire_s is not None],
        "barge_in": [b.latency_s for b in tracker.barge_ins if b.latency_s is not None],
    }
    started, ended = tracker.started_at, tracker.ended_at
    duration = (ended - started) if started is not None and ended is not None else 0.0
    stt_stats = stt_stats or {}
    counts = tracker.counts
    return CallReport(
        call_id=call_id,
        carrier=tracker.carrier,
        end_reason=tracker.end_reason,
        started_at=started,
        ended_at=ended,
        duration_s=duration,
        wall_clock_offset=wall_clock_offset,
        turns=tracker.turns(),
        latencies={name: LatencySummary.of(values) for name, values in series.items()},
        caller_turns=len(tracker.caller_turns),
        agent_turns=len(agent),
        barge_ins=len(tracker.barge_ins),
        interruptions=counts.get("interruptions", 0),
        dtmf="".join(d for _, d in tracker.dtmf),
        frames_lost=int(session_stats.get("sequence_gaps", 0)),
        frames_dropped=int(session_stats.get("inbound_dropped", 0)),
        protocol_errors=counts.get("protocol_error", 0),
        stt_reconnects=int(stt_stats.get("reconnects", 0)) + int(stt_stats.get("restarts", 0)),
        provider_errors={
            "stt": counts.get("stt_error", 0),
            "tts": counts.get("tts_error", 0),
            "stt_start": int(session_stats.get("stt_start_failed", 0)),
        },
        tts_characters=tracker.tts_characters,
        stt_seconds=duration if stt_active else 0.0,
        counters={k: int(v) for k, v in session_stats.items()},
    )
