"""Campaign rules without Redis: calling-hours windows, the retry policy, job validation."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from voice_runtime.campaign import CallJob, Outcome, RetryPolicy, TimeWindow
from voice_runtime.errors import ConfigError


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def test_window_open_and_next_opening_in_the_callees_time_zone() -> None:
    window = TimeWindow("09:00", "20:00", "America/New_York")
    # 2026-07-01 14:00 UTC = 10:00 EDT: open
    assert window.next_open(utc(2026, 7, 1, 14, 0)) is None
    # 02:00 UTC = 22:00 EDT the evening before: opens at 09:00 EDT = 13:00 UTC
    assert window.next_open(utc(2026, 7, 2, 2, 0)) == utc(2026, 7, 2, 13, 0)
    # the end is exclusive: 20:00 EDT = 00:00 UTC next day
    assert window.next_open(utc(2026, 7, 2, 0, 0)) == utc(2026, 7, 2, 13, 0)
    # winter (EST, UTC-5): 09:00 local = 14:00 UTC
    assert window.next_open(utc(2026, 1, 15, 3, 0)) == utc(2026, 1, 15, 14, 0)


def test_window_across_midnight_and_weekdays() -> None:
    night = TimeWindow("22:00", "02:00", "UTC")
    assert night.next_open(utc(2026, 7, 1, 23, 0)) is None
    assert night.next_open(utc(2026, 7, 2, 1, 59)) is None
    assert night.next_open(utc(2026, 7, 2, 2, 0)) == utc(2026, 7, 2, 22, 0)
    weekdays = TimeWindow("09:00", "17:00", "Europe/Berlin", days=(1, 2, 3, 4, 5))
    saturday_noon = utc(2026, 7, 4, 10, 0)  # 12:00 CEST, a Saturday
    assert weekdays.next_open(saturday_noon) == utc(2026, 7, 6, 7, 0)  # Monday 09:00 CEST
    assert TimeWindow.from_dict(weekdays.to_dict()) == weekdays


@pytest.mark.parametrize("bad", [("9:00", "17:00", "UTC"), ("09:00", "09:00", "UTC"), ("09:00", "17:00", "Mars/Olympus")])
def test_window_rejects_bad_bounds(bad: tuple[str, str, str]) -> None:
    with pytest.raises(ConfigError):
        TimeWindow(*bad)
    with pytest.raises(ValueError):
        TimeWindow("09:00", "17:00").next_open(datetime(2026, 1, 1))  # naive


def test_retry_policy_per_outcome() -> None:
    policy = RetryPolicy(max_attempts=3, delays={Outcome.BUSY: 30, Outcome.NO_ANSWER: 60}, machine_delay=120)
    assert policy.retry_delay(Outcome.BUSY, 1) == 30
    assert policy.retry_delay(Outcome.NO_ANSWER, 2) == 60
    assert policy.retry_delay(Outcome.BUSY, 3) is None  # out of attempts
    assert policy.retry_delay(Outcome.FAILED, 1) is None
    assert policy.retry_delay(Outcome.HUMAN, 1) is None
    assert policy.retry_delay(Outcome.MACHINE, 1) is None  # the flow did not ask
    assert policy.retry_delay(Outcome.MACHINE, 1, flow_wants_retry=True) == 120
    assert RetryPolicy.from_dict(policy.to_dict()) == policy
    with pytest.raises(ConfigError):
        RetryPolicy(delays={Outcome.FAILED: 1})
    with pytest.raises(ConfigError):
        RetryPolicy(max_attempts=0)


def test_job_fields_round_trip_and_validation() -> None:
    job = CallJob("+15551230001", "reminder", {"name": "Ana"}, TimeWindow("09:00", "20:00", "UTC"), job_id="j1")
    assert CallJob.from_fields("j1", job.to_fields()) == job
    with pytest.raises(ConfigError):
        CallJob("not a number!", "reminder")
    with pytest.raises(ConfigError):
        CallJob("+15551230001", "")
    with pytest.raises(ConfigError):
        CallJob("+15551230001", "f", job_id="bad id")
