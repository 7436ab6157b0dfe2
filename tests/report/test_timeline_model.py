"""The timeline model from a log that ends with the metrics' ``call_report`` line (its per-turn figures win)."""

from __future__ import annotations

import json
from pathlib import Path

from voice_runtime.report import load_timeline

T0 = 500.0


def _line(kind: str, at: float, **data: object) -> str:
    return json.dumps({"kind": kind, "at": T0 + at, "call_id": "CA1", "data": data})


def test_report_turns_give_the_caller_stopped_to_agent_audible_bracket(tmp_path: Path) -> None:
    report = {
        "call_id": "CA1",
        "end_reason": "hangup",
        "duration_s": 6.0,
        "latencies": {"response": {"count": 1, "p50": 0.62, "p95": 0.62}, "stt": {"count": 1, "p50": 0.3, "p95": 0.3}},
        "turns": [
            {"role": "agent", "index": 0, "text": "Hi!", "speak_at": T0 + 0.0, "first_audio_at": T0 + 0.05,
             "audible_at": T0 + 0.1, "played_at": T0 + 1.0, "cleared_at": None, "response_s": None, "answers": None},
            {"role": "caller", "index": 0, "started_at": T0 + 1.5, "ended_at": T0 + 2.5, "final_at": T0 + 2.8, "text": "hello"},
            {"role": "agent", "index": 1, "text": "How can I help?", "speak_at": T0 + 2.85, "first_audio_at": T0 + 3.0,
             "audible_at": T0 + 3.12, "played_at": None, "cleared_at": T0 + 4.0, "response_s": 0.62, "answers": 0},
        ],
    }
    lines = [
        _line("stream_started", 0.0, carrier="plivo"),
        _line("dtmf_received", 4.5, digit="7"),
        _line("call_ended", 6.0, reason="hangup"),
        json.dumps({"kind": "call_report", "at": T0 + 6.0, "call_id": "CA1", "data": report}),
    ]
    path = tmp_path / "call.jsonl"
    path.write_text("\n".join(lines) + "\n")
    timeline = load_timeline(path)
    assert timeline.carrier == "plivo" and timeline.end_reason == "hangup"
    agent = [s for s in timeline.segments if s.lane == "agent"]
    assert [(round(s.start, 2), round(s.end, 2), s.outcome) for s in agent] == [(0.1, 1.0, "played"), (3.12, 4.0, "cleared")]
    (caller,) = [s for s in timeline.segments if s.lane == "caller"]
    assert (caller.start, caller.end, caller.text) == (1.5, 2.5, "hello")
    latencies = {lat.name: (round(lat.start, 2), round(lat.seconds, 2)) for lat in timeline.latencies}
    assert latencies["response"] == (2.5, 0.62)  # from the caller's end of speech, as long as the report says
    assert latencies["stt"] == (2.5, 0.3)
    assert timeline.summary["response"] == {"count": 1, "p50": 0.62, "p95": 0.62}
    assert any(m.label == "DTMF 7" for m in timeline.markers)
