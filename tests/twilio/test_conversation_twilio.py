"""Conversation helpers on Twilio: gather on an inbound call, voicemail on DetectMessageEnd's async AMD
callback, answered_by_or_none, a warm transfer and the session class of inbound and dialled calls — the real
server, TwilioCallControl through the SDK to the fake Twilio, signed callbacks, a SimulatedPhone stream."""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from voice_runtime import MarkOutcome, VoiceSession
from voice_runtime.conversation import GatherKind, GreetingEnd
from voice_runtime.providers.mock import tone_speech
from voice_runtime.testing.phone import to_ulaw

from .conftest import Stack
from .test_calls_e2e import Answerer


class ToolSession(VoiceSession):
    """A user's subclass: what a graph's tool node would call."""

    def confirm(self, text: str) -> str:
        return self.say_and_listen(text, timeout=10)


def test_gather_digits_on_an_inbound_twilio_call(make_stack: Any) -> None:
    stack: Stack = make_stack(server_kwargs={"session_class": ToolSession})
    box: dict[str, Any] = {}
    done = threading.Event()

    @stack.control.on_inbound_call
    def flow(session: VoiceSession) -> None:
        try:
            box["class"] = type(session)
            box["result"] = session.gather("Enter your order number, then hash.", timeout=5)
        finally:
            done.set()

    _, response, phone = stack.fake.inbound_call(stack.url("/twilio/voice"))
    assert response.status_code == 200 and phone is not None
    phone.wait_for("playback_start", 10)
    phone.press("314#")
    assert done.wait(15)
    assert box["class"] is ToolSession  # the server's session_class reached the webhook-created session
    assert (box["result"].kind, box["result"].value) == (GatherKind.DIGITS, "314")
    assert phone.wait_closed(10)


def test_voicemail_waits_for_detect_message_end(stack: Stack) -> None:
    answerer = Answerer(stack.fake)
    greeting = to_ulaw(tone_speech(1.0)) + b"\xff" * 4000  # no beep in the audio: only AMD can end the wait
    with stack.control.call("+15551234567", answer_timeout=10, machine_detection="DetectMessageEnd") as session:
        phone = answerer.wait().phone
        call_sid = session.call_sid
        assert phone is not None and call_sid
        dial = stack.fake.requests_for("POST", "/Calls.json")[0].form_dict
        assert dial["MachineDetection"] == "DetectMessageEnd" and dial["AsyncAmd"] == "true"
        assert session.answered_by_or_none(timeout=0.2) is None  # nothing yet: None, not an exception
        said = phone.say(greeting)

        def report_message_end() -> None:  # Twilio posts the AMD result when the greeting is over
            said.wait_finished(10)
            stack.fake.send_amd(call_sid, "machine_end_beep", duration_ms=1400)

        reporter = threading.Thread(target=report_message_end, daemon=True)
        reporter.start()
        result = session.leave_voicemail("Hi, this is the clinic reminding you of tomorrow's appointment.", silence_ms=None)
        reporter.join(5)
        assert result.reason is GreetingEnd.MACHINE_END_BEEP and result.answered_by == "machine_end_beep"
        assert result.outcome is MarkOutcome.PLAYED and result.hung_up
        assert result.waited >= said.duration - 0.1
    assert phone.wait_closed(10)
    assert stack.fake.requests_for("POST", f"/Calls/{call_sid}.json")[0].form == [("Status", "completed")]


def test_human_answer_skips_the_wait(stack: Stack) -> None:
    answerer = Answerer(stack.fake)
    with stack.control.call("+15551234567", answer_timeout=10, machine_detection="DetectMessageEnd") as session:
        answerer.wait()
        assert stack.fake.send_amd(session.call_sid, "human") == 204
        assert session.answered_by_or_none(timeout=5) == "human"
        result = session.leave_voicemail("Hello!", if_human="return")
        assert result.reason is GreetingEnd.HUMAN and result.outcome is None and not session.is_disconnected


def test_warm_transfer_says_a_line_then_dials(stack: Stack) -> None:
    from examples.warm_transfer import warm_transfer

    answerer = Answerer(stack.fake)
    with stack.control.call("+15551234567", answer_timeout=10) as session:
        phone = answerer.wait().phone
        assert phone is not None
        assert warm_transfer(session, stack.control, "+15559990000", caller_id=stack.fake.phone_number)
        assert phone.events_of("mark_echoed")  # the line was heard before the transfer
        call_sid = session.call_sid
    update = stack.fake.requests_for("POST", f"/Calls/{call_sid}.json")
    assert len(update) == 1
    dial = ET.fromstring(update[0].form_dict["Twiml"]).find("Dial")
    assert dial is not None and dial.text == "+15559990000"


def test_dialled_calls_get_the_control_session_class(make_stack: Any) -> None:
    stack: Stack = make_stack(session_class=ToolSession)
    outbound = stack.control.dial("+15551234567")
    assert type(outbound.session) is ToolSession
    stack.control.hangup_call(outbound.call_id)
    with pytest.raises(Exception, match="session_class"):
        make_stack(session_class=dict)
