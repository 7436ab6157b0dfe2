"""``Campaign``: create a campaign in Redis, add call jobs, watch it, pause, resume or cancel it.

::

    import redis
    from voice_runtime.campaign import Campaign, CallJob, TimeWindow

    r = redis.Redis.from_url("redis://localhost:6379/0")
    campaign = Campaign.create(r, "reminders", account="AC123", cps=20)
    campaign.add([CallJob("+15551230001", "reminder", {"name": "Ana"},
                          window=TimeWindow("09:00", "20:00", "America/New_York"))])
    print(campaign.status())          # queued / active / done / failed, current CPS

Workers anywhere (``CampaignWorker``) take the jobs; this object only talks to Redis.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from voice_runtime.campaign.jobs import CallJob, RetryPolicy
from voice_runtime.campaign.keys import CAMPAIGNS, GROUP, CampaignKeys, CpsKeys, check_name
from voice_runtime.campaign.scripts import Scripts
from voice_runtime.errors import ConfigError

__all__ = ["Campaign", "CampaignStatus", "set_account_cps", "current_cps"]

RUNNING, PAUSED, CANCELLED = "running", "paused", "cancelled"


#: The limiter spaces dials 1 / (cps * (1 - headroom)) apart. Dials leave workers on time (Redis' clock) but
#: reach the carrier with some jitter (HTTP, scheduling); a 21st dial lands inside a carrier's 1-s window only
#: if jitter exceeds headroom / (1 - headroom) seconds (0.1 -> 111 ms). See docs/scale-out.md.
DEFAULT_HEADROOM = 0.1


def set_account_cps(redis: Any, account: str, cps: float, *, headroom: float = DEFAULT_HEADROOM) -> None:
    """Set the carrier account's calls-per-second limit, shared by every worker that dials with it."""
    if not cps > 0:
        raise ConfigError("cps must be > 0")
    if not 0 <= headroom < 1:
        raise ConfigError("headroom is a fraction in [0, 1)")
    keys = CpsKeys(account)
    interval = 1_000_000 / (cps * (1 - headroom))
    redis.hset(keys.bucket, mapping={"cps": repr(float(cps)), "headroom": repr(headroom), "interval_us": str(int(round(interval)))})


def current_cps(redis: Any, account: str, seconds: float = 5.0) -> float:
    """Dials granted per second over the last ``seconds`` (from the limiter's own grant log)."""
    keys = CpsKeys(account)
    now_s, now_us = redis.time()
    now = now_s * 1_000_000 + now_us
    return redis.zcount(keys.grants, now - int(seconds * 1_000_000), now) / seconds


@dataclass
class CampaignStatus:
    name: str
    state: str
    total: int
    queued: int
    active: int
    done: int
    failed: int
    cancelled: int
    retries: int
    cps: float
    account: str
    carrier: str = ""  # empty: any worker's carrier

    @property
    def finished(self) -> bool:
        return self.total > 0 and self.done + self.failed + self.cancelled >= self.total

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["finished"] = self.finished
        return data


class Campaign:
    """A handle on one campaign's keys. Thread-safe as far as the redis client is."""

    def __init__(self, redis: Any, name: str) -> None:
        self.redis = redis
        self.name = check_name(name)
        self.keys = CampaignKeys(name)
        self.scripts = Scripts(redis)

    # ------------------------------------------------------------------------------------ lifecycle
    @classmethod
    def create(
        cls,
        redis: Any,
        name: str,
        *,
        account: str,
        cps: float | None = None,
        headroom: float = DEFAULT_HEADROOM,
        retry: RetryPolicy | None = None,
        exist_ok: bool = True,
        carrier: str | None = None,
    ) -> Campaign:
        """Create (or, with ``exist_ok``, open) a campaign dialling through carrier ``account``.

        ``cps`` sets the account's limit (shared by every campaign on that account); leave it None to keep
        the one already set. ``carrier`` (a name in ``voice_runtime.carriers``: ``twilio``, ``plivo``) makes
        only workers whose dialer is that carrier's take the jobs; without it any worker does (the campaign's
        ``account`` must then be the account of every worker's dialer).
        """
        campaign = cls(redis, name)
        if carrier is not None:
            from voice_runtime.carriers import get_carrier

            carrier = get_carrier(carrier).name  # unknown names fail here, not at the first dial
        check_name(account.replace("+", ""), "carrier account")
        if cps is not None:
            set_account_cps(redis, account, cps, headroom=headroom)
        elif not redis.hexists(CpsKeys(account).bucket, "interval_us"):
            raise ConfigError(f"no CPS limit set for carrier account {account!r}: pass cps=")
        policy = retry or RetryPolicy()
        created = redis.hsetnx(campaign.keys.meta, "state", RUNNING)
        if not created and not exist_ok:
            raise ConfigError(f"campaign {name!r} exists")
        if created:
            redis.hset(
                campaign.keys.meta,
                mapping={
                    "account": account, "retry": json.dumps(policy.to_dict()), "created": repr(time.time()),
                    **({"carrier": carrier} if carrier else {}),
                },
            )
            try:
                redis.xgroup_create(campaign.keys.jobs, GROUP, id="0", mkstream=True)
            except Exception as exc:  # BUSYGROUP: a concurrent create won
                if "BUSYGROUP" not in str(exc):
                    raise
        redis.sadd(CAMPAIGNS, name)
        return campaign

    def exists(self) -> bool:
        return bool(self.redis.exists(self.keys.meta))

    def meta(self) -> dict[str, str]:
        return {_s(k): _s(v) for k, v in self.redis.hgetall(self.keys.meta).items()}

    @property
    def retry_policy(self) -> RetryPolicy:
        raw = self.redis.hget(self.keys.meta, "retry")
        return RetryPolicy.from_dict(json.loads(raw)) if raw else RetryPolicy()

    # ------------------------------------------------------------------------------------ jobs
    def add(self, jobs: Iterable[CallJob], *, batch: int = 500) -> list[str]:
        """Enqueue ``jobs`` (ids assigned where empty). Returns the ids added; an existing id is skipped."""
        self._require()
        added: list[str] = []
        pending: list[CallJob] = []

        def flush() -> None:
            pipe = self.redis.pipeline(transaction=False)
            for job in pending:
                fields = [x for kv in job.to_fields().items() for x in kv]
                self.scripts.add_job(
                    keys=[self.keys.job(job.job_id), self.keys.counts, self.keys.jobs], args=[job.job_id, *fields], client=pipe
                )
            for job, ok in zip(pending, pipe.execute(), strict=True):
                if ok:
                    added.append(job.job_id)
            pending.clear()

        for job in jobs:
            if not job.job_id:
                job.job_id = secrets.token_hex(8)
            pending.append(job)
            if len(pending) >= batch:
                flush()
        if pending:
            flush()
        return added

    def add_job(self, number: str, flow: str, params: dict[str, Any] | None = None, **kwargs: Any) -> str:
        job = CallJob(number, flow, dict(params or {}), **kwargs)
        added = self.add([job])
        if not added:
            raise ConfigError(f"job {job.job_id!r} already exists")
        return added[0]

    def job(self, job_id: str) -> dict[str, Any]:
        """The job's record: fields, state, attempts, history (list) and result (dict) once final."""
        raw = {_s(k): _s(v) for k, v in self.redis.hgetall(self.keys.job(job_id)).items()}
        if not raw:
            raise KeyError(job_id)
        data: dict[str, Any] = dict(raw)
        data["params"] = json.loads(raw.get("params") or "{}")
        data["history"] = json.loads(raw.get("history") or "[]")
        data["result"] = json.loads(raw["result"]) if raw.get("result") else None
        data["attempts"] = int(raw.get("attempts") or 0)
        return data

    def results(self, count: int | None = None) -> Iterator[dict[str, Any]]:
        """Every finished job's result, in the order they finished."""
        start = "-"
        while True:
            entries = self.redis.xrange(self.keys.results, start, "+", count=500)
            for entry_id, fields in entries:
                yield json.loads(fields[b"result"] if b"result" in fields else fields["result"])
            if len(entries) < 500:
                return
            start = "(" + _s(entries[-1][0])

    # ------------------------------------------------------------------------------------ control
    def status(self) -> CampaignStatus:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.meta)
        pipe.hgetall(self.keys.counts)
        meta_raw, counts_raw = pipe.execute()
        meta = {_s(k): _s(v) for k, v in meta_raw.items()}
        if not meta:
            raise ConfigError(f"no campaign {self.name!r}")
        counts = {_s(k): int(v) for k, v in counts_raw.items()}
        account = meta.get("account", "")
        return CampaignStatus(
            name=self.name,
            state=meta.get("state", "?"),
            total=counts.get("total", 0),
            queued=counts.get("queued", 0),
            active=counts.get("active", 0),
            done=counts.get("done", 0),
            failed=counts.get("failed", 0),
            cancelled=counts.get("cancelled", 0),
            retries=counts.get("retries", 0),
            cps=current_cps(self.redis, account) if account else 0.0,
            account=account,
            carrier=meta.get("carrier", ""),
        )

    def pause(self) -> None:
        """Workers stop starting new attempts of this campaign; live calls go on."""
        self._set_state(PAUSED, expect=(RUNNING,))

    def resume(self) -> None:
        self._set_state(RUNNING, expect=(PAUSED,))

    def cancel(self) -> None:
        """No new attempts; queued and delayed jobs end as ``cancelled`` (as workers reach them); live calls go on."""
        self._set_state(CANCELLED, expect=(RUNNING, PAUSED, CANCELLED))
        self.scripts.promote_due(keys=[self.keys.delayed, self.keys.jobs], args=[1_000_000, "all"])

    def wait_finished(self, timeout: float, poll: float = 0.5) -> CampaignStatus:
        """Block until every job is final (or ``timeout``: raises TimeoutError with the last status)."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            if status.finished:
                return status
            if time.monotonic() >= deadline:
                raise TimeoutError(f"campaign {self.name} not finished in {timeout:.0f}s: {status.as_dict()}")
            time.sleep(min(poll, max(0.0, deadline - time.monotonic())))

    def _set_state(self, state: str, *, expect: tuple[str, ...]) -> None:
        current = _s(self.redis.hget(self.keys.meta, "state") or b"")
        if not current:
            raise ConfigError(f"no campaign {self.name!r}")
        if current not in expect:
            raise ConfigError(f"campaign {self.name!r} is {current}; cannot go to {state}")
        self.redis.hset(self.keys.meta, "state", state)

    def _require(self) -> None:
        if not self.exists():
            raise ConfigError(f"no campaign {self.name!r}: create it first")


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
