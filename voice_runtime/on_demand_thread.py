"""A thread that runs queued jobs in order while there are any: the server's end-of-call hooks, the call logs.

Why the server's end-of-call hooks (``on_call_report``, ``on_call_ended``) run on one of these, in order:

Why not on the event loop, where the call ends: every live call on the server shares that loop, and what users
do in an end hook is I/O — upload the recording and the call log, write a CRM row, post to a webhook. One
synchronous 300 ms upload there would stall every other call's audio by 300 ms. Why one thread and not one per
call: hooks then run in the order calls ended, one at a time (no locking in user code), and a burst of 500
ended calls at a drain does not make 500 threads. A slow hook delays later hooks, never media; a backlog is
logged.

Before a call's hooks run, its JSON-lines call log is waited for (it is finished by the call-log thread), so an
``on_call_report`` hook can upload a complete file. ``on_call_started`` stays on the loop: it is for setup that
must happen before the call's first audio (``apply_limits``, an inline audio listener) and must be quick.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from voice_runtime.thread_starter import start_soon

log = logging.getLogger(__name__)

#: Jobs waiting to run above which a warning says the jobs are slower than they arrive.
BACKLOG_WARNING = 100


class OnDemandThread:
    """A daemon thread, started on demand, that runs submitted callables in FIFO order; never raises into callers."""

    def __init__(self, name: str, what: str = "jobs") -> None:
        self.what = what  # for the log lines: "end-of-call hooks", "call log writes"
        self.name = name
        self._queue: deque[Callable[[], None]] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._busy = False
        self._warned_at = 0
        self.ran = 0
        self.failed = 0

    def submit(self, job: Callable[[], None]) -> None:
        with self._cond:
            self._queue.append(job)
            backlog = len(self._queue)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                start_soon(self._thread)  # submit() runs on the event loop: never wait for the thread to run
            self._cond.notify()
        if backlog >= BACKLOG_WARNING and backlog >= 2 * self._warned_at:
            self._warned_at = backlog
            log.warning("%d %s are waiting on thread %s: they are slower than they arrive", backlog, self.what, self.name)

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every hook submitted so far has run; False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def _run(self) -> None:
        # The thread lives only while there is work: it exits when the queue is empty (the next submit starts
        # another), so a stopped server leaves no thread behind and an idle one costs none.
        while True:
            with self._cond:
                if not self._queue:
                    self._busy = False
                    self._thread = None
                    self._cond.notify_all()  # drain() waiters
                    return
                self._busy = True
                job = self._queue.popleft()
            try:
                job()
                self.ran += 1
            except Exception:  # one job's bug (a user hook's) must not stop every later one
                self.failed += 1
                log.exception("one of the %s failed", self.what)


def end_hook_runner() -> OnDemandThread:
    """The server's end-of-call hook thread (one per server)."""
    return OnDemandThread("call-end-hooks", "end-of-call hooks")


__all__ = ["OnDemandThread", "end_hook_runner"]
