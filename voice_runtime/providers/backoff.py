"""The one reconnect delay policy every streaming provider uses: bounded exponential backoff with jitter.

A provider socket that drops mid-call should come back fast (the caller is talking), but a provider that is
down must not be hammered by hundreds of calls in lockstep. So: ``base · 2ⁿ`` capped at ``maximum``, with
``jitter`` spreading the retries of many calls; ``immediate_first`` lets the first retry go at once (a single
dropped socket is the common case).
"""

from __future__ import annotations

import random

__all__ = ["backoff_delay"]


def backoff_delay(
    attempt: int, *, base: float, maximum: float, jitter: float = 0.2, immediate_first: bool = False, symmetric: bool = True
) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based).

    ``symmetric`` jitter spreads the delay over ``±jitter``; otherwise it only shortens it (``-jitter..0``),
    for callers whose maximum must hold exactly.
    """
    if immediate_first:
        if attempt <= 0:
            return 0.0
        attempt -= 1
    delay = min(maximum, base * 2**attempt)
    spread = random.uniform(1.0 - jitter, 1.0 + jitter) if symmetric else 1.0 - jitter * random.random()
    return delay * spread
