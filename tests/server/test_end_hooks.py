"""End-of-call hooks run on the server's end-hook thread: a slow one never stalls another call's audio."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from voice_runtime.on_demand_thread import OnDemandThread

from ..conftest import CallHarness


@pytest.mark.timeout(60)
def test_a_blocked_end_hook_does_not_stall_the_other_calls(harness: CallHarness) -> None:
    """Call A ends and its on_call_ended hook blocks (an upload that hangs); call B, live on the same loop,
    still gets its speech played and its marks echoed. The hooks ran off the loop, in call-end order."""
    release = threading.Event()
    hook_threads: list[str] = []
    ended: list[str | None] = []
    first_hook_running = threading.Event()
    second_hook_ran = threading.Event()
    b_done = threading.Event()
    results: dict[str, Any] = {}

    def on_call_ended(session: Any, stats: Any) -> None:
        hook_threads.append(threading.current_thread().name)
        ended.append(session.call_sid)
        assert stats.report is not None  # the CallReport was built before the hook
        if len(ended) == 1:
            first_hook_running.set()
            release.wait(30)  # the stuck upload
        else:
            second_hook_ran.set()

    def flow(session: Any) -> None:
        if session.call_sid == "CA-A":
            session.speak("Goodbye.", wait=True, timeout=10)
            session.hangup(10)
            return
        first_hook_running.wait(20)  # A has ended and its hook is stuck now
        results["b"] = session.speak("I am still being heard.", wait=True, timeout=10)
        b_done.set()
        release.wait(30)

    server, running = harness.serve(flow, on_call_ended=on_call_ended)
    a = harness.phone(running, call_id="CA-A")
    b = harness.phone(running, call_id="CA-B")
    assert a.wait_closed(15)
    assert first_hook_running.wait(15)
    assert b_done.wait(15), "call B's speech did not complete while A's end hook was blocked"
    assert results["b"].mark is not None and results["b"].mark.outcome.name == "PLAYED"
    assert b.events_of("mark_echoed")
    assert ended == ["CA-A"]  # B's hook has not run: B is still live
    release.set()
    assert b.wait_closed(15)
    assert second_hook_ran.wait(10)
    assert ended == ["CA-A", "CA-B"]
    assert set(hook_threads) == {"call-end-hooks"}


def test_runner_keeps_order_survives_a_failing_hook_and_drains() -> None:
    runner = OnDemandThread("test-hooks")
    seen: list[int] = []

    def boom() -> None:
        raise RuntimeError("a user's hook bug")

    runner.submit(lambda: seen.append(1))
    runner.submit(boom)
    runner.submit(lambda: seen.append(2))
    assert runner.drain(5)
    assert seen == [1, 2] and runner.failed == 1 and runner.ran == 2


def test_drain_times_out_on_a_stuck_hook() -> None:
    runner = OnDemandThread("test-hooks-stuck")
    gate = threading.Event()
    runner.submit(lambda: gate.wait(10) and None)
    assert runner.drain(0.2) is False
    gate.set()
    assert runner.drain(5)
