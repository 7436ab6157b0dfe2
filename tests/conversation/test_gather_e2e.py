"""``gather`` end to end: the real server, a SimulatedPhone pressing keys and talking over a loopback socket.

Providers are the mock ones: the TTS makes real audio of text-proportional length (so prompts take real time to
play and can be interrupted), the STT's words are scripted but its endpointing runs on the phone's real audio.
"""

from __future__ import annotations

import pytest

from voice_runtime import CallHangupError
from voice_runtime.conversation import GatherKind
from voice_runtime.providers.mock import tone_speech

from ..conftest import CallHarness, FlowResult


def run_gather(harness: CallHarness, flow_result: FlowResult, script: list[str] | None = None, **options):
    def body(session) -> None:
        flow_result.values["result"] = session.gather(options.pop("prompt", "Enter your code."), **options)

    _, running = harness.serve(flow_result.run(body), script=script)
    return harness.phone(running)


def test_digits_end_with_the_finish_key_and_the_key_interrupts_the_prompt(harness: CallHarness, flow_result: FlowResult) -> None:
    phone = run_gather(
        harness, flow_result, prompt="Please enter your six digit account number followed by the hash key, now.", timeout=5
    )
    phone.wait_for("playback_start", timeout=5)
    phone.press("42")
    phone.press("7#")
    result = flow_result.wait()["result"]
    assert result.kind is GatherKind.DIGITS and result.value == "427"
    assert result.ok and result.attempts == 1
    attempt = result.history[0]
    assert attempt.prompt_interrupted  # the first key stopped the prompt ...
    assert phone.wait_for("clear", timeout=5) is not None  # ... by clearing the carrier's buffer
    assert attempt.input_at is not None and attempt.input_at <= attempt.ended_at
    assert phone.violations == []


def test_num_digits_ends_collection_without_a_finish_key(harness: CallHarness, flow_result: FlowResult) -> None:
    phone = run_gather(harness, flow_result, prompt="Code?", num_digits=4, finish_on_key=None, inter_digit_timeout=5)
    phone.wait_for("mark_echoed", timeout=5)
    phone.press("98765")
    result = flow_result.wait()["result"]
    assert (result.kind, result.value) == (GatherKind.DIGITS, "9876")


def test_speech_answer_and_validation_normalises_it(harness: CallHarness, flow_result: FlowResult) -> None:
    phone = run_gather(
        harness,
        flow_result,
        script=["billing please"],
        prompt="Say sales or billing.",
        digits=False,
        validate=lambda text: "billing" if "billing" in text else None,
    )
    phone.wait_for("mark_echoed", timeout=5)
    phone.say(tone_speech(0.7))
    result = flow_result.wait()["result"]
    assert (result.kind, result.value) == (GatherKind.SPEECH, "billing")
    assert result.input_latency is not None and result.input_latency > 0.5  # the utterance took its time


def next_mark(phone, previous=None, timeout: float = 10.0):
    """The next ``mark_echoed`` after ``previous`` (the phone plays in real time: a mark means "heard")."""
    return phone.wait_for("mark_echoed", timeout, after=0.0 if previous is None else previous.at + 1e-6)


def test_no_input_then_reprompt_then_answer(harness: CallHarness, flow_result: FlowResult) -> None:
    phone = run_gather(harness, flow_result, prompt="Code?", reprompts=["Sorry, I heard nothing. Code?"], timeout=0.5, max_attempts=3)
    first = next_mark(phone)  # first prompt heard; then silence: no-input
    next_mark(phone, first)  # the reprompt heard
    phone.press("5#")
    result = flow_result.wait()["result"]
    assert (result.kind, result.value, result.attempts) == (GatherKind.DIGITS, "5", 2)
    assert [a.kind for a in result.history] == [GatherKind.NO_INPUT, GatherKind.DIGITS]
    assert [a.prompt for a in result.history] == ["Code?", "Sorry, I heard nothing. Code?"]
    assert result.history[0].ended_at - result.history[0].prompt_ended_at >= 0.45  # the no-input clock ran after the prompt


def test_no_match_uses_no_match_prompts_and_gives_up_after_max_attempts(harness: CallHarness, flow_result: FlowResult) -> None:
    phone = run_gather(
        harness,
        flow_result,
        prompt="Pin?",
        no_match_prompts=["That pin is not valid. Pin?"],
        reprompts=["Pin, please?"],
        validate=lambda value: value == "1234",
        max_attempts=2,
        timeout=5,
    )
    first = next_mark(phone)
    phone.press("99#")
    next_mark(phone, first)
    phone.press("98#")
    result = flow_result.wait()["result"]
    assert (result.kind, result.value, result.attempts, result.ok) == (GatherKind.NO_MATCH, "98", 2, False)
    assert [a.prompt for a in result.history] == ["Pin?", "That pin is not valid. Pin?"]


@pytest.mark.parametrize("first", ["speech", "digits"])
def test_digits_and_speech_whichever_comes_first(harness: CallHarness, flow_result: FlowResult, first: str) -> None:
    phone = run_gather(harness, flow_result, script=["agent"], prompt="Press one or say agent.", num_digits=1, timeout=5)
    next_mark(phone)
    if first == "speech":
        phone.say(tone_speech(0.6))
    else:
        phone.press("1")
    result = flow_result.wait()["result"]
    assert (result.kind, result.value) == ((GatherKind.SPEECH, "agent") if first == "speech" else (GatherKind.DIGITS, "1"))


def test_hangup_during_gather_raises_call_hangup(harness: CallHarness, flow_result: FlowResult) -> None:
    phone = run_gather(harness, flow_result, prompt="Code?", timeout=20)
    next_mark(phone)
    phone.hangup()
    with pytest.raises(CallHangupError):
        flow_result.wait(10)
