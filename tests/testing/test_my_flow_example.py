# --- docs/testing.md: the complete example (kept identical to the docs by test_the_docs_show_this_example) ---
import threading

import pytest

from voice_runtime import VoiceServer, create_stt, create_tts
from voice_runtime.testing import SimulatedPhone


def order_flow(session):
    """The flow under test: greet, take an order, confirm it with a key press."""
    session.speak("Welcome to Pizza Place. What would you like?", wait=True)
    order = session.listen(timeout=10)
    session.speak(f"One {order}. Press 1 to confirm.", wait=True)
    digit = session.wait_for_dtmf(timeout=10)
    session.speak("Confirmed, thank you!" if digit == "1" else "Cancelled.", wait=True)
    session.hangup()


@pytest.fixture
def server():
    reports = []
    ended = threading.Event()
    server = VoiceServer(
        # The mock STT hears *when* the caller speaks (a real energy VAD over the audio the phone sends)
        # and commits the next scripted line each time the caller stops.
        stt_factory=lambda: create_stt("mock", script=["large margherita"]),
        tts_factory=lambda: create_tts("mock"),
        inbound_flow=order_flow,
        on_call_report=lambda session, report: (reports.append(report), ended.set()),
    )
    running = server.start()  # a real server on a loopback port
    running.reports, running.ended = reports, ended
    yield running
    running.stop()


def test_order_is_confirmed(server):
    with SimulatedPhone(server.ws_url + "/stream") as phone:
        phone.wait_for("mark_echoed", timeout=10)  # the greeting has played to the end
        phone.say("a large margherita please")  # text: synthesized, sent in real time
        phone.wait_for("mark_echoed", timeout=10, after=phone.wait_for("caller_speech_end").at)
        phone.press("1")
        assert phone.wait_closed(timeout=20)  # the flow hung up
    assert server.ended.wait(5)
    report = server.reports[0]
    assert report.dtmf == "1"
    assert [t["text"] for t in report.turns if t["role"] == "agent"] == [
        "Welcome to Pizza Place. What would you like?",
        "One large margherita. Press 1 to confirm.",
        "Confirmed, thank you!",
    ]
    assert report.latencies["response"].count == 1  # caller stopped -> agent audible, measured once
# --- end of the example ---


def test_the_docs_show_this_example():
    from pathlib import Path

    source = Path(__file__).read_text()
    example = source[source.index("import threading") : source.index("# --- end of the example ---")].strip()
    docs = (Path(__file__).resolve().parents[2] / "docs" / "testing.md").read_text()
    assert example in docs, "docs/testing.md must show tests/testing/test_my_flow_example.py's example verbatim"
