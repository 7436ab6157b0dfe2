"""One statistics object per call, kept after the call ends and handed to the server's ``on_call_ended`` hook.

Before this, counters lived in five places and the connection's were thrown away when its socket closed.
Now a call's numbers live in one :class:`CallStats`: the session's own counters (drops, barge-ins, back-pressure
waits), the wire's counters (protocol errors by reason, refused streams, clear acks, sequence gaps) merged in
by the connection as it finishes, and the lifecycle's timestamps on the monotonic clock every event uses.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from voice_runtime.lifecycle import EndReason

__all__ = ["CallStats"]


@dataclass
class CallStats:
    """Counters and lifecycle times of one call (``time.monotonic()`` seconds)."""

    created_at: float
    started_at: float | None = None  # the carrier's ``start`` arrived
    ended_at: float | None = None
    end_reason: EndReason | None = None
    counters: Counter[str] = field(default_factory=Counter)  # the session's own (``session.stats``)
    wire: Counter[str] = field(default_factory=Counter)  # the carrier socket's, merged when it closes
    report: Any = None  # the call's CallReport (voice_runtime.metrics), set before on_call_ended runs

    @property
    def duration(self) -> float | None:
        """Seconds from stream start to end (None until both happened)."""
        if self.started_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.started_at

    def as_dict(self) -> dict[str, Any]:
        return {
            "duration": None if self.duration is None else round(self.duration, 3),
            "end_reason": None if self.end_reason is None else str(self.end_reason),
            "counters": dict(self.counters),
            "wire": dict(self.wire),
        }
