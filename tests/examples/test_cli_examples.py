"""Every example flow, run offline: a real server, a simulated phone over a real WebSocket, mock providers.

The mock STT's words come from a script, but they are committed only when the phone's audio (speech-like
tones the test queues) starts and stops, so timing, marks and barge-in are the runtime's real ones.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from voice_runtime.providers.mock import tone_speech

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


appointment = load_example("appointment")
ivr_menu = load_example("ivr_menu")
reminder = load_example("reminder")


def _run(harness: Any, flow_result: Any, flow: Any, script: list[str]) -> Any:
    def body(session: Any) -> None:
        flow_result.values["result"] = flow(session)

    _, running = harness.serve(flow_result.run(body), script=script)
    return harness.phone(running)


def _answer_after_prompt(phone: Any, seconds: float = 1.0) -> None:
    """Speak once the agent's prompt has finished playing (a polite caller)."""
    phone.wait_for("playback_end", timeout=30)
    phone.say(tone_speech(seconds), 8000)


@pytest.mark.parametrize(("answer", "branch"), [("Yes, that works for me.", "confirmed"), ("No, I can't make it.", "reschedule")])
def test_appointment_branches_on_the_answer(harness, flow_result, answer: str, branch: str) -> None:  # type: ignore[no-untyped-def]
    phone = _run(harness, flow_result, appointment.flow, [answer])
    _answer_after_prompt(phone)
    assert flow_result.wait(40)["result"] == branch
    assert phone.wait_closed(10)


def test_appointment_asks_again_when_unclear(harness, flow_result) -> None:  # type: ignore[no-untyped-def]
    phone = _run(harness, flow_result, appointment.flow, ["Hmm, who is this?", "yes"])
    _answer_after_prompt(phone)
    spoke = phone.wait_for("caller_speech_end", timeout=10)
    second = phone.wait_for("playback_start", timeout=20, after=spoke.at)  # "Sorry, I did not catch that..."
    phone.wait_for("playback_end", timeout=30, after=second.at)
    phone.say(tone_speech(1.0), 8000)
    assert flow_result.wait(60)["result"] == "confirmed"


def test_appointment_classify() -> None:
    assert appointment.classify("yeah sure") == "confirmed"
    assert appointment.classify("that works") == "confirmed"
    assert appointment.classify("not tomorrow") == "reschedule"
    assert appointment.classify("what?") == "unclear"


def test_ivr_key_press_routes(harness, flow_result) -> None:  # type: ignore[no-untyped-def]
    phone = _run(harness, flow_result, ivr_menu.flow, [])
    phone.wait_for("playback_start", timeout=20)
    phone.press("2")
    assert flow_result.wait(60)["result"] == "appointments"
    assert phone.wait_closed(10)


def test_ivr_spoken_choice_routes(harness, flow_result) -> None:  # type: ignore[no-untyped-def]
    phone = _run(harness, flow_result, ivr_menu.flow, ["opening hours please"])
    _answer_after_prompt(phone)
    assert flow_result.wait(60)["result"] == "hours"


def test_ivr_invalid_key_repeats_the_menu(harness, flow_result) -> None:  # type: ignore[no-untyped-def]
    phone = _run(harness, flow_result, ivr_menu.flow, [])
    phone.wait_for("playback_start", timeout=20)
    phone.press("9")
    first_end = phone.wait_for("playback_end", timeout=30)
    phone.wait_for("playback_start", timeout=30, after=first_end.at)  # "not an option" / the menu again
    phone.press("0")
    assert flow_result.wait(90)["result"] == "operator"


def test_reminder_to_a_person_without_amd(harness, flow_result) -> None:  # type: ignore[no-untyped-def]
    phone = _run(harness, flow_result, reminder.flow, ["could you repeat that"])
    phone.wait_for("playback_start", timeout=30)  # AMD is off: after its wait the flow treats the callee as a person
    _answer_after_prompt(phone)  # asks for a repeat
    assert flow_result.wait(90)["result"] == "human"
    played = [e for e in phone.events_of("playback_start")]
    assert len(played) >= 2  # message, repeated message (+ goodbye)


def test_reminder_leaves_a_voicemail_for_a_machine() -> None:
    """The voicemail branch, with the session double the flow needs (AMD says machine; speech is recorded)."""

    class Session:
        def __init__(self) -> None:
            self.spoken: list[str] = []
            self.hung_up = False
            self.is_disconnected = False

        def wait_for_answered_by(self, timeout: float) -> str:
            return "machine_end_beep"

        def speak(self, text: str, wait: bool = False, timeout: float = 0.0) -> None:
            self.spoken.append(text)

        def hangup(self) -> None:
            self.hung_up = True

    session = Session()
    assert reminder.flow(session) == "voicemail"
    assert session.hung_up and reminder.MESSAGE in session.spoken[0]
