"""``run_off_loop`` / ``call_off_thread``: one daemon thread per blocking call, with an optional deadline.

The Azure providers' ``run_blocking`` / ``call_with_timeout`` are these (named for the SDK), so the deadline
semantics they rely on are tested here once: past the deadline the caller gets ``OffLoopTimeout`` at once
while the call keeps running, abandoned, on a daemon thread; an exception of the call itself — including
its own ``TimeoutError`` — reaches the caller unchanged. Every wait is on an event with a timeout.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from voice_runtime.offloop import OffLoopTimeout, call_off_thread, run_off_loop
from voice_runtime.providers import azure_sdk


class Blocker:
    """A blocking call held until released; records the thread it ran on."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.finished = threading.Event()
        self.thread: threading.Thread | None = None

    def __call__(self, value: str) -> str:
        self.thread = threading.current_thread()
        self.entered.set()
        assert self.release.wait(10.0)
        self.finished.set()
        return value


def test_run_off_loop_deadline_abandons_the_daemon_thread() -> None:
    blocker = Blocker()

    async def main() -> None:
        with pytest.raises(OffLoopTimeout, match="held did not return within 0.05s"):
            await run_off_loop(blocker, "x", name="held", timeout=0.05)
        assert blocker.entered.is_set() and not blocker.finished.is_set()  # still running, abandoned

    asyncio.run(main())  # the loop closes while the call still runs: its late result is dropped quietly
    assert blocker.thread is not None and blocker.thread.daemon and blocker.thread.name == "held"
    blocker.release.set()
    assert blocker.finished.wait(5.0)
    blocker.thread.join(5.0)
    assert not blocker.thread.is_alive()


def test_run_off_loop_returns_and_raises_including_the_calls_own_timeout_error() -> None:
    def own_timeout() -> None:
        raise TimeoutError("the call's own timeout")

    async def main() -> None:
        loop_thread = threading.current_thread()
        assert await run_off_loop(lambda: threading.current_thread(), timeout=5.0) is not loop_thread
        assert await run_off_loop(str.upper, "ok", timeout=5.0) == "OK"
        assert await run_off_loop(str.upper, "ok") == "OK"  # no deadline: as before
        with pytest.raises(TimeoutError, match="the call's own timeout") as raised:
            await run_off_loop(own_timeout, timeout=5.0)
        assert not isinstance(raised.value, OffLoopTimeout)
        with pytest.raises(ZeroDivisionError):
            await run_off_loop(lambda: 1 / 0, timeout=5.0)

    asyncio.run(main())


def test_call_off_thread_deadline_result_and_exception() -> None:
    blocker = Blocker()
    with pytest.raises(OffLoopTimeout, match="within 0.05s"):
        call_off_thread(blocker, "x", timeout=0.05, name="held-thread")
    assert blocker.entered.wait(5.0) and not blocker.finished.is_set()
    assert blocker.thread is not None and blocker.thread.daemon
    blocker.release.set()
    assert blocker.finished.wait(5.0)
    assert call_off_thread(str.upper, "ok", timeout=5.0) == "OK"
    with pytest.raises(KeyError):
        call_off_thread({}.__getitem__, "missing", timeout=5.0)


def test_the_azure_helpers_are_these() -> None:
    assert azure_sdk.BlockingCallTimeout is OffLoopTimeout  # what the providers catch is what is raised
    blocker = Blocker()
    with pytest.raises(azure_sdk.BlockingCallTimeout, match="azure-sdk did not return"):
        azure_sdk.call_with_timeout(blocker, "x", timeout=0.02)
    blocker.release.set()
    assert blocker.finished.wait(5.0)
    assert asyncio.run(azure_sdk.run_blocking(str.upper, "ok", timeout=5.0)) == "OK"
