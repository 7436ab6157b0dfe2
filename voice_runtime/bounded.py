"""The one drop-oldest policy for asyncio queues of live audio.

For a live call fresh audio matters more than old audio: when a consumer (an STT, a raw-audio reader, one
side of an ``SttTee``) falls behind, the *oldest* frame is dropped and counted, and the producer — the event
loop serving the carrier socket — never blocks. Every such queue in the runtime uses this helper.
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

T = TypeVar("T")

__all__ = ["put_drop_oldest"]


def put_drop_oldest(queue: asyncio.Queue[T], item: T) -> bool:
    """Put ``item`` without blocking; when full, drop the oldest first. Returns True if something was dropped."""
    dropped = False
    while True:
        try:
            queue.put_nowait(item)
            return dropped
        except asyncio.QueueFull:
            try:
                queue.get_nowait()
            except asyncio.QueueEmpty:  # pragma: no cover - a maxsize-0 queue is never full
                pass
            dropped = True
