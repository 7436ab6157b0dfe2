"""hold(music, still_holding_prompt, period) / unhold() over real sockets."""

from __future__ import annotations

import threading
import time

from voice_runtime import MarkOutcome
from voice_runtime.audio.g711 import pcm16_to_ulaw
from voice_runtime.providers.mock import tone_speech

from ..conftest import CallHarness, FlowResult
from .conftest import numbered_audio


def test_hold_plays_music_and_a_periodic_prompt_until_released(harness: CallHarness, flow_result: FlowResult) -> None:
    music = pcm16_to_ulaw(tone_speech(1.5, frequency=330, amplitude=4000))
    prompt = numbered_audio(0.5, seed=5)
    release = threading.Event()

    def body(session) -> None:
        session.speak("Please hold.", wait=True)
        session.hold(music, still_holding_prompt=prompt, period=0.8)
        flow_result.values["holding"] = session.playback.on_hold
        assert release.wait(15)
        flow_result.values["held"] = session.unhold()
        flow_result.values["thanks"] = session.speak("Thanks for holding.", wait=True).heard
        flow_result.values["end"] = session.send_mark_and_wait("end", timeout=5)
        flow_result.values["events"] = [e.kind for e in session.events]

    _, running = harness.serve(flow_result.run(body))
    phone = harness.phone(running)
    first = phone.wait_for("mark_echoed", timeout=10)  # "Please hold." was heard
    # two still-holding prompts heard, then release
    phone.wait_for("mark_echoed", timeout=10, predicate=lambda _e: phone.heard_audio().count(prompt) >= 2)
    released = time.monotonic()
    release.set()
    values = flow_result.wait(20)
    assert values["holding"] and values["thanks"] and values["end"] is MarkOutcome.PLAYED
    assert values["held"] >= 1.6
    assert "hold_started" in values["events"] and "hold_ended" in values["events"]
    heard = phone.heard_audio()
    assert heard.count(prompt) >= 2  # the prompt, whole and unmixed, over the music's pause
    assert music[:1600] in heard  # the music itself, at full volume, from its start
    during = phone.levels(first.at + 0.1, released)
    assert len(during) > 50 and all(f.audio for f in during)  # never a silent tick while on hold
    end = phone.events_of("mark_echoed")[-1]
    assert phone.wait_for("playback_end", timeout=5, after=end.at)  # released: the music stopped
