"""Idle reminders/goodbye and the maximum duration, over real sockets with the SimulatedPhone."""

from __future__ import annotations

import pytest

from voice_runtime import CallHangupError, ConfigError
from voice_runtime.conversation import CallLimits
from voice_runtime.conversation.limits import IDLE_PROMPT, IDLE_TIMEOUT, MAX_DURATION_REACHED
from voice_runtime.providers.mock import tone_speech

from ..conftest import CallHarness, FlowResult


def listen_until_hangup(session, values) -> None:
    heard = []
    try:
        while True:
            heard.append(session.listen(timeout=30))
    except CallHangupError:
        pass
    values["heard"] = heard
    values["reason"] = session.end_reason
    values["events"] = [(e.kind, e.data) for e in session.events if e.kind in (IDLE_PROMPT, IDLE_TIMEOUT, MAX_DURATION_REACHED)]
    values["said"] = [e.data["text"] for e in session.events if e.kind == "tts_start"]


def test_silent_caller_is_reminded_then_told_goodbye_and_the_call_ends_idle(harness: CallHarness, flow_result: FlowResult) -> None:
    def body(session) -> None:
        session.apply_limits(idle_timeout=0.6, idle_prompts=["Are you still there?", "Hello?"], idle_goodbye="Goodbye.")
        listen_until_hangup(session, flow_result.values)

    _, running = harness.serve(flow_result.run(body))
    phone = harness.phone(running)
    values = flow_result.wait(20)
    assert values["said"] == ["Are you still there?", "Hello?", "Goodbye."]
    assert [k for k, _ in values["events"]] == [IDLE_PROMPT, IDLE_PROMPT, IDLE_TIMEOUT]
    assert values["reason"] == "idle"
    assert phone.wait_closed(10)
    assert len(phone.events_of("mark_echoed")) >= 3  # every reminder and the goodbye were heard in full


def test_caller_activity_resets_the_reminders(harness: CallHarness, flow_result: FlowResult) -> None:
    def body(session) -> None:
        session.apply_limits(idle_timeout=0.8, idle_prompts=["Still there?"], idle_goodbye="Bye.")
        listen_until_hangup(session, flow_result.values)

    _, running = harness.serve(flow_result.run(body), script=["yes i am"])
    phone = harness.phone(running)
    phone.wait_for("mark_echoed", 10)  # "Still there?" heard
    phone.say(tone_speech(0.5))  # the caller answers: reminders start over
    values = flow_result.wait(20)
    assert values["heard"] == ["yes i am"]
    assert values["said"] == ["Still there?", "Still there?", "Bye."]
    assert values["reason"] == "idle"


def test_max_duration_cuts_in_politely(harness: CallHarness, flow_result: FlowResult) -> None:
    def body(session) -> None:
        session.apply_limits(CallLimits(max_duration=1.0, max_duration_goodbye="Time is up, goodbye."))
        session.speak("This is a very long announcement that would go on for many seconds if nobody stopped it at all.")
        listen_until_hangup(session, flow_result.values)

    _, running = harness.serve(flow_result.run(body))
    phone = harness.phone(running)
    values = flow_result.wait(20)
    assert values["reason"] == "max_duration"
    assert [k for k, _ in values["events"]] == [MAX_DURATION_REACHED]
    assert values["events"][0][1]["after"] == pytest.approx(1.0, abs=0.5)
    assert values["said"][-1] == "Time is up, goodbye."
    assert phone.wait_for("clear", 5) is not None  # the announcement was cut for the goodbye
    assert phone.wait_closed(10)


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ConfigError):
        CallLimits(idle_timeout=0)
    with pytest.raises(ConfigError):
        CallLimits(idle_prompts="Are you there?")  # type: ignore[arg-type]


def test_limits_for_every_call_of_a_server_via_on_call_started(harness: CallHarness, flow_result: FlowResult) -> None:
    def body(session) -> None:
        listen_until_hangup(session, flow_result.values)

    _, running = harness.serve(
        flow_result.run(body), on_call_started=lambda s: s.apply_limits(idle_timeout=0.5, idle_prompts=[], idle_goodbye="Bye.")
    )
    harness.phone(running)
    values = flow_result.wait(20)
    assert values["said"] == ["Bye."] and values["reason"] == "idle"
