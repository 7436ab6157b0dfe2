"""Remember what was seen, once, for a while: replay protection that cannot grow without bound.

Used for Plivo signature nonces (a captured signed request is accepted once) and for the call ids admitted on
the tokenless ``/stream`` route (one session per CallSid). A dependency-free leaf module, so both the
transports and the server can use it without import circles.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Protocol

__all__ = ["NonceCache", "ReplayCache"]


class ReplayCache(Protocol):
    """What a replay guard asks: has this nonce (or call id) been seen? :class:`NonceCache` answers for one
    process; :class:`voice_runtime.fleet_replay.RedisNonceCache` for every worker sharing a Redis."""

    def first_use(self, nonce: str) -> bool:
        """Record ``nonce``; True the first time it is seen within its window, False for a replay."""
        ...


class NonceCache:
    """Remembers nonces for ``ttl`` seconds (at most ``max_size`` of them): each is accepted once.

    When the cache is full the oldest nonce is forgotten early (counted in ``stats["evicted_early"]``): a
    bounded cache can only promise "once within the window it can hold", and it says when it could not.
    Thread-safe (webhooks run on the loop, upgrade validators too, but tests call it from anywhere).
    """

    def __init__(self, *, ttl: float = 600.0, max_size: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_size = max_size
        self.stats: Counter[str] = Counter()
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()  # nonce -> expiry, oldest first
        self._lock = threading.Lock()

    def first_use(self, nonce: str) -> bool:
        """Record ``nonce``; True the first time it is seen within its window, False for a replay."""
        now = self._clock()
        with self._lock:
            while self._seen:
                oldest, expiry = next(iter(self._seen.items()))
                if expiry > now:
                    break
                del self._seen[oldest]
            if nonce in self._seen:
                self.stats["replayed"] += 1
                return False
            while len(self._seen) >= self.max_size:
                self._seen.popitem(last=False)
                self.stats["evicted_early"] += 1
            self._seen[nonce] = now + self.ttl
            self.stats["accepted"] += 1
            return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)
