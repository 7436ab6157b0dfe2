"""The speech worker belongs to its call: what it logs carries the call's id, and a speech the call's end cut
mid-synthesis says HUNG_UP. Real server, real sockets, a SimulatedPhone; the TTS is a stub that streams one
piece and then waits for the test (the provider is the boundary here, so it is faked: its pacing is the point).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from voice_runtime import MarkOutcome
from voice_runtime.logs import current_call_id

from ..conftest import CallHarness


class _StalledTts:
    """Streams one 100 ms piece, then holds the rest until ``release`` (or the stop event) is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.call_ids: list[str | None] = []

    def synthesize(self, text: str, stop: threading.Event) -> Any:
        self.call_ids.append(current_call_id())  # the context the speech worker runs in
        yield b"\xff" * 800
        while not (self.release.wait(0.05) or stop.is_set()):
            pass
        yield b"\xff" * 800


@pytest.mark.timeout(30)
def test_a_call_that_ends_during_synthesis_says_hung_up_and_the_worker_ran_in_the_calls_context(
    harness: CallHarness,
) -> None:
    tts = _StalledTts()
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def flow(session: Any) -> None:
        try:
            result = session.speak("a reply the provider is slow to finish")
            outcome["call_id"] = session.call_sid
            outcome["wait"] = result.wait(20)
            outcome["disconnected"] = result.call_disconnected
        finally:
            done.set()

    _, running = harness.serve(flow, tts_factory=lambda: tts)
    phone = harness.phone(running)
    phone.wait_for("playback_start", timeout=10)
    phone.hangup()
    assert done.wait(20)
    tts.release.set()
    assert outcome["wait"] is MarkOutcome.HUNG_UP and outcome["disconnected"] is True
    assert tts.call_ids == [outcome["call_id"]]
