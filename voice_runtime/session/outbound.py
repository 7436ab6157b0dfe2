"""The call's outbound queue: agent audio and marks, in order, with marks resolved exactly once.

Audio and marks share one deque because a mark means "everything queued before me has been heard": keeping
them in one order makes that true by construction. The queue is bounded in *bytes of audio* (seconds of
speech); a producer that would exceed the bound blocks — back-pressure on the TTS — until the transport
drains, a clear empties the queue, or the call ends.

Every mark resolves once: ``PLAYED`` on the carrier's echo, ``CLEARED`` when a clear drops it (locally, or
at the carrier when the clear goes out while it is pending), ``HUNG_UP`` when the call ends. The carrier's
late echo of a cleared mark (Twilio sends them) is recognised and counted, never matched to a new mark.

All methods run under the session's condition (the caller holds it), so the queue itself has no lock: one
lock per call, one place that notifies.
"""

from __future__ import annotations

import time
from collections import deque

from voice_runtime.marks import Mark, MarkOutcome

__all__ = ["OutboundQueue"]


class OutboundQueue:
    """Not thread-safe on its own: every call is made with the session's condition held.

    Slots, because the session's inline send reads ``pump_idle`` and ``items`` once per frame of every call (the
    object's cache lines are cold by then: see ``VoiceSession.__slots__``).
    """

    __slots__ = (
        "limit_bytes", "items", "buffered_bytes", "pump_idle", "in_flight", "_cleared_wire_names", "blocked_producers",
    )

    def __init__(self, max_seconds: float) -> None:
        self.limit_bytes = int(max_seconds * 8000)
        #: Audio chunks and marks in order. Read-only outside this class (the session's fast path tests it for
        #: emptiness without a call); only the methods below change it.
        self.items: deque[bytes | Mark] = deque()
        self.buffered_bytes = 0
        self.pump_idle = True  # the transport found the queue empty; the next producer must wake it
        self.in_flight: dict[str, Mark] = {}  # marks on the wire, by wire name
        # Wire names of marks resolved CLEARED while at the carrier: Twilio still echoes them after the clear,
        # and those echoes are expected, not unknown. Played marks need no memory (their echo already came).
        self._cleared_wire_names: deque[str] = deque(maxlen=256)
        self.blocked_producers = 0

    # ------------------------------------------------------------------ producer side (flow threads)
    def has_room(self, size: int) -> bool:
        """A chunk always fits in an empty queue, so one oversized chunk cannot deadlock its producer."""
        return self.buffered_bytes + size <= self.limit_bytes or self.buffered_bytes == 0

    def push_audio(self, data: bytes) -> bool:
        """Append audio; returns True if the (idle) transport must be woken."""
        self.items.append(data)
        self.buffered_bytes += len(data)
        return self._claim_wake()

    def push_mark(self, mark: Mark) -> bool:
        self.items.append(mark)
        return self._claim_wake()

    def _claim_wake(self) -> bool:
        if self.pump_idle:
            self.pump_idle = False
            return True
        return False

    @property
    def pending(self) -> bool:
        return bool(self.items)

    # ------------------------------------------------------------------ transport side (event loop)
    def take(self, max_bytes: int) -> tuple[bytes, Mark | None]:
        """Up to ``max_bytes`` of audio, or the mark at the head, or ``(b"", None)`` when empty (now idle)."""
        items = self.items
        if not items:
            self.pump_idle = True
            return b"", None
        head = items[0]
        if isinstance(head, Mark):
            items.popleft()
            head.sent_at = time.monotonic()
            self.in_flight[head.wire_name] = head
            return b"", head
        parts: list[bytes] = []
        size = 0
        while items and size < max_bytes:
            chunk = items[0]
            if isinstance(chunk, Mark):
                break
            room = max_bytes - size
            if len(chunk) <= room:
                items.popleft()
                parts.append(chunk)
                size += len(chunk)
            else:
                parts.append(chunk[:room])
                items[0] = chunk[room:]
                size += room
        self.buffered_bytes -= size
        return (parts[0] if len(parts) == 1 else b"".join(parts)), None

    def echoed(self, wire_name: str) -> tuple[Mark | None, bool]:
        """The carrier echoed ``wire_name``: ``(mark, False)`` if it was pending (now PLAYED), else
        ``(None, expected)`` where ``expected`` says it is a late echo of a cleared mark."""
        mark = self.in_flight.pop(wire_name, None)
        if mark is None:
            return None, wire_name in self._cleared_wire_names
        mark.resolve(MarkOutcome.PLAYED)
        return mark, False

    # ------------------------------------------------------------------ clears and the end
    def drop_local(self) -> list[Mark]:
        """Drop every queued item (a clear); the marks among them resolve CLEARED and are returned."""
        marks = [item for item in self.items if isinstance(item, Mark)]
        self.items.clear()
        self.buffered_bytes = 0
        for mark in marks:
            mark.resolve(MarkOutcome.CLEARED)
        return marks

    def clear_at_carrier(self) -> list[Mark]:
        """The clear is on the wire: marks the carrier still held resolve CLEARED."""
        marks = list(self.in_flight.values())
        for mark in marks:
            mark.resolve(MarkOutcome.CLEARED)
            self._cleared_wire_names.append(mark.wire_name)
        self.in_flight.clear()
        return marks

    def hang_up(self) -> list[Mark]:
        """The call ended: every mark, queued or at the carrier, resolves HUNG_UP; the queue empties."""
        marks = list(self.in_flight.values())
        marks.extend(item for item in self.items if isinstance(item, Mark))
        self.in_flight.clear()
        self.items.clear()
        self.buffered_bytes = 0
        for mark in marks:
            mark.resolve(MarkOutcome.HUNG_UP)
        return marks
