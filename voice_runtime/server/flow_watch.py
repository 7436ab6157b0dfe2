"""Flows that outlive their call: noticed, logged with the call id, counted.

A flow is ordinary blocking Python. When its call ends, every blocking session call raises
:class:`~voice_runtime.errors.CallHangupError`, so a flow that uses the session returns promptly. A flow that
ignores the session (a ``while True`` over its own I/O, a blocked third-party client) keeps its thread — and
whatever it holds — forever, and nothing else would say so. :class:`FlowWatch` watches each flow against its
call: once the call has ended, the flow gets ``grace`` seconds; still running after that, it is logged once
(WARNING, with its call id) and counted in ``outlived``. A drain reports the ones still running
(:meth:`FlowWatch.alive`) and says so plainly.

One watcher thread serves every call and exists only while some ended call's flow is still running: it waits
on a condition until the earliest deadline or until a flow returns (event-driven, not polling), and exits
when nothing is left to watch.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from voice_runtime.call_events import CALL_ENDED

log = logging.getLogger(__name__)

__all__ = ["FlowWatch"]


class _Watched:
    __slots__ = ("call_id", "finished")

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        self.finished = False


class FlowWatch:
    """Per server. ``wrap(session, flow)`` when a flow starts; the rest is automatic."""

    def __init__(self, grace: float = 10.0) -> None:
        self.grace = grace
        self.stats: Counter[str] = Counter()
        self.outlived_calls: list[str] = []  # call ids (most recent 100) whose flow outlived the grace period
        self._running: set[_Watched] = set()
        self._due: list[tuple[float, int, _Watched]] = []
        self._seq = 0
        self._cond = threading.Condition()
        self._watcher: threading.Thread | None = None

    def wrap(self, session: Any, flow: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """``flow`` as run under watch: its return (or exception) is noted the moment it happens."""
        entry = _Watched(str(session.call_sid or "?"))
        with self._cond:
            self._running.add(entry)

        def on_event(event: Any) -> None:
            if event.kind == CALL_ENDED:
                entry.call_id = str(session.call_sid or event.call_id or entry.call_id)
                self._call_ended(entry)

        session.add_event_listener(on_event)

        def watched(s: Any) -> Any:
            try:
                return flow(s)
            finally:
                with self._cond:
                    entry.finished = True
                    self._running.discard(entry)
                    self._cond.notify_all()

        return watched

    def _call_ended(self, entry: _Watched) -> None:
        with self._cond:
            if entry.finished:
                return
            self._seq += 1
            heapq.heappush(self._due, (time.monotonic() + self.grace, self._seq, entry))
            if self._watcher is None:
                self._watcher = threading.Thread(target=self._run, name="flow-watch", daemon=True)
                self._watcher.start()
            self._cond.notify_all()

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._due and self._due[0][2].finished:
                    heapq.heappop(self._due)
                if not self._due:
                    self._watcher = None
                    return
                due, _, entry = self._due[0]
                remaining = due - time.monotonic()
                if remaining > 0:
                    self._cond.wait(remaining)  # woken early when any flow returns
                    continue
                heapq.heappop(self._due)
                self.stats["outlived"] += 1
                self.outlived_calls = (self.outlived_calls + [entry.call_id])[-100:]
                self._cond.notify_all()  # wake wait_outlived()
                log.warning(
                    "flow for call %s is still running %.1fs after its call ended (it ignores hangup; its thread "
                    "and resources stay until it returns)", entry.call_id, self.grace
                )

    def wait_outlived(self, count: int, timeout: float) -> bool:
        """Block until ``count`` flows have outlived their calls (tests, health checks); False at the timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self.stats["outlived"] >= count, timeout)

    @property
    def outlived(self) -> int:
        return self.stats["outlived"]

    def alive(self) -> list[str]:
        """Call ids of flows still running (for a drain's report)."""
        with self._cond:
            return sorted(e.call_id for e in self._running)
