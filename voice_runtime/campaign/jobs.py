"""What a campaign is made of, with no I/O: call jobs, calling-hours windows, outcomes and the retry policy.

Kept free of Redis so the rules (when may we call, what happens after a busy signal) are plain functions a
test can check at any clock time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from voice_runtime.errors import ConfigError

__all__ = [
    "CallJob",
    "Outcome",
    "RetryPolicy",
    "TimeWindow",
    "REACHED",
    "RETRYABLE_BY_DEFAULT",
]


class Outcome:
    """How one dial attempt ended (strings, stored as-is in Redis and results)."""

    HUMAN = "human"  # answered, the flow ran
    MACHINE = "machine"  # answered by a machine (AMD); what happens next is the flow's choice
    BUSY = "busy"
    NO_ANSWER = "no-answer"
    FAILED = "failed"  # the carrier could not place the call (bad number, rejected): never retried
    CANCELED = "canceled"
    INTERRUPTED = "interrupted"  # answered, but the worker that ran the flow died mid-call
    ERROR = "error"  # answered, and the flow raised


#: Outcomes that count as "reached": the job is done, not failed, even on the first attempt.
REACHED = frozenset({Outcome.HUMAN, Outcome.MACHINE})
#: ``canceled`` is retried too: it is what a call gets when it was still ringing as its worker died (the
#: reconciler cancels it), so nobody was reached.
RETRYABLE_BY_DEFAULT = {Outcome.BUSY: 60.0, Outcome.NO_ANSWER: 300.0, Outcome.CANCELED: 60.0}
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True)
class TimeWindow:
    """Calling hours in the callee's time zone, e.g. ``TimeWindow("09:00", "20:00", "America/New_York")``.

    ``end`` is exclusive. ``end < start`` spans midnight. ``days`` are ISO weekdays (1 = Monday) on which the
    window *opens*; empty means every day.
    """

    start: str
    end: str
    tz: str = "UTC"
    days: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for value in (self.start, self.end):
            if not _HHMM.match(value):
                raise ConfigError(f"time window bound {value!r} must be HH:MM (24 h)")
        if self.start == self.end:
            raise ConfigError("time window start and end must differ")
        try:
            ZoneInfo(self.tz)
        except Exception as exc:
            raise ConfigError(f"unknown time zone {self.tz!r}") from exc
        if any(d not in range(1, 8) for d in self.days):
            raise ConfigError("time window days are ISO weekdays 1..7")

    @staticmethod
    def _parse(value: str) -> time:
        hours, minutes = value.split(":")
        return time(int(hours), int(minutes))

    def _opening(self, day: datetime) -> tuple[datetime, datetime]:
        start, end = self._parse(self.start), self._parse(self.end)
        opens = day.replace(hour=start.hour, minute=start.minute, second=0, microsecond=0)
        closes = day.replace(hour=end.hour, minute=end.minute, second=0, microsecond=0)
        if closes <= opens:
            closes += timedelta(days=1)
        return opens, closes

    def next_open(self, now: datetime) -> datetime | None:
        """None if calling is allowed at ``now`` (aware); else the next moment it is (aware, UTC)."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        local = now.astimezone(ZoneInfo(self.tz))
        for offset in range(-1, 9):  # yesterday's window may still be open (spans midnight)
            day = (local + timedelta(days=offset)).replace(tzinfo=None)
            opens, closes = self._opening(day)
            opens_at = opens.replace(tzinfo=ZoneInfo(self.tz))
            closes_at = closes.replace(tzinfo=ZoneInfo(self.tz))
            if self.days and opens.isoweekday() not in self.days:
                continue
            if opens_at <= local < closes_at:
                return None
            if opens_at > local:
                return opens_at.astimezone(timezone.utc)
        raise ConfigError("time window never opens")

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "tz": self.tz, "days": list(self.days)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TimeWindow:
        return cls(str(data["start"]), str(data["end"]), str(data.get("tz", "UTC")), tuple(int(d) for d in data.get("days", ())))


@dataclass
class CallJob:
    """One number to call with one flow. ``job_id`` is unique in its campaign (default: assigned on add)."""

    number: str
    flow: str
    params: dict[str, Any] = field(default_factory=dict)
    window: TimeWindow | None = None
    job_id: str = ""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"\+?[0-9A-Za-z:@._-]{3,64}", self.number or ""):
            raise ConfigError(f"job number {self.number!r} is not a phone number or SIP address")
        if not self.flow:
            raise ConfigError("a job needs a flow name")
        if self.job_id and not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", self.job_id):
            raise ConfigError(f"job id {self.job_id!r}: 1-64 of A-Z a-z 0-9 _ . : -")

    def to_fields(self) -> dict[str, str]:
        """The job's hash fields in Redis (all strings)."""
        return {
            "number": self.number,
            "flow": self.flow,
            "params": json.dumps(self.params, separators=(",", ":")),
            "window": json.dumps(self.window.to_dict()) if self.window else "",
        }

    @classmethod
    def from_fields(cls, job_id: str, data: Mapping[str, str]) -> CallJob:
        window = data.get("window") or ""
        return cls(
            number=data["number"],
            flow=data["flow"],
            params=json.loads(data.get("params") or "{}"),
            window=TimeWindow.from_dict(json.loads(window)) if window else None,
            job_id=job_id,
        )


@dataclass(frozen=True)
class RetryPolicy:
    """Which outcomes are retried, after how long, and how many attempts a job gets in all.

    ``delays`` maps an outcome to its retry delay in seconds; outcomes not in it are final. ``failed`` is
    never retried (the number or account is wrong: calling again would fail again). ``machine`` is retried
    only when the flow asks for it (``CampaignFlow(on_machine="retry")``), after ``machine_delay``.
    """

    max_attempts: int = 3
    delays: Mapping[str, float] = field(default_factory=lambda: dict(RETRYABLE_BY_DEFAULT))
    machine_delay: float = 600.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError("max_attempts must be >= 1")
        if Outcome.FAILED in self.delays:
            raise ConfigError("'failed' is never retried")

    def retry_delay(self, outcome: str, attempts_made: int, *, flow_wants_retry: bool = False) -> float | None:
        """Seconds until the next attempt, or None if this outcome ends the job."""
        if attempts_made >= self.max_attempts:
            return None
        if outcome == Outcome.MACHINE:
            return self.machine_delay if flow_wants_retry else None
        delay = self.delays.get(outcome)
        return None if delay is None else float(delay)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["delays"] = dict(self.delays)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RetryPolicy:
        return cls(int(data["max_attempts"]), dict(data.get("delays", {})), float(data.get("machine_delay", 600.0)))
