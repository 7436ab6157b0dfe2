"""Slow consumers: a call whose STT or flow stops reading must stay bounded and must not stall other calls.

The "long stream" is sent for real, over the carrier socket, as fast as the socket takes it: thousands of
well-formed carrier media messages (minutes of caller audio) in a second or two. What is checked is the
*bound* (queue sizes, drop counters), which is what keeps memory flat however long the call lasts.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from voice_runtime import MarkOutcome
from voice_runtime.audio.frames import SILENCE_FRAME
from voice_runtime.providers.mock import MockStt
from voice_runtime.server import ConnectionConfig

from ..conftest import CallHarness
from .conftest import CARRIERS, LeakCheck

FRAMES = 5000  # 100 s of caller audio


class SttNeverReads(MockStt):
    """Connected, but never takes a frame off the inbound queue (a stuck provider)."""

    async def start(self, inbound_queue: Any) -> None:
        self.started.set()


class SttCommitsEveryFrame(MockStt):
    """Commits one utterance per frame: a flood of transcripts nobody listens to."""

    def __init__(self) -> None:
        super().__init__(vad=False)
        self.count = 0

    async def _consume(self, queue: Any) -> None:
        while True:
            frame = await queue.get()
            if frame is None:
                return
            self.count += 1
            self._commit(f"utterance {self.count}")


def _flood(phone: Any, frames: int) -> None:
    """Queue ``frames`` well-formed media messages on the phone's socket, then one DTMF as a fence."""
    codec = phone.codec
    for i in range(frames):
        phone.send_raw(codec.media(SILENCE_FRAME, 10_000 + i, 200_000 + 20 * i))
    phone.press("#")


class Calls:
    """Sessions by the caller's ``who`` parameter, plus a fence event per call (its first DTMF)."""

    def __init__(self) -> None:
        self.sessions: dict[str, Any] = {}
        self.fenced: dict[str, threading.Event] = {"slow": threading.Event(), "good": threading.Event()}
        self.results: dict[str, Any] = {}
        self.done = threading.Semaphore(0)


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize("stuck", ["stt", "flow"])
def test_a_stuck_reader_stays_bounded_and_does_not_stall_another_call(harness: CallHarness, carrier: str, stuck: str) -> None:
    calls = Calls()
    release = threading.Event()

    def flow(session: Any) -> None:
        who = session.custom_parameters["who"]
        calls.sessions[who] = session
        session.on_dtmf = lambda _d: calls.fenced[who].set()
        try:
            if who == "slow":
                release.wait(30)  # the flow reads nothing while the flood arrives
                if stuck == "flow":
                    calls.results["slow_first"] = session.listen(timeout=5)
            else:
                outcomes = []
                for _ in range(2):  # a normal conversation, concurrently with the flood
                    outcomes.append(session.speak("Still talking.", wait=True, timeout=15).wait(0))
                calls.results["good"] = outcomes
                calls.results["good_digit"] = session.wait_for_dtmf(timeout=15)
        finally:
            calls.done.release()

    stt = SttNeverReads if stuck == "stt" else SttCommitsEveryFrame
    defaults = {"inbound_max_frames": 25, "max_pending_utterances": 8}
    # The inbound rate budget is off: this test sends 100 s of audio in a second or two *on purpose*, to fill
    # the queues; the budget (which would drop and close such a flood) is tested in test_inbound_budget.py.
    server, running = harness.serve(
        flow, stt_factory=stt, session_defaults=defaults, connection_config=ConnectionConfig(inbound_budget=None)
    )
    leaks = LeakCheck(running)
    slow = harness.phone(running, carrier=carrier, custom_parameters={"who": "slow"}, call_id="CA" + "5" * 32, send_silence=False)
    good = harness.phone(running, carrier=carrier, custom_parameters={"who": "good"}, call_id="CA" + "6" * 32)

    good.wait_for("playback_start", timeout=10)
    _flood(slow, FRAMES)
    assert calls.fenced["slow"].wait(30), "the flood never got through"
    session = calls.sessions["slow"]

    if stuck == "stt":
        assert session.inbound.qsize() <= 25
        assert session.stats["inbound_dropped"] >= FRAMES - 25
    else:
        # Every frame reached the STT or was counted as dropped on the way (the STT may lag a flood).
        assert FRAMES - 25 <= session.stt.count + session.stats["inbound_dropped"] <= FRAMES
        assert len(session._utterances) <= 8
        assert session.stats["utterances_dropped"] >= session.stt.count - 8
    assert len(session.events) <= session.log._events.maxlen  # the event log is bounded too

    committed_at_fence = getattr(session.stt, "count", 0)
    good.press("9")
    release.set()
    assert calls.done.acquire(timeout=30) and calls.done.acquire(timeout=30)
    assert calls.results["good"] == [MarkOutcome.PLAYED] * 2
    assert calls.results["good_digit"] == "9"
    if stuck == "flow":  # the freshest utterances are the ones kept
        assert calls.results["slow_first"].startswith("utterance ")
        assert int(calls.results["slow_first"].split()[1]) > committed_at_fence - 8
    assert good.violations == [] and slow.violations == []
    slow.hangup()
    good.hangup()
    leaks.assert_clean()
