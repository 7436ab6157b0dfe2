"""Helpers shared by the reliability suite: leak checks, end-of-call probes, the carrier list.

The core ``harness`` fixture (tests/conftest.py) gives a real server and simulated phones; these helpers add
what a fault test must assert afterwards: nothing left running (threads, asyncio tasks on the server loop),
the end reported exactly once, the recording flushed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from voice_runtime import call_events as ev
from voice_runtime.protocols import DIALECTS
from voice_runtime.server import RunningServer

#: Every dialect that exists in this tree; fault and fuzz tests are parametrized over all of them.
CARRIERS = [name for name in ("twilio", "plivo") if name in DIALECTS]


def server_loop(running: RunningServer) -> asyncio.AbstractEventLoop:
    """The event loop uvicorn serves on (its listening ``asyncio.Server`` knows it)."""
    return running._server.servers[0].get_loop()


def loop_tasks(loop: asyncio.AbstractEventLoop) -> set[asyncio.Task[Any]]:
    async def grab() -> set[asyncio.Task[Any]]:
        return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}

    return asyncio.run_coroutine_threadsafe(grab(), loop).result(5)


class LeakCheck:
    """Snapshot threads and server-loop tasks now; :meth:`assert_clean` proves the call left none behind.

    It waits on the leftovers themselves (thread joins, ``asyncio.wait`` on the tasks) up to a deadline,
    so a slow but correct teardown passes and a leak fails with the names of what is still running.
    """

    def __init__(self, running: RunningServer) -> None:
        self.loop = server_loop(running)
        self.threads = set(threading.enumerate())
        self.tasks = loop_tasks(self.loop)

    def assert_clean(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        # Enumerate again after each join: a teardown can start a short-lived thread late (the end-of-call hook
        # thread starts when the last call's hooks are submitted, possibly after the first look).
        while (left := [t for t in set(threading.enumerate()) - self.threads if t.is_alive()]) and (
            time.monotonic() < deadline
        ):
            try:
                left[0].join(max(0.0, deadline - time.monotonic()))
            except RuntimeError:  # "cannot join thread before it is started": it is microseconds away
                pass
        threads = [t.name for t in set(threading.enumerate()) - self.threads if t.is_alive()]
        assert not threads, f"threads left behind: {threads}"

        before = self.tasks

        async def settle() -> list[str]:
            me = asyncio.current_task()
            while True:
                extra = {t for t in asyncio.all_tasks() if t not in before and t is not me}
                remaining = deadline - time.monotonic()
                if not extra or remaining <= 0:
                    return sorted(repr(t.get_coro()) for t in extra)
                await asyncio.wait(extra, timeout=remaining)

        leftover = asyncio.run_coroutine_threadsafe(settle(), self.loop).result(timeout + 5)
        assert not leftover, f"asyncio tasks left behind on the server loop: {leftover}"


class CallProbe:
    """Counts how a session reports its end: CALL_ENDED events, ``on_disconnected`` calls, the recording."""

    def __init__(self) -> None:
        self.ended_events = 0
        self.disconnected_calls = 0
        self.recordings: list[str] = []
        self.ended = threading.Event()
        self.saved = threading.Event()
        self._lock = threading.Lock()

    def attach(self, session: Any) -> None:
        session.on_disconnected = self._on_disconnected
        session.add_event_listener(self._on_event)

    def _on_disconnected(self) -> None:
        with self._lock:
            self.disconnected_calls += 1
        self.ended.set()

    def _on_event(self, event: Any) -> None:
        if event.kind == ev.CALL_ENDED:
            with self._lock:
                self.ended_events += 1
        elif event.kind == ev.RECORDING_SAVED:
            self.recordings.append(event.data.get("path", ""))
            self.saved.set()

    def assert_ended_once(self, timeout: float = 5.0) -> None:
        assert self.ended.wait(timeout), "the session never reported the end of the call"
        assert self.saved.wait(timeout), "the recording was not flushed (no recording_saved event)"
        assert self.ended_events == 1, f"CALL_ENDED reported {self.ended_events} times"
        assert self.disconnected_calls == 1, f"on_disconnected called {self.disconnected_calls} times"
