"""Redis key names. Every key of one campaign shares a hash tag, so its Lua scripts run on Redis Cluster.

* ``vr:{c:NAME}:meta`` — hash: state (running|paused|cancelled), policy, caps, account, created
* ``vr:{c:NAME}:jobs`` — stream of attempts to make (``job``, ``attempt``); consumer group ``workers``
* ``vr:{c:NAME}:job:ID`` — hash: the job, its state, attempts, owner worker, call SID, result, history
* ``vr:{c:NAME}:delayed`` — sorted set: job ids waiting for a retry delay or their calling hours
* ``vr:{c:NAME}:counts`` — hash: queued/active/done/failed/cancelled/total
* ``vr:{c:NAME}:results`` — stream: one entry per finished job (its result, in order)
* ``vr:{cps:ACCOUNT}:bucket`` / ``:grants`` — the carrier account's CPS limiter and its recent grants
* ``vr:{fleet:F}:slots`` — sorted set: global concurrency leases (member = lease id, score = expiry ms)
* ``vr:{fleet:F}:workers`` — sorted set: worker id -> last heartbeat (ms); ``:worker:ID`` hash with TTL
* ``vr:{fleet:F}:live:ID`` — hash with TTL: the worker's live calls (call SID -> JSON)
* ``vr:campaigns`` — set of campaign names (no tag: read alone)
"""

from __future__ import annotations

import re

from voice_runtime.errors import ConfigError

GROUP = "workers"
CAMPAIGNS = "vr:campaigns"
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def check_name(name: str, what: str = "campaign") -> str:
    if not _NAME.fullmatch(name or ""):
        raise ConfigError(f"{what} name {name!r}: 1-64 of A-Z a-z 0-9 _ . -")
    return name


class CampaignKeys:
    def __init__(self, name: str) -> None:
        self.name = check_name(name)
        tag = f"vr:{{c:{name}}}"
        self.meta = f"{tag}:meta"
        self.jobs = f"{tag}:jobs"
        self.delayed = f"{tag}:delayed"
        self.counts = f"{tag}:counts"
        self.results = f"{tag}:results"
        self._job = f"{tag}:job:"

    def job(self, job_id: str) -> str:
        return self._job + job_id

    @property
    def job_prefix(self) -> str:
        return self._job


class CpsKeys:
    def __init__(self, account: str) -> None:
        check_name(account.replace("+", ""), "carrier account")
        tag = f"vr:{{cps:{account}}}"
        self.bucket = f"{tag}:bucket"
        self.grants = f"{tag}:grants"


class FleetKeys:
    def __init__(self, fleet: str) -> None:
        self.fleet = check_name(fleet, "fleet")
        tag = f"vr:{{fleet:{fleet}}}"
        self.slots = f"{tag}:slots"
        self.workers = f"{tag}:workers"
        self._worker = f"{tag}:worker:"
        self._live = f"{tag}:live:"

    def worker(self, worker_id: str) -> str:
        return self._worker + worker_id

    def live(self, worker_id: str) -> str:
        return self._live + worker_id
