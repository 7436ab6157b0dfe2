"""A per-connection inbound rate budget (sans-I/O): past it drop and count, well past it close.

Why: every call on a server shares one event loop. A carrier sends 50 media messages a second (one 20 ms frame
each) plus a handful of marks and DTMF. A hostile or broken peer can send 70,000 valid media frames a second
(about 1,400x real time), or a million binary frames: the loop parses them all, and every *other* call's
marks and audio wait behind them (measured: a good call's mark round-trip p99 went from 2.3 ms to 161 ms
under one such socket). The budget bounds what one socket can cost before any parsing:

* **messages** — a token bucket of ``message_rate`` per second (default 5x a carrier's ~50/s plus events),
  checked before a message is parsed, so a flood of junk costs a counter increment each;
* **bytes** — a token bucket of ``byte_rate`` per second, also before parsing (a 900 KB message costs its size);
* **media** — audio seconds per wall second (``media_factor``, default 5x real time), after parsing;
* **events** — non-media messages (marks, DTMF, acks) per second (``event_rate``), after parsing.

Over a bucket: the message is dropped and counted (``DROP``). A message the connection rejects for what it is
(binary, oversized, unknown, out of order: :meth:`InboundBudget.misbehaved`) is a drop too. Well past it — more
than ``close_after_drops`` drops within ``close_window`` seconds — the connection is closed with 1008
(``CLOSE``): a real carrier never drops at all (the bursts below cover its catch-ups), so 100 drops in 2 s is
a peer that is not one, and every message a flooder gets in before its close costs the other calls on the loop.

Bursts are allowed up to each bucket's capacity: a carrier catching up after a network stall delivers
seconds of frames at once. The **media** burst is *earned*, not granted: the bucket starts (when the socket is
served, before the carrier can have sent ``start``) with only ``media_start_seconds`` (1 s) of audio and fills at ``media_factor`` (5x) real time up to
``media_burst_seconds`` (10 s). Why: a carrier cannot send audio from before its stream started, so at any
moment it has sent at most the elapsed time (plus jitter) — the bucket stays ``1 + 4t`` seconds ahead of it
and holds the full 10 s catch-up after its first ~2.3 s. A flooder, which hits at once, gets 1 s (50 frames)
instead of 10 s (500 frames accepted, parsed and fed to STT before its first drop: measured as the start-up
cost left under a media flood in ``benchmarks/flood_bench.py``).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum


class Verdict(IntEnum):
    ACCEPT = 0
    DROP = 1
    CLOSE = 2


@dataclass(frozen=True)
class BudgetConfig:
    """Defaults: 5x what a carrier sends, with bursts of several seconds."""

    message_rate: float = 300.0  # messages/s (carrier: ~50 media + a few events)
    message_burst: float = 1500.0
    byte_rate: float = 256_000.0  # bytes/s (carrier: ~19 KB/s Twilio μ-law, ~50 KB/s Plivo L16 16 kHz)
    byte_burst: float = 1_280_000.0
    media_factor: float = 5.0  # audio seconds accepted per wall-clock second
    media_burst_seconds: float = 10.0  # a stall's catch-up, once earned (see the module docstring)
    media_start_seconds: float = 1.0  # the media bucket's tokens when the stream starts
    event_rate: float = 50.0  # non-media events/s
    event_burst: float = 200.0
    # Drops within close_window that end the call: past the bursts above a real carrier never drops at all, and
    # every message a flooder gets in costs the other calls on the loop (2000 and 500 measured worse in
    # flood_bench than 100).
    close_after_drops: int = 100
    close_window: float = 2.0


_ACCEPT = Verdict.ACCEPT


class _Bucket:
    """A token bucket kept as the instant it will be full again (the "virtual scheduling" form of GCRA).

    Why this form: it is the same bucket (``rate`` tokens a second up to ``capacity``) but a take is one clock
    comparison and one add, with no refill arithmetic and no cap to apply. Tokens at ``now`` are
    ``capacity - max(0, full_at - now) * rate``; taking ``cost`` moves ``full_at`` by ``cost / rate``, and is
    refused when that would put it more than ``capacity / rate`` ahead of now (fewer than ``cost`` tokens left).

    This class holds a bucket's two constants; the moving part, ``full_at``, is a slot of
    :class:`InboundBudget` (see there why).
    """

    __slots__ = ("per_token", "window")

    def __init__(self, rate: float, capacity: float) -> None:
        self.per_token = 1.0 / rate  # seconds one token takes to come back
        # A hair over capacity / rate: float sums of 0.02 s frames must not lose the last one of a burst.
        self.window = (capacity + 1e-9) / rate


class _Rates:
    """The four buckets' constants for one :class:`BudgetConfig`, made once and shared by every connection."""

    __slots__ = ("messages", "bytes", "media", "events")

    def __init__(self, config: BudgetConfig) -> None:
        self.messages = _Bucket(config.message_rate, config.message_burst)
        self.bytes = _Bucket(config.byte_rate, config.byte_burst)
        self.media = _Bucket(config.media_factor, config.media_burst_seconds)
        self.events = _Bucket(config.event_rate, config.event_burst)


_rates_by_config: dict[BudgetConfig, _Rates] = {}


def _rates(config: BudgetConfig) -> _Rates:
    rates = _rates_by_config.get(config)
    if rates is None:
        if len(_rates_by_config) > 64:  # configs are few; a program that makes them per call must not grow this
            _rates_by_config.clear()
        rates = _rates_by_config[config] = _Rates(config)
    return rates


class InboundBudget:
    """One per connection. ``before_parse(size)`` per message, then ``media(seconds)``, ``event()`` or
    ``misbehaved(reason)``.

    Why the buckets' state is four slots here and their constants one object shared by every connection with
    the same config: this runs for every message of every call, and on a server with hundreds of calls a
    call's state is out of the CPU caches by its next frame (20 ms later). What one message touches is then
    most of what it costs: one object of slots and the floats it holds, instead of four objects, their
    attribute arrays and twelve floats of their own. (``benchmarks/README.md``, stop 30, has the figures.)
    """

    __slots__ = (
        "config", "_clock", "_rates", "_messages_full_at", "_bytes_full_at", "_media_full_at", "_events_full_at",
        "_parsed_at", "_drops", "dropped", "last_drop_reason",
    )

    def __init__(self, config: BudgetConfig | None = None, *, clock: Callable[[], float] | None = None) -> None:
        self.config = config = config or BudgetConfig()
        self._clock = clock or time.monotonic
        now = self._clock()
        self._rates = _rates(config)
        self._messages_full_at = now  # full: a bucket is full when full_at is not after now
        self._bytes_full_at = now
        # The media bucket starts with media_start_seconds of its media_burst_seconds (the module docstring).
        self._media_full_at = now + max(0.0, config.media_burst_seconds - config.media_start_seconds) / config.media_factor
        self._events_full_at = now
        self._drops: deque[float] = deque()
        self.dropped = 0
        self.last_drop_reason = ""
        self._parsed_at = now  # the instant of the last before_parse (media_parsed's clock)

    def before_parse(self, size: int) -> Verdict:
        """The message and byte buckets for one message of ``size`` bytes (the take :class:`_Bucket` describes,
        twice, inlined: this runs before every message of every call is parsed). A message over the message rate
        leaves the byte bucket alone; one within it but over the byte rate has used its message token."""
        now = self._parsed_at = self._clock()
        rates = self._rates
        bucket = rates.messages
        full_at = self._messages_full_at
        if full_at < now:
            full_at = now
        full_at += bucket.per_token
        if full_at - now > bucket.window:
            return self._drop(now, "message_rate")
        self._messages_full_at = full_at
        bucket = rates.bytes
        full_at = self._bytes_full_at
        if full_at < now:
            full_at = now
        full_at += size * bucket.per_token
        if full_at - now > bucket.window:
            return self._drop(now, "byte_rate")
        self._bytes_full_at = full_at
        return _ACCEPT

    def media_parsed(self, audio_seconds: float) -> Verdict:
        """:meth:`media` for the message just checked by :meth:`before_parse`, at that check's instant: one clock
        read per media frame instead of two (microseconds apart, so the buckets see the same thing)."""
        now = self._parsed_at
        bucket = self._rates.media
        full_at = self._media_full_at
        if full_at < now:
            full_at = now
        full_at += audio_seconds * bucket.per_token
        if full_at - now > bucket.window:
            return self._drop(now, "media_rate")
        self._media_full_at = full_at
        return _ACCEPT

    def media(self, audio_seconds: float) -> Verdict:
        self._parsed_at = self._clock()
        return self.media_parsed(audio_seconds)

    def event(self) -> Verdict:
        now = self._clock()  # marks, DTMF and acks: a few a second, so the take is written plainly here
        bucket = self._rates.events
        full_at = max(self._events_full_at, now) + bucket.per_token
        if full_at - now > bucket.window:
            return self._drop(now, "event_rate")
        self._events_full_at = full_at
        return _ACCEPT

    def misbehaved(self, reason: str) -> Verdict:
        """A message rejected for what it is (binary, oversized, unknown, out of order): a drop like any other.

        Why: those floods passed every bucket (a binary frame is one message of a few bytes) and so were closed
        only by ``max_protocol_errors`` (1,000), ten times later than a rate flood.
        """
        return self._drop(self._clock(), reason)

    def _drop(self, now: float, reason: str) -> Verdict:
        self.dropped += 1
        self.last_drop_reason = reason
        drops = self._drops
        drops.append(now)
        horizon = now - self.config.close_window
        while drops and drops[0] < horizon:
            drops.popleft()
        if len(drops) > self.config.close_after_drops:
            return Verdict.CLOSE
        return Verdict.DROP


__all__ = ["BudgetConfig", "InboundBudget", "Verdict"]
