"""Bounded inboxes for what the call delivers to the flow: committed utterances and DTMF keys.

Each inbox keeps what arrived and was not consumed yet (so an answer given during a prompt is not lost),
drops the *oldest* item when full (counted by the caller), and admits **one waiting thread at a time**: two
threads calling ``listen()`` at once would race for the same utterance, so the second gets a
:class:`~voice_runtime.errors.ConcurrencyError` at once, as python-websockets does for two concurrent
``recv()`` calls.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

from voice_runtime.errors import ConcurrencyError

T = TypeVar("T")

__all__ = ["Inbox"]


class Inbox(Generic[T]):
    """Not thread-safe on its own: used with the session's condition held."""

    def __init__(self, name: str, maxlen: int) -> None:
        self.name = name
        self.maxlen = maxlen
        self._items: deque[T] = deque()
        self._waiting = False

    def put(self, item: T) -> bool:
        """Append ``item``; returns True if the oldest item had to be dropped to make room."""
        dropped = len(self._items) >= self.maxlen
        if dropped:
            self._items.popleft()
        self._items.append(item)
        return dropped

    def pop(self) -> T | None:
        return self._items.popleft() if self._items else None

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)

    def claim_waiter(self) -> None:
        """Mark the calling thread as this inbox's one waiter (release with :meth:`release_waiter`)."""
        if self._waiting:
            raise ConcurrencyError(f"another thread is already waiting on {self.name}; only one may wait at a time")
        self._waiting = True

    def release_waiter(self) -> None:
        self._waiting = False
