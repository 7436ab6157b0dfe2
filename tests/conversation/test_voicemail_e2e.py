"""``leave_voicemail`` and ``answered_by_or_none`` over real sockets: a SimulatedPhone plays an answering
machine (greeting, then a 1 kHz beep) and records what the agent says after it."""

from __future__ import annotations

import numpy as np
import pytest

from voice_runtime import MarkOutcome
from voice_runtime.audio.g711 import pcm16_to_ulaw
from voice_runtime.conversation import GreetingEnd
from voice_runtime.conversation.voicemail import VOICEMAIL_GREETING_ENDED, VOICEMAIL_LEFT
from voice_runtime.providers.mock import tone_speech
from voice_runtime.testing.phone import to_ulaw

from ..conftest import CallHarness, FlowResult

GREETING_SECONDS = 1.2
BEEP_SECONDS = 0.3


def machine_greeting(beep: bool = True) -> bytes:
    """A recorded greeting, a short pause and (optionally) the beep; then the machine records silence."""
    t = np.arange(int(BEEP_SECONDS * 8000)) / 8000
    tone = pcm16_to_ulaw((8000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)) if beep else b""
    return to_ulaw(tone_speech(GREETING_SECONDS)) + b"\xff" * 1600 + tone


def test_message_starts_after_the_beep_and_the_call_is_hung_up(harness: CallHarness, flow_result: FlowResult) -> None:
    def body(session) -> None:
        flow_result.values["answered_by"] = session.answered_by_or_none(timeout=0.2)  # no AMD here: None, no raise
        flow_result.values["result"] = session.leave_voicemail("Hello, this is your reminder. Goodbye.", timeout=10)
        flow_result.values["events"] = [e.kind for e in session.events]

    _, running = harness.serve(flow_result.run(body))
    phone = harness.phone(running)
    greeting = phone.say(machine_greeting())
    values = flow_result.wait()
    result = values["result"]
    assert values["answered_by"] is None
    assert result.reason is GreetingEnd.BEEP and result.beep is not None
    assert result.beep.duration == pytest.approx(BEEP_SECONDS, abs=0.05)
    assert result.outcome is MarkOutcome.PLAYED and result.delivered and result.hung_up
    beep_end = greeting.start_time + len(machine_greeting()) / 8000
    started = phone.wait_for("playback_start", timeout=5)
    assert started.at >= beep_end - 0.1  # the message was not played over the greeting
    assert phone.wait_closed(10)
    assert VOICEMAIL_GREETING_ENDED in values["events"] and VOICEMAIL_LEFT in values["events"]


def test_a_machine_without_beep_is_caught_by_the_silence_after_its_greeting(harness: CallHarness, flow_result: FlowResult) -> None:
    def body(session) -> None:
        flow_result.values["result"] = session.leave_voicemail(b"\x7f" * 4000, silence_ms=800, timeout=10, hangup=False)

    _, running = harness.serve(flow_result.run(body))
    phone = harness.phone(running)
    phone.say(machine_greeting(beep=False))
    result = flow_result.wait()["result"]
    assert result.reason is GreetingEnd.SILENCE
    assert result.outcome is MarkOutcome.PLAYED and not result.hung_up
    assert result.waited >= GREETING_SECONDS + 0.7


def test_no_greeting_end_in_time_still_leaves_the_message(harness: CallHarness, flow_result: FlowResult) -> None:
    def body(session) -> None:
        flow_result.values["result"] = session.leave_voicemail("Reminder.", timeout=0.5, silence_ms=None)

    _, running = harness.serve(flow_result.run(body))
    harness.phone(running)
    result = flow_result.wait()["result"]
    assert result.reason is GreetingEnd.TIMEOUT and result.outcome is MarkOutcome.PLAYED
