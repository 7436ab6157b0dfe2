"""A user's program written against the public API; ``mypy --strict`` must accept it (scripts/typecheck.sh)."""

from __future__ import annotations

import logging
from pathlib import Path

from voice_runtime import (
    CallHangupError,
    CallTimeoutError,
    MarkOutcome,
    SpeechResult,
    VoiceServer,
    VoiceSession,
    create_stt,
    create_tts,
)
from voice_runtime.logs import JsonFormatter
from voice_runtime.metrics import CallReport
from voice_runtime.testing import SimulatedPhone

log = logging.getLogger("my_app")


def flow(session: VoiceSession) -> None:
    result: SpeechResult = session.speak("Hello! Say something.", wait=True, timeout=10.0)
    if result.interrupted:
        log.info("caller talked over the greeting")
    try:
        answer: str = session.listen(timeout=10.0)
    except CallTimeoutError:
        answer = ""
    except CallHangupError:
        return
    outcome: MarkOutcome = session.send_mark_and_wait("after-answer", timeout=5.0)
    log.info("heard %r, mark %s", answer, outcome.name)
    digits: str = session.collect_dtmf(4, timeout=5.0)
    session.speak(f"You pressed {digits}. Goodbye.", wait=True)
    session.hangup()


def on_report(session: VoiceSession, report: CallReport) -> None:
    p50 = report.latencies["response"].p50
    log.info("call %s: %d turns, response p50 %s", report.call_id, report.agent_turns, p50)


def main(directory: Path) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)
    server = VoiceServer(
        stt_factory=lambda: create_stt("mock"),
        tts_factory=lambda: create_tts("mock"),
        inbound_flow=flow,
        call_log_dir=directory,
        on_call_report=on_report,
    )
    with server.start() as running, SimulatedPhone(running.ws_url + "/stream") as phone:
        phone.wait_for("mark_echoed", timeout=10.0)
        phone.say("hello there")
        phone.press("1234")
        phone.wait_closed(20.0)
