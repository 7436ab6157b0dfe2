"""In-band DTMF out (Twilio tones, Plivo message or tones) and DTMF barge-in, over real sockets."""

from __future__ import annotations

import threading

import pytest

from voice_runtime import MarkOutcome

from ..conftest import CallHarness, FlowResult
from .conftest import numbered_audio


def test_twilio_send_dtmf_goes_in_band_and_the_phone_decodes_it(harness: CallHarness, flow_result: FlowResult) -> None:
    def body(session) -> None:
        handle = session.send_dtmf("1234567890*#")
        flow_result.values["tones"] = handle.wait(10)
        session.set_background(numbered_audio(1.0), volume=0.15)  # digits must survive a bed under them
        flow_result.values["with_bed"] = session.send_dtmf("9w8", method="tones").wait(10)
        flow_result.values["events"] = [(e.kind, e.data.get("method")) for e in session.events]

    _, running = harness.serve(flow_result.run(body))
    phone = harness.phone(running)
    values = flow_result.wait()
    assert values["tones"] is MarkOutcome.PLAYED and values["with_bed"] is MarkOutcome.PLAYED
    assert phone.wait_for_tones("1234567890*#98", timeout=5) == "1234567890*#98"
    assert ("dtmf_sent", "tones") in values["events"]
    assert phone.events_of("dtmf_out") == []  # nothing but audio went to Twilio


def test_plivo_sends_a_dtmf_message_and_tones_on_request(harness: CallHarness, flow_result: FlowResult) -> None:
    def body(session) -> None:
        flow_result.values["message"] = session.send_dtmf("42")
        flow_result.values["tones"] = session.send_dtmf("42", method="tones").wait(10)

    _, running = harness.serve(flow_result.run(body))
    phone = harness.phone(running, carrier="plivo")
    values = flow_result.wait()
    assert values["message"] is None and values["tones"] is MarkOutcome.PLAYED
    assert phone.wait_for("dtmf_out", timeout=5).data["digits"] == "42"
    assert phone.wait_for_tones("42", timeout=5) == "42"


def test_invalid_method_is_refused(harness: CallHarness, flow_result: FlowResult) -> None:
    def body(session) -> None:
        with pytest.raises(ValueError):
            session.send_dtmf("1", method="smoke")
        with pytest.raises(ValueError):
            session.send_dtmf("1x")

    _, running = harness.serve(flow_result.run(body))
    harness.phone(running)
    flow_result.wait()


@pytest.mark.parametrize("interrupt", [True, False])
def test_a_key_stops_the_prompt_unless_told_not_to(harness: CallHarness, flow_result: FlowResult, interrupt: bool) -> None:
    prompt = numbered_audio(3.0, seed=9)
    pressed = threading.Event()

    def body(session) -> None:
        result = session.play(prompt, dtmf_interrupt=interrupt)
        flow_result.values["outcome"] = result.wait(10)
        flow_result.values["key"] = session.wait_for_dtmf(timeout=5)
        flow_result.values["heard"] = result.heard_seconds

    _, running = harness.serve(flow_result.run(body))
    phone = harness.phone(running)
    phone.wait_for("mark_echoed", timeout=5, predicate=lambda _e: len(phone.marks_echoed) >= 4)
    phone.press("5")
    pressed.set()
    values = flow_result.wait(15)
    assert values["key"] == "5"
    if interrupt:
        assert values["outcome"] is MarkOutcome.CLEARED and values["heard"] < 1.5
        assert len(phone.heard_audio()) < len(prompt)
    else:
        assert values["outcome"] is MarkOutcome.PLAYED and phone.heard_audio() == prompt


@pytest.mark.parametrize("interrupt", [True, None])
def test_a_key_stops_speech_when_asked_to(harness: CallHarness, flow_result: FlowResult, interrupt: bool | None) -> None:
    def body(session) -> None:
        result = session.speak("This is a long menu that lists every single option we have, one after the other.", dtmf_interrupt=interrupt)
        flow_result.values["outcome"] = result.wait(15)
        flow_result.values["key"] = session.wait_for_dtmf(timeout=5)
        flow_result.values["dtmf_barge_ins"] = session.stats["dtmf_barge_ins"]

    _, running = harness.serve(flow_result.run(body))
    phone = harness.phone(running)
    phone.wait_for("playback_start", timeout=5)
    phone.press("3")
    values = flow_result.wait(20)
    assert values["key"] == "3"
    if interrupt:
        assert values["outcome"] is MarkOutcome.CLEARED and values["dtmf_barge_ins"] == 1
        assert phone.wait_for("clear", timeout=5)
    else:  # speak's default: a key does not stop speech (the prior art's behaviour)
        assert values["outcome"] is MarkOutcome.PLAYED and values["dtmf_barge_ins"] == 0
