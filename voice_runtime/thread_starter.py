"""Start fire-and-forget threads without making the event loop wait for them to be scheduled.

Why: ``Thread.start()`` blocks its caller until the new thread has run — it needs a CPU and the GIL first. On
the shared 2-core machine, with a flooder and a good call busy, ``benchmarks/flood_bench.py`` measured 2–8 ms
per start on the server's event loop: a flooder's call end starts a provider-close thread and a call-log
thread, and every other call's marks and audio waited those milliseconds. Threads nobody joins (started at a
call's end) are handed to one starter thread instead: the loop appends to a queue and returns.

The starter lives while there is work and exits after :data:`IDLE` seconds without any (so a stopped server
leaves no thread behind); the first start of a burst pays one blocking start, for the starter itself.
"""

from __future__ import annotations

import logging
import threading
from collections import deque

log = logging.getLogger(__name__)

#: Seconds the starter waits for more work before it exits.
IDLE = 1.0


class ThreadStarter:
    """Starts queued threads, in order, from its own thread (see the module docstring)."""

    def __init__(self, idle: float = IDLE) -> None:
        self.idle = idle
        self._cond = threading.Condition()
        self._queue: deque[threading.Thread] = deque()
        self._starter: threading.Thread | None = None
        self.started = 0

    def start(self, thread: threading.Thread) -> None:
        """Have ``thread`` started soon; never blocks on the new thread being scheduled."""
        starter = None
        with self._cond:
            self._queue.append(thread)
            if self._starter is None:
                starter = self._starter = threading.Thread(target=self._run, name="thread-starter", daemon=True)
            else:
                self._cond.notify()
        if starter is not None:
            starter.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._queue:
                    self._cond.wait(self.idle)
                    if not self._queue:
                        self._starter = None  # the next start() makes a new starter
                        return
                thread = self._queue.popleft()
            try:
                thread.start()
                self.started += 1
            except Exception:  # never raises into callers, and the next thread still starts
                log.exception("could not start thread %s", thread.name)


_STARTER = ThreadStarter()


def start_soon(thread: threading.Thread) -> None:
    """Start a fire-and-forget ``thread`` from the shared starter (it is not running yet when this returns)."""
    _STARTER.start(thread)


__all__ = ["IDLE", "ThreadStarter", "start_soon"]
