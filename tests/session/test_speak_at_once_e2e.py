"""``speak`` returns at once; synthesis runs on the call's speech worker — over real sockets with the
SimulatedPhone. The mock TTS is given a synthesis delay so "returns before synthesis" is observable as state
(``synthesized`` not yet set), not as a timing assertion."""

from __future__ import annotations

import threading

from voice_runtime import MarkOutcome, create_tts
from voice_runtime.providers.mock import tone_speech

from ..conftest import CallHarness, FlowResult


def slow_tts():  # noqa: ANN201
    return create_tts("mock", first_chunk_delay=0.4)


def test_speak_returns_before_synthesis_and_the_flow_listens_meanwhile(harness: CallHarness, flow_result: FlowResult) -> None:
    def body(session) -> None:
        greeting = session.speak("Welcome to the shop, how can I help you today?")
        flow_result.values["synthesized_at_return"] = greeting.synthesized.is_set()
        flow_result.values["heard"] = session.listen(timeout=15)  # listening while the greeting is produced/played
        flow_result.values["greeting"] = greeting.wait(10)

    _, running = harness.serve(flow_result.run(body), script=["a coffee please"], tts_factory=slow_tts)
    phone = harness.phone(running)
    phone.wait_for("playback_start", 10)
    phone.say(tone_speech(0.6))
    values = flow_result.wait(30)
    assert values["synthesized_at_return"] is False
    assert values["heard"] == "a coffee please"
    assert values["greeting"] in (MarkOutcome.PLAYED, MarkOutcome.CLEARED)  # the caller may barge in


def test_speech_keeps_its_order_with_direct_marks(harness: CallHarness, flow_result: FlowResult) -> None:
    def body(session) -> None:
        first = session.speak("First sentence.")
        second = session.speak("Second sentence.")
        flow_result.values["after"] = session.send_mark_and_wait("after_both", timeout=15)  # waits for both
        flow_result.values["order"] = [e.data["name"] for e in session.events if e.kind == "mark_played"]
        flow_result.values["both"] = (first.wait(5), second.wait(5))

    _, running = harness.serve(flow_result.run(body), tts_factory=slow_tts)
    harness.phone(running)
    values = flow_result.wait(30)
    assert values["after"] is MarkOutcome.PLAYED
    assert values["order"] == ["speech", "speech", "after_both"]
    assert values["both"] == (MarkOutcome.PLAYED, MarkOutcome.PLAYED)


def test_streamed_text_is_spoken_sentence_by_sentence_while_it_is_produced(harness: CallHarness, flow_result: FlowResult) -> None:
    first_heard = threading.Event()
    spoken: list[str] = []

    def tokens():  # noqa: ANN202 - an "LLM" that only finishes after the caller heard its first sentence
        yield from ["Sure", ", your order ", "is ready. "]
        first_heard.wait(10)
        yield from ["Pick it up ", "at the counter."]

    def body(session) -> None:
        result = session.speak(tokens())
        flow_result.values["outcome"] = result.wait(20)
        flow_result.values["text"] = result.text

    tts = create_tts("mock", on_spoken=spoken.append)
    _, running = harness.serve(flow_result.run(body), tts_factory=lambda: tts)
    phone = harness.phone(running)
    phone.wait_for("playback_start", 10)  # the first sentence plays before the token stream has ended
    assert spoken == ["Sure, your order is ready."]
    first_heard.set()
    values = flow_result.wait(30)
    assert spoken == ["Sure, your order is ready.", "Pick it up at the counter."]
    assert values["outcome"] is MarkOutcome.PLAYED
    assert values["text"] == "Sure, your order is ready. Pick it up at the counter."


def test_a_clear_drops_queued_speech_and_a_hangup_releases_it(harness: CallHarness, flow_result: FlowResult) -> None:
    spoken: list[str] = []

    def body(session) -> None:
        first_audio = threading.Event()
        session.add_event_listener(lambda e: first_audio.set() if e.kind == "tts_first_audio" else None)
        playing = session.speak("This first announcement is long enough to still be playing when we clear it.")
        queued = session.speak("This one never gets a chance.")
        assert first_audio.wait(10)  # the first is being synthesized (slowly), the second waits its turn
        session.request_clear_buffer()
        flow_result.values["queued"] = (queued.wait(5), queued.stopped)
        flow_result.values["playing"] = (playing.wait(5), playing.stopped)
        later = session.speak("Spoken after the clear.", wait=True)
        flow_result.values["later"] = later.heard
        last = [session.speak("Never synthesized either.") for _ in range(3)]
        session.hangup(10)
        flow_result.values["after_hangup"] = [r.wait(5) for r in last]

    tts = create_tts("mock", on_spoken=spoken.append, synthesis_speed=2.0)  # produces audio at 2x real time
    _, running = harness.serve(flow_result.run(body), tts_factory=lambda: tts)
    harness.phone(running)
    values = flow_result.wait(30)
    assert values["queued"] == (MarkOutcome.CLEARED, True)
    assert values["playing"] == (MarkOutcome.CLEARED, True)  # cut mid-synthesis: its mark is CLEARED
    assert values["later"] is True
    assert "This one never gets a chance." not in spoken
    assert all(outcome in (MarkOutcome.HUNG_UP, MarkOutcome.CLEARED, MarkOutcome.PLAYED, None) for outcome in values["after_hangup"])
    assert spoken.count("Never synthesized either.") <= 1  # at most the one already running when the call ended
