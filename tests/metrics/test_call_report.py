"""A simulated call's CallReport against independent timestamps taken at the SimulatedPhone.

The phone's clock is the same ``time.monotonic()`` (one process), so the server's estimates can be checked
directly: *caller stopped* is the phone's ``caller_speech_end`` (its last speech frame left the phone), *agent
audible* is the arrival of the answer's first audio at the phone (the carrier), a barge-in's clear is the
phone's ``clear``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import CallHarness, FlowResult
from voice_runtime.audio.g711 import pcm16_to_ulaw
from voice_runtime.metrics import CallReport, read_call_log
from voice_runtime.testing import PhoneEvent

TOLERANCE = 0.020


def steady_tone(seconds: float, amplitude: float = 8000.0) -> bytes:
    """Caller 'speech' with a sharp end (no fade), a whole number of 20 ms frames long."""
    n = int(round(seconds * 50)) * 160
    t = np.arange(n) / 8000.0
    return pcm16_to_ulaw((np.sin(2 * np.pi * 300 * t) * amplitude).astype(np.int16))


def first_after(events: list[PhoneEvent], kind: str, after: float) -> PhoneEvent:
    return next(e for e in events if e.kind == kind and e.at >= after)


@pytest.mark.serial  # compares the server's clock readings with the phone's to 20 ms: busy neighbours skew them
def test_call_report_latencies_match_the_phone_within_20ms(harness: CallHarness, flow_result: FlowResult, tmp_path: Path) -> None:
    reports: list[tuple[Any, CallReport]] = []
    got_report = threading.Event()

    def on_report(session: Any, report: CallReport) -> None:
        reports.append((session, report))
        got_report.set()

    def body(session: Any) -> None:
        session.speak("Hello, how can I help?", wait=True)  # a greeting: answers no caller turn
        heard = session.listen(timeout=10)
        session.speak(f"You said {heard}. One moment while I look that up for you, it takes a little while.", wait=True)
        flow_result.values["second"] = session.listen(timeout=10)  # said over the agent: a barge-in
        flow_result.values["digit"] = session.wait_for_dtmf(timeout=10)

    _, running = harness.serve(
        flow_result.run(body), script=["my order", "stop"], call_log_dir=tmp_path, on_call_report=on_report
    )
    phone = harness.phone(running)
    greeting_played = phone.wait_for("mark_echoed", timeout=10)
    said = phone.say(steady_tone(0.8))
    assert said.wait_finished(5)
    # The answer starts playing; talk over it once it is audibly under way.
    answer_playing = phone.wait_for("playback_start", timeout=10, after=greeting_played.at)
    phone.wait_for("media", timeout=10, after=answer_playing.at + 0.5)
    phone.say(steady_tone(0.6))
    clear = phone.wait_for("clear", timeout=10, after=answer_playing.at)
    phone.press("5")
    assert flow_result.wait(20)["digit"] == "5"
    assert got_report.wait(10)
    session, report = reports[0]

    # --- the phone's own timestamps
    events = list(phone.events)
    spoke_end = first_after(events, "caller_speech_end", greeting_played.at)
    answer_arrived = first_after(events, "media", spoke_end.at)
    caller = next(t for t in report.turns if t["role"] == "caller")
    answer = next(t for t in report.turns if t["role"] == "agent" and t["answers"] == caller["index"])

    assert abs(caller["ended_at"] - spoke_end.at) < TOLERANCE, (caller["ended_at"] - spoke_end.at)
    assert abs(answer["audible_at"] - answer_arrived.at) < TOLERANCE, (answer["audible_at"] - answer_arrived.at)
    headline_at_phone = answer_arrived.at - spoke_end.at
    assert abs(answer["response_s"] - headline_at_phone) < TOLERANCE
    assert report.latencies["response"].count == 1
    assert report.latencies["response"].p50 == answer["response_s"]
    # The STT latency of the mock is its endpoint silence (400 ms), nothing more.
    assert 0.38 < caller["stt_latency_s"] < 0.5
    assert answer["think_s"] is not None and 0 <= answer["think_s"] < 0.2
    assert answer["ttfb_s"] is not None and 0 <= answer["ttfb_s"] < 0.1

    # --- barge-in: the clear the phone received is the one the report timed
    assert report.barge_ins == 1 and report.interruptions >= 1
    barge_caller = [t for t in report.turns if t["role"] == "caller"][1]
    assert barge_caller["barge_in"]
    assert report.latencies["barge_in"].count == 1
    barge_latency = report.latencies["barge_in"].p50
    assert barge_latency is not None and 0 <= barge_latency < 0.2
    assert abs((barge_caller["started_at"] + barge_latency) - clear.at) < TOLERANCE
    assert answer["interrupted"]

    # --- the rest of the report
    assert report.call_id == session.call_sid and report.carrier == "twilio"
    assert report.dtmf == "5"
    assert report.caller_turns == 2 and report.agent_turns == 2
    assert report.tts_characters == sum(len(t["text"]) for t in report.turns if t["role"] == "agent")
    assert report.frames_lost == 0 and report.frames_dropped == 0 and report.protocol_errors == 0
    assert report.end_reason == "hangup"
    assert report.duration_s > 2 and report.stt_seconds == report.duration_s
    assert session.call_report is report

    # --- the JSON-lines log: every event, then the report. Finished by the call-log thread; on_call_report
    # runs only once it is complete, so no flush is needed here.
    files = list(tmp_path.glob("*.jsonl"))
    assert len(files) == 1 and session.call_sid in files[0].name
    logged, logged_report = read_call_log(files[0])
    kinds = [e["kind"] for e in logged]
    assert kinds[0] == "stream_started" and kinds[-1] == "call_ended"
    assert {"speech_ended", "audio_sent", "barge_in", "clear_sent", "dtmf_received", "stt_final"} <= set(kinds)
    assert all(e["call_id"] == session.call_sid for e in logged)
    assert logged_report is not None and logged_report["latencies"]["response"]["p50"] == answer["response_s"]
