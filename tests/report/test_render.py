"""The call timeline, drawn from the log of a real simulated call (barge-in, DTMF, an STT error, a pause)."""

from __future__ import annotations

import struct
import threading
from pathlib import Path
from typing import Any

import pytest

from voice_runtime.audio import pcm16_to_ulaw
from voice_runtime.providers.mock import tone_speech
from voice_runtime.report import CallLogWriter, load_timeline, render
from voice_runtime.report.timeline import load_events

from ..conftest import CallHarness, FlowResult

pytest.importorskip("matplotlib", reason="the timeline needs the [report] extra (pip install 'voice-runtime[report]')")


@pytest.fixture(scope="module")
def call_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One call with everything the picture shows, recorded by the runtime and logged as JSON lines."""
    from ..conftest import CallHarness as Harness

    tmp = tmp_path_factory.mktemp("call")
    harness, flow_result = Harness(), FlowResult()
    log_path = tmp / "call.jsonl"
    writers: list[CallLogWriter] = []
    playing = threading.Event()

    def body(session: Any) -> None:
        greeting = session.speak("Hello, this greeting is long enough to be talked over by the caller, surely it is.")
        playing.set()
        greeting.wait(10)
        session.listen(timeout=10)
        session.stt.inject_error("quota <exceeded>")
        session.speak("Press a key.", wait=True)
        session.pause_recording()
        flow_result.values["digit"] = session.wait_for_dtmf(timeout=10)
        session.resume_recording()
        session.speak("Thanks, bye.", wait=True)
        session.hangup(timeout=5)

    saved = threading.Event()

    try:
        server, running = harness.serve(flow_result.run(body), script=["<b>who</b> is calling?"], recordings_dir=tmp)
        new_session = server.new_session

        def logged_session(**kwargs: Any) -> Any:  # the log must see the call from its first event
            session = new_session(**kwargs)
            writers.append(CallLogWriter(log_path).attach(session))
            session.add_event_listener(lambda e: e.kind == "recording_saved" and saved.set())
            return session

        server.new_session = logged_session  # type: ignore[method-assign]
        phone = harness.phone(running)
        assert playing.wait(10)
        phone.wait_for("playback_start", timeout=5)
        phone.say(pcm16_to_ulaw(tone_speech(0.8))).wait_finished(10)
        phone.wait_for("mark_echoed", timeout=10)
        phone.press("5")
        assert flow_result.wait(30)["digit"] == "5"
        assert phone.wait_closed(10)
        assert writers and writers[0].written.wait(10) and saved.wait(10)
        writers[0].flush()  # once more, with the recording_saved event that follows call_ended
    finally:
        harness.close()
    return log_path


def test_timeline_holds_what_happened_on_the_call(call_log: Path) -> None:
    timeline = load_timeline(call_log)
    caller = [s for s in timeline.segments if s.lane == "caller"]
    agent = [s for s in timeline.segments if s.lane == "agent"]
    assert [s.text for s in caller] == ["<b>who</b> is calling?"]
    assert [s.outcome for s in agent] == ["cleared", "played", "played"]  # the greeting was cut off
    assert agent[0].end <= caller[0].start + 0.5  # cut off right when the caller started talking
    kinds = {m.kind for m in timeline.markers}
    assert {"barge_in", "clear", "dtmf", "error", "end"} <= kinds
    assert any(m.label == "DTMF 5" for m in timeline.markers)
    assert any("quota <exceeded>" in m.label for m in timeline.markers if m.kind == "error")
    barge = [lat for lat in timeline.latencies if lat.name == "barge_in"]
    assert len(barge) == 1 and 0 <= barge[0].seconds < 0.5
    assert len(timeline.paused) == 1 and timeline.paused[0][1] > timeline.paused[0][0]
    assert timeline.recording_path is not None and timeline.recording_path.exists()
    assert timeline.recording_offset is not None and abs(timeline.recording_offset) < 0.5
    assert timeline.carrier == "twilio" and timeline.end_reason == "hangup"


def test_png_and_svg_are_drawn(call_log: Path, tmp_path: Path) -> None:
    png = render(call_log, tmp_path / "call.png")
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    assert width >= 1600 and 500 <= height <= 1000  # wide enough to read the words at a glance
    svg = render(call_log, tmp_path / "call.svg").read_text()
    assert "<svg" in svg and "DTMF 5" in svg and "barge-in" in svg and "recording paused" in svg
    assert "&lt;b&gt;who" in svg  # the caller's words, escaped


def test_html_page_is_self_contained_and_escapes_what_callers_said(call_log: Path, tmp_path: Path) -> None:
    page = render(call_log, tmp_path / "call.html").read_text()
    assert page.startswith("<!doctype html>") and "<svg" in page
    # Nothing loaded from elsewhere (XML namespace names are identifiers, not fetched).
    assert "<script" not in page and "<link" not in page and 'src="' not in page and 'href="http' not in page
    assert "<b>who</b>" not in page and "&lt;b&gt;who&lt;/b&gt;" in page
    assert "dtmf_received" in page and "mark_cleared" in page


def test_bad_logs_fail_with_the_line_number(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"kind": "stream_started", "at": 1.0, "data": {}}\n{"kind": "oops"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        load_events(path)
    with pytest.raises(ValueError, match="use one of"):
        render(path, tmp_path / "call.gif")
