"""The one deadline loop every blocking intent uses.

Before this module the same hand-written ``while not ready: remaining = deadline - now; cond.wait(...)`` loop
appeared five times, each with its own small differences in how it noticed the end of the call. Now each
wait says only *what* it waits for, and this loop decides — identically for every wait — whether it is
satisfied, whether the call ended first (:class:`~voice_runtime.errors.CallHangupError` or whatever the
caller's ``on_end`` returns) or whether the deadline passed (:class:`~voice_runtime.errors.CallTimeoutError`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

__all__ = ["Deadline", "wait_until"]


class Deadline:
    """A point in monotonic time; ``None`` timeout means never."""

    __slots__ = ("at",)

    def __init__(self, timeout: float | None) -> None:
        self.at = None if timeout is None else time.monotonic() + max(0.0, timeout)

    def remaining(self) -> float | None:
        return None if self.at is None else self.at - time.monotonic()

    @property
    def expired(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at


def wait_until(
    cond: threading.Condition,
    ready: Callable[[], T | None],
    *,
    timeout: float | None,
    ended: Callable[[], bool],
    on_end: Callable[[], BaseException],
    on_timeout: Callable[[], BaseException],
) -> T:
    """Block on ``cond`` (held by the caller) until ``ready()`` returns something other than None.

    ``ready`` is checked before ``ended``, so a result that arrived just before the call ended (a last
    utterance, a last key press) is still delivered. Raises ``on_end()`` once ``ended()`` is true and
    ``on_timeout()`` at the deadline.
    """
    deadline = Deadline(timeout)
    while True:
        value = ready()
        if value is not None:
            return value
        if ended():
            raise on_end()
        remaining = deadline.remaining()
        if remaining is not None and remaining <= 0:
            raise on_timeout()
        cond.wait(remaining)
