"""A call's JSON-lines log turned into a timeline: lanes, segments, markers and latencies (no drawing here).

The log is the one ``docs/observability.md`` specifies: one ``{"kind", "at", "call_id", "data"}`` line per
event (``at`` is ``time.monotonic()`` seconds), optionally ending with a ``call_report`` line. When the
report is there its per-turn figures are used as they are (the same numbers as metrics and Prometheus);
without it the timeline rebuilds the turns from the events alone, so an old or truncated log still draws.
All times in a :class:`Timeline` are seconds from the call's first event.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Segment", "Marker", "Latency", "Timeline", "load_events", "build_timeline"]

REPORT_KIND = "call_report"
_ERROR_KINDS = {"stt_error": "STT error", "tts_error": "TTS error", "protocol_error": "protocol error"}


@dataclass
class Segment:
    """Someone talking: ``start``..``end``; ``outcome`` for agent speech ("played", "cleared", "hung up")."""

    lane: str  # "caller" | "agent"
    start: float
    end: float
    text: str = ""
    outcome: str = ""


@dataclass
class Marker:
    at: float
    kind: str  # "barge_in", "clear", "dtmf", "error", "mark_played", "mark_cleared", "hangup", "end", ...
    label: str = ""
    lane: str = "agent"


@dataclass
class Latency:
    """A measured interval drawn as a bracket: ``name`` (response, stt, barge_in) from ``start`` to ``end``."""

    name: str
    start: float
    end: float
    lane: str = "agent"

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class Timeline:
    call_id: str | None
    t0: float  # monotonic time of the first event
    duration: float
    segments: list[Segment] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    latencies: list[Latency] = field(default_factory=list)
    paused: list[tuple[float, float]] = field(default_factory=list)
    recording_path: Path | None = None
    recording_offset: float | None = None  # timeline time of the recording's first sample
    carrier: str | None = None
    end_reason: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)  # the call_report's headline numbers, if any
    events: list[dict[str, Any]] = field(default_factory=list)


def load_events(path: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Read a call log: the events in order and the ``call_report`` data (``None`` if absent).

    Blank lines are skipped; a line that is not a JSON object with ``kind`` and ``at`` is an error naming
    the line, since drawing a silently partial call would mislead.
    """
    events: list[dict[str, Any]] = []
    report: dict[str, Any] | None = None
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc})") from None
            if not isinstance(item, dict) or "kind" not in item or not isinstance(item.get("at"), (int, float)):
                raise ValueError(f"{path}:{number}: expected an object with 'kind' and a numeric 'at'")
            item.setdefault("data", {})
            if item["kind"] == REPORT_KIND:
                report = item["data"] if isinstance(item["data"], dict) else {}
            else:
                events.append(item)
    events.sort(key=lambda e: e["at"])
    return events, report


def build_timeline(events: list[dict[str, Any]], report: dict[str, Any] | None = None) -> Timeline:
    if not events:
        raise ValueError("the call log has no events")
    t0 = float(events[0]["at"])
    end = float(events[-1]["at"])

    def rel(t: Any) -> float | None:
        return None if t is None else float(t) - t0

    timeline = Timeline(call_id=next((e.get("call_id") for e in events if e.get("call_id")), None), t0=t0, duration=end - t0)
    timeline.events = events
    pause_start: float | None = None
    for e in events:
        kind, at, data = e["kind"], float(e["at"]) - t0, e.get("data") or {}
        if kind == "stream_started":
            timeline.carrier = data.get("carrier")
        elif kind == "barge_in":
            timeline.markers.append(Marker(at, "barge_in", "barge-in", "caller"))
        elif kind == "clear_sent":
            timeline.markers.append(Marker(at, "clear", "clear", "agent"))
        elif kind == "dtmf_received":
            timeline.markers.append(Marker(at, "dtmf", f"DTMF {data.get('digit', '?')}", "caller"))
        elif kind == "dtmf_sent":
            timeline.markers.append(Marker(at, "dtmf", f"sent {data.get('digits', '?')}", "agent"))
        elif kind in _ERROR_KINDS:
            detail = str(data.get("error") or data.get("reason") or "")
            lane = "agent" if kind == "tts_error" else "caller"
            timeline.markers.append(Marker(at, "error", f"{_ERROR_KINDS[kind]}: {detail}"[:60], lane))
        elif kind == "hangup_requested":
            timeline.markers.append(Marker(at, "hangup", "hang-up", "agent"))
        elif kind == "call_ended":
            timeline.end_reason = data.get("reason")
            timeline.markers.append(Marker(at, "end", f"ended: {data.get('reason', '')}", "agent"))
        elif kind == "recording_paused":
            pause_start = at if pause_start is None else pause_start
        elif kind == "recording_resumed" and pause_start is not None:
            timeline.paused.append((pause_start, at))
            pause_start = None
        elif kind == "recording_started" and data.get("started_at") is not None:
            timeline.recording_path = Path(data["path"]) if data.get("path") else timeline.recording_path
            timeline.recording_offset = rel(data["started_at"])
        elif kind == "recording_saved" and data.get("path"):
            timeline.recording_path = Path(data["path"])
    if pause_start is not None:
        timeline.paused.append((pause_start, timeline.duration))

    turns = (report or {}).get("turns") or []
    if turns:
        _turns_from_report(timeline, turns, rel)
    else:
        _turns_from_events(timeline, events, t0)
    _barge_in_latencies(timeline)
    if report:
        timeline.end_reason = report.get("end_reason") or timeline.end_reason
        lat = report.get("latencies") or {}
        timeline.summary = {
            name: {k: lat[name].get(k) for k in ("count", "p50", "p95") if isinstance(lat.get(name), dict)}
            for name in ("response", "stt", "tts_ttfb", "barge_in")
            if isinstance(lat.get(name), dict) and lat[name].get("count")
        }
        timeline.summary["duration_s"] = report.get("duration_s")
    timeline.segments.sort(key=lambda s: s.start)
    timeline.markers.sort(key=lambda m: m.at)
    return timeline


def _turns_from_report(timeline: Timeline, turns: list[dict[str, Any]], rel: Any) -> None:
    callers = {t.get("index"): t for t in turns if t.get("role") == "caller"}
    for turn in turns:
        if turn.get("role") == "caller":
            start = rel(turn.get("started_at") or turn.get("ended_at") or turn.get("final_at"))
            stop = rel(turn.get("ended_at") or turn.get("endpoint_at") or turn.get("final_at"))
            if start is None:
                continue
            stop = start if stop is None else stop
            timeline.segments.append(Segment("caller", start, max(stop, start), turn.get("text") or ""))
            final = rel(turn.get("final_at"))
            ended = rel(turn.get("ended_at"))
            if final is not None and ended is not None and final >= ended:
                timeline.latencies.append(Latency("stt", ended, final, "caller"))
        elif turn.get("role") == "agent":
            audible = rel(turn.get("audible_at") or turn.get("wire_at") or turn.get("first_audio_at"))
            if audible is None:
                continue
            played, cleared = rel(turn.get("played_at")), rel(turn.get("cleared_at"))
            stop = cleared if cleared is not None else played
            outcome = "cleared" if cleared is not None else ("played" if played is not None else "")
            if stop is None:
                stop = audible + float(turn.get("audio_seconds") or 0.0)
            timeline.segments.append(Segment("agent", audible, max(stop, audible), turn.get("text") or "", outcome))
            timeline.markers.append(Marker(stop, "mark_" + (outcome or "played"), outcome, "agent"))
            response = turn.get("response_s")
            answered = callers.get(turn.get("answers"))
            if response is not None:
                ended = rel((answered or {}).get("ended_at"))
                start = ended if ended is not None else audible - float(response)
                timeline.latencies.append(Latency("response", start, start + float(response), "agent"))


def _turns_from_events(timeline: Timeline, events: list[dict[str, Any]], t0: float) -> None:
    """No report: caller speech from VAD start → end (or final), agent speech from audio → mark outcome."""
    speech_start: float | None = None
    speech_end: float | None = None
    last_caller_end: float | None = None
    ended_seen = False  # without speech_ended events the caller's "end" is the transcript, not the speech
    agent: list[dict[str, Any]] = []
    for e in events:
        kind, at, data = e["kind"], float(e["at"]) - t0, e.get("data") or {}
        if kind == "stt_speech_started" and speech_start is None:
            speech_start = at
        elif kind == "speech_ended":
            ended = data.get("ended_at")
            speech_end = float(ended) - t0 if isinstance(ended, (int, float)) else at
            ended_seen = True
        elif kind == "stt_final":
            start = speech_start if speech_start is not None else (speech_end if speech_end is not None else at)
            stop = speech_end if speech_end is not None else at
            timeline.segments.append(Segment("caller", start, max(stop, start), str(data.get("text") or "")))
            if speech_end is not None:
                timeline.latencies.append(Latency("stt", speech_end, at, "caller"))
            last_caller_end = stop
            speech_start = speech_end = None
        elif kind == "tts_start":
            agent.append({"text": str(data.get("text") or ""), "start": None, "end": None, "outcome": "", "after": last_caller_end})
            last_caller_end = None
        elif kind in ("audio_sent", "tts_first_audio") and agent and agent[-1]["start"] is None:
            playout = data.get("playout_at")
            agent[-1]["start"] = float(playout) - t0 if isinstance(playout, (int, float)) else at
        elif kind == "clear_sent":
            for turn in agent:  # a clear cuts off whatever agent speech is playing
                if turn["end"] is None and turn["start"] is not None and turn["start"] <= at:
                    turn["end"], turn["outcome"] = at, "cleared"
                    timeline.markers.append(Marker(at, "mark_cleared", "cleared", "agent"))
        elif kind in ("mark_played", "mark_cleared"):
            # A speech stopped during synthesis sends its mark after the clear; its echo says "played" about
            # what was left, so the clear above has already decided that turn's outcome.
            for turn in agent:
                if turn["end"] is None and turn["start"] is not None:
                    turn["end"], turn["outcome"] = at, kind.removeprefix("mark_")
                    timeline.markers.append(Marker(at, kind, turn["outcome"], "agent"))
                    break
    for turn in agent:
        if turn["start"] is None:
            continue
        end = turn["end"] if turn["end"] is not None else timeline.duration
        timeline.segments.append(Segment("agent", turn["start"], max(end, turn["start"]), turn["text"], turn["outcome"]))
        if turn["after"] is not None and turn["start"] >= turn["after"]:
            timeline.latencies.append(Latency("response" if ended_seen else "reply", turn["after"], turn["start"], "agent"))


def _barge_in_latencies(timeline: Timeline) -> None:
    """Caller speech start → clear on the wire, for each barge-in."""
    clears = [m.at for m in timeline.markers if m.kind == "clear"]
    for marker in [m for m in timeline.markers if m.kind == "barge_in"]:
        speech = [s.start for s in timeline.segments if s.lane == "caller" and s.start <= marker.at + 0.05]
        onset = max(speech) if speech else marker.at
        after = [c for c in clears if c >= marker.at - 0.001]
        if after:
            timeline.latencies.append(Latency("barge_in", onset, after[0], "caller"))
