"""Playback marks: the only way to know what the caller has actually heard.

A mark is queued after some agent audio. The carrier echoes it once the audio before it has played. But a
``clear`` changes the meaning of echoes: Twilio echoes every pending mark on clear (an echo that looks just
like "played"), Plivo never acks checkpoints pending at ``clearAudio``. So the outcome is decided by the
runtime, not read off the wire: marks outstanding when a clear goes out are resolved as ``CLEARED`` at that
moment, and any later echo for them is ignored.
"""

from __future__ import annotations

import enum
import itertools
import os
import threading
import time
from collections.abc import Callable

from voice_runtime.errors import CallTimeoutError


class MarkOutcome(str, enum.Enum):
    """How a mark ended. ``str`` subclass so it logs and compares as plain text."""

    PLAYED = "played"  # the audio before it was played to the caller
    CLEARED = "cleared"  # the audio before it was dropped by a clear (barge-in) and never fully heard
    HUNG_UP = "hung_up"  # the call ended first

    def __str__(self) -> str:
        return self.value


_counter = itertools.count(int.from_bytes(os.urandom(4), "big"))


def make_wire_name(label: str) -> str:
    """``<label>__<8 hex>``: unique per process for 2**32 marks, so an echo never meets the wrong waiter.

    The shape is 0.1.x's (NC-236), which hand-written transports and tests match; a counter from a random
    start replaces its random suffix, so two live marks can never collide.
    """
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)[:40] or "mark"
    return f"{safe}__{next(_counter) & 0xFFFFFFFF:08x}"


class Mark:
    """A handle on one mark. ``wait()`` blocks the calling (flow) thread until it resolves."""

    __slots__ = ("label", "wire_name", "created_at", "sent_at", "resolved_at", "_outcome", "_done", "_callbacks", "call_id")

    def __init__(self, label: str, call_id: str | None = None) -> None:
        self.label = label
        self.wire_name = make_wire_name(label)
        self.created_at = time.monotonic()
        self.sent_at: float | None = None
        self.resolved_at: float | None = None
        self.call_id = call_id
        self._outcome: MarkOutcome | None = None
        self._done = threading.Event()
        self._callbacks: list[Callable[[Mark], None]] = []

    @property
    def outcome(self) -> MarkOutcome | None:
        return self._outcome

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def resolve(self, outcome: MarkOutcome) -> bool:
        """Settle the mark once; later calls are ignored. Returns True if this call settled it."""
        if self._outcome is not None:
            return False
        self._outcome = outcome
        self.resolved_at = time.monotonic()
        self._done.set()
        for callback in self._callbacks:
            callback(self)
        return True

    def add_done_callback(self, callback: Callable[[Mark], None]) -> None:
        """Run ``callback(mark)`` when resolved (immediately if already resolved)."""
        if self._outcome is not None:
            callback(self)
        else:
            self._callbacks.append(callback)

    def wait(self, timeout: float | None = 10.0) -> MarkOutcome:
        """Block until played, cleared or hung up. Raises :class:`CallTimeoutError` at the deadline."""
        if not self._done.wait(timeout):
            raise CallTimeoutError(f"mark {self.label!r} not echoed within {timeout}s", call_id=self.call_id)
        assert self._outcome is not None
        return self._outcome

    def __repr__(self) -> str:
        return f"Mark({self.label!r}, {self.wire_name!r}, outcome={self._outcome})"
