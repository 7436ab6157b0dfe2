"""``CampaignWorker``: takes call jobs from Redis and runs them as calls, on any number of hosts at once.

Delivery guarantees (Redis Streams, consumer group ``workers`` per campaign):

* **At least once delivery, at most once dial per attempt.** An entry stays in the group's pending list until
  the attempt it names is finished (``FINISH_ATTEMPT`` acks it in the same script that records the outcome).
  A dial happens only after ``BEGIN_DIAL`` moved the job ``queued -> dialling`` for that attempt number and
  this worker (compare-and-set), so a duplicate delivery of the same attempt finds it taken and does nothing.
* **Leases with heartbeats.** A worker refreshes (``XCLAIM ... JUSTID``) the pending entries it is working on,
  its global call-slot leases and its liveness key every ``heartbeat_interval``. An entry idle longer than
  ``lease_ttl`` belongs to a dead worker; any worker takes it over with ``XAUTOCLAIM``.
* **Reconcile, never blindly retry.** A taken-over job that was ``queued`` is simply run. One that was
  ``dialling`` (the intent was written; the REST answer was not) is looked up at the carrier (calls to that
  number since the intent): no record -> the intent is undone and the attempt is dialled once; a record -> it
  is that call. A ``live`` job (call SID known) is fetched from the carrier; a call still up is hung up (its
  flow died with the worker) and ends as ``interrupted``; a finished one takes its carrier status as outcome.
* **Rate and concurrency.** Before dialling, a worker reserves a send slot in its carrier account's CPS
  limiter (a Lua GCRA: slots ``1/cps`` apart, fleet-wide, on Redis' clock) and holds a global call slot (a
  leased sorted-set entry; ``global_max_calls``). It takes a job only while its own load (``load_fnc``, as
  LiveKit's ``load_fnc``/``load_threshold``) is below ``load_threshold`` and it has fewer than ``max_calls``.
* **Redis down.** The worker stops taking jobs, keeps its live calls running, keeps their results in memory
  (bounded) and writes them once Redis is back. See ``docs/scale-out.md``.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from voice_runtime.campaign.dialer import TERMINAL_STATUSES, DialRejected, Dialer
from voice_runtime.campaign.jobs import REACHED, CallJob, Outcome, RetryPolicy
from voice_runtime.campaign.keys import CAMPAIGNS, GROUP, CampaignKeys, CpsKeys, FleetKeys
from voice_runtime.campaign.scripts import Scripts
from voice_runtime.errors import CallError, CallNotAnsweredError

log = logging.getLogger(__name__)

__all__ = ["CampaignFlow", "CampaignWorker", "WorkerStats"]

_STATUS_OUTCOME = {
    "busy": Outcome.BUSY,
    "no-answer": Outcome.NO_ANSWER,
    "failed": Outcome.FAILED,
    "canceled": Outcome.CANCELED,
    "cancel": Outcome.CANCELED,
    "timeout": Outcome.NO_ANSWER,
    "rejected": Outcome.BUSY,
}


@dataclass
class CampaignFlow:
    """A flow a campaign job can name: ``fn(session, job) -> dict | None`` (its result), and its AMD choice.

    ``on_machine``: ``"run"`` runs the flow anyway (leave a message; outcome ``machine``), ``"hangup"`` hangs
    up (final ``machine``), ``"retry"`` hangs up and retries later under the policy's ``machine_delay``.
    """

    fn: Callable[[Any, CallJob], Mapping[str, Any] | None]
    machine_detection: bool = False
    on_machine: str = "hangup"
    amd_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.on_machine not in ("run", "hangup", "retry"):
            raise ValueError("on_machine is 'run', 'hangup' or 'retry'")


@dataclass
class WorkerStats:
    dials: int = 0
    finished: int = 0
    reclaimed: int = 0
    reconciled_dialled: int = 0
    reconciled_not_dialled: int = 0
    redis_errors: int = 0
    stale: int = 0
    cps_forfeits: int = 0


@dataclass
class _Attempt:
    campaign: str
    entry_id: str
    job_id: str
    attempt: int
    slot: str | None = None
    call_sid: str = ""
    number: str = ""
    started: float = field(default_factory=time.time)
    dial_at: float = 0.0  # when the REST dial request was started (epoch s)


class CampaignWorker:
    """One worker process's campaign loop. ``start()`` it next to your ``VoiceServer``; ``stop()`` to drain."""

    def __init__(
        self,
        redis: Any,
        dialer: Dialer,
        flows: Mapping[str, CampaignFlow],
        *,
        worker_id: str,
        fleet: str = "default",
        max_calls: int = 10,
        global_max_calls: int | None = None,
        load_fnc: Callable[[CampaignWorker], float] | None = None,
        load_threshold: float = 1.0,
        heartbeat_interval: float = 2.0,
        lease_ttl: float = 10.0,
        campaigns: list[str] | None = None,
        answer_timeout: float = 60.0,
        reconcile_skew: float = 5.0,
        max_cps_wait: float = 5.0,
        max_buffered_results: int = 10_000,
    ) -> None:
        if lease_ttl < 3 * heartbeat_interval:
            raise ValueError("lease_ttl must be at least 3 heartbeat intervals")
        self.redis = redis
        self.dialer = dialer
        self.flows = dict(flows)
        self.worker_id = worker_id
        self.fleet = FleetKeys(fleet)
        self.max_calls = max_calls
        self.global_max_calls = global_max_calls
        self.load_fnc = load_fnc or (lambda w: w.active_count / w.max_calls)
        self.load_threshold = load_threshold
        self.heartbeat_interval = heartbeat_interval
        self.lease_ttl = lease_ttl
        self.fixed_campaigns = list(campaigns) if campaigns else None
        self.answer_timeout = answer_timeout
        self.reconcile_skew = reconcile_skew
        self.max_cps_wait = max_cps_wait
        self.scripts = Scripts(redis)
        #: The carrier this worker dials with (``voice_runtime.carriers``); it takes only campaigns created for
        #: it (a campaign created without one is taken by any worker, as before carriers were recorded).
        self.carrier = str(getattr(dialer, "carrier", "twilio"))
        self.stats = WorkerStats()
        self._lock = threading.Lock()
        self._active: dict[str, _Attempt] = {}  # entry id -> attempt in progress
        self._live: dict[str, dict[str, Any]] = {}  # call sid -> live-call view
        self._backlog: collections.deque[tuple[str, str, dict[str, str]]] = collections.deque()
        self._unwritten: collections.deque[Callable[[], None]] = collections.deque(maxlen=max_buffered_results)
        self._room = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._attempt_threads: set[threading.Thread] = set()
        self._campaigns: list[str] = []
        self._meta: dict[str, tuple[float, dict[str, str]]] = {}
        self._next_campaign = 0
        self._last = {"promote": 0.0, "reclaim": 0.0, "campaigns": 0.0}
        self.redis_ok = True

    # ------------------------------------------------------------------------------------ public
    @property
    def active_count(self) -> int:
        with self._lock:
            return len(self._active)

    @property
    def load(self) -> float:
        return float(self.load_fnc(self))

    def start(self) -> CampaignWorker:
        warm_up = getattr(self.dialer, "warm_up", None)
        if callable(warm_up):
            warm_up()
        for target, name in ((self._dispatch_loop, "dispatch"), (self._heartbeat_loop, "heartbeat")):
            thread = threading.Thread(target=target, name=f"campaign-{name}-{self.worker_id}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop taking jobs; wait up to ``timeout`` for live attempts to finish. True if all finished."""
        self._stop.set()
        self._room.set()
        deadline = time.monotonic() + timeout
        for thread in list(self._attempt_threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        self._flush_unwritten()
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        try:
            self.redis.zrem(self.fleet.workers, self.worker_id)
            self.redis.delete(self.fleet.worker(self.worker_id), self.fleet.live(self.worker_id))
        except Exception:
            log.warning("worker %s: could not deregister from Redis", self.worker_id)
        return not any(t.is_alive() for t in self._attempt_threads)

    # ------------------------------------------------------------------------------------ dispatch
    def _dispatch_loop(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                self._flush_unwritten()
                self._housekeeping()
                if not self._has_room():
                    self._room.clear()
                    self._room.wait(0.5)
                    continue
                slot = self._acquire_slot()
                if slot is False:
                    self._stop.wait(0.05)  # the fleet is at its global cap; a slot frees when any call ends
                    continue
                entry = self._next_entry()
                if entry is None:
                    self._release_slot(slot or None)  # type: ignore[arg-type]  # narrow ignore so scripts/typecheck.sh holds zero errors; a real fix is for this module's owner
                    continue
                self._start_attempt(*entry, slot=slot or None)  # type: ignore[arg-type]  # narrow ignore so scripts/typecheck.sh holds zero errors; a real fix is for this module's owner
                if not self.redis_ok:
                    log.warning("worker %s: Redis is reachable again; taking jobs", self.worker_id)
                self.redis_ok, backoff = True, 0.1
            except Exception as exc:
                if not _is_redis_error(exc):
                    log.exception("worker %s: dispatch error", self.worker_id)
                self.stats.redis_errors += 1
                if self.redis_ok:
                    log.warning("worker %s: Redis unavailable (%s): not taking jobs; live calls go on", self.worker_id, exc)
                self.redis_ok = False
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _has_room(self) -> bool:
        return self.active_count < self.max_calls and self.load < self.load_threshold

    def _acquire_slot(self) -> str | bool | None:
        if self.global_max_calls is None:
            return None
        lease = f"{self.worker_id}:{os.urandom(6).hex()}"
        got = self.scripts.acquire_slot(keys=[self.fleet.slots], args=[lease, int(self.lease_ttl * 1000), self.global_max_calls])
        return lease if got else False

    def _release_slot(self, slot: str | None) -> None:
        if slot:
            try:
                self.redis.zrem(self.fleet.slots, slot)
            except Exception:
                log.debug("slot %s not released (Redis down); its lease expires", slot)

    def _campaign_list(self) -> list[str]:
        now = time.monotonic()
        if self.fixed_campaigns is not None:
            return self.fixed_campaigns
        if now - self._last["campaigns"] > 2.0 or not self._campaigns:
            self._campaigns = sorted(_s(n) for n in self.redis.smembers(CAMPAIGNS))
            self._last["campaigns"] = now
        return self._campaigns

    def _campaign_meta(self, name: str, max_age: float = 0.5) -> dict[str, str]:
        cached = self._meta.get(name)
        now = time.monotonic()
        if cached is None or now - cached[0] > max_age:
            meta = {_s(k): _s(v) for k, v in self.redis.hgetall(CampaignKeys(name).meta).items()}
            self._meta[name] = cached = (now, meta)
        return cached[1]

    def _next_entry(self) -> tuple[str, str, dict[str, str]] | None:
        if self._backlog:
            return self._backlog.popleft()
        names = self._campaign_list()
        if not names:
            self._stop.wait(0.5)
            return None
        for i in range(len(names)):
            name = names[(self._next_campaign + i) % len(names)]
            meta = self._campaign_meta(name)
            if meta.get("state") not in ("running", "cancelled"):
                continue
            if meta.get("carrier", self.carrier) != self.carrier:
                continue  # another carrier's campaign: its workers dial it, with their own account
            block = 200 if i == len(names) - 1 else None
            found = self.redis.xreadgroup(GROUP, self.worker_id, {CampaignKeys(name).jobs: ">"}, count=1, block=block)
            if found:
                self._next_campaign = (self._next_campaign + i + 1) % len(names)
                _, entries = found[0]
                entry_id, fields = entries[0]
                return name, _s(entry_id), {_s(k): _s(v) for k, v in fields.items()}
        return None

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now - self._last["promote"] > 0.25:
            self._last["promote"] = now
            for name in self._campaign_list():
                keys = CampaignKeys(name)
                self.scripts.promote_due(keys=[keys.delayed, keys.jobs], args=[200, ""])
        if now - self._last["reclaim"] > self.lease_ttl / 2:
            self._last["reclaim"] = now
            self._reclaim()

    # ------------------------------------------------------------------------------------ reclaim
    def _reclaim(self) -> None:
        with self._lock:
            mine = set(self._active)
        for name in self._campaign_list():
            keys = CampaignKeys(name)
            start = "0-0"
            for _ in range(10):  # bounded per pass
                reply = self.redis.xautoclaim(keys.jobs, GROUP, self.worker_id, int(self.lease_ttl * 1000), start, count=20)
                start, claimed = _s(reply[0]), reply[1]
                for entry_id, fields in claimed:
                    entry_id = _s(entry_id)
                    if entry_id in mine or fields is None:
                        continue
                    self.stats.reclaimed += 1
                    self._backlog.append((name, entry_id, {_s(k): _s(v) for k, v in fields.items()}))
                if start == "0-0":
                    break

    # ------------------------------------------------------------------------------------ attempts
    def _start_attempt(self, campaign: str, entry_id: str, fields: dict[str, str], *, slot: str | None) -> None:
        attempt = _Attempt(campaign, entry_id, fields.get("job", ""), int(fields.get("attempt") or 0), slot)
        with self._lock:
            self._active[entry_id] = attempt
        thread = threading.Thread(target=self._run_attempt, args=(attempt,), name=f"campaign-job-{attempt.job_id}", daemon=True)
        self._attempt_threads = {t for t in self._attempt_threads if t.is_alive()}
        self._attempt_threads.add(thread)
        thread.start()

    def _end_attempt(self, attempt: _Attempt) -> None:
        with self._lock:
            self._active.pop(attempt.entry_id, None)
            if attempt.call_sid:
                self._live.pop(attempt.call_sid, None)
        self._release_slot(attempt.slot)
        self._room.set()

    def _run_attempt(self, attempt: _Attempt) -> None:
        try:
            self._attempt(attempt)
        except Exception:
            log.exception("worker %s: attempt %s of job %s failed", self.worker_id, attempt.attempt, attempt.job_id)
        finally:
            self._end_attempt(attempt)

    def _attempt(self, attempt: _Attempt) -> None:
        keys = CampaignKeys(attempt.campaign)
        raw = {_s(k): _s(v) for k, v in self.redis.hgetall(keys.job(attempt.job_id)).items()}
        if not raw:
            self.redis.xack(keys.jobs, GROUP, attempt.entry_id)
            return
        state, attempts, owner = raw.get("state"), int(raw.get("attempts") or 0), raw.get("worker", "")
        meta = self._campaign_meta(attempt.campaign)
        if state in ("dialling", "live") and attempts == attempt.attempt and owner and owner != self.worker_id:
            if self.redis.exists(self.fleet.worker(owner)):
                return  # its owner is alive (a slow heartbeat): leave the entry, the owner acks it
            if not self._reconcile(attempt, keys, raw, owner):
                return
            raw = {_s(k): _s(v) for k, v in self.redis.hgetall(keys.job(attempt.job_id)).items()}
            state, attempts = raw.get("state"), int(raw.get("attempts") or 0)
        if state != "queued" or attempts != attempt.attempt - 1:
            self.stats.stale += 1
            self.redis.xack(keys.jobs, GROUP, attempt.entry_id)  # a finished or superseded attempt's entry
            return
        if meta.get("state") == "cancelled":
            self.scripts.cancel_job(keys=[keys.job(attempt.job_id), keys.counts, keys.jobs], args=[attempt.entry_id])
            return
        job = CallJob.from_fields(attempt.job_id, raw)
        if job.window is not None:
            opens = job.window.next_open(datetime.now(timezone.utc))
            if opens is not None:
                due = int(opens.timestamp() * 1000)
                self.scripts.defer(keys=[keys.job(job.job_id), keys.delayed, keys.jobs], args=[attempt.attempt, attempt.entry_id, due, job.job_id])
                log.info("job %s outside its calling hours; deferred to %s", job.job_id, opens.isoformat())
                return
        flow = self.flows.get(job.flow)
        policy = RetryPolicy.from_dict(json.loads(meta["retry"])) if meta.get("retry") else RetryPolicy()
        if flow is None:
            # Dial nothing; the job fails with a clear reason (a worker without that flow must not dial for it).
            if self._begin(attempt, keys):
                self._finish(attempt, keys, job, policy, Outcome.FAILED, self.worker_id, error=f"no flow named {job.flow!r} on worker {self.worker_id}")
            return
        if not self._begin(attempt, keys):
            return
        self._dial_and_run(attempt, keys, job, flow, policy, meta.get("account", ""))

    def _begin(self, attempt: _Attempt, keys: CampaignKeys) -> bool:
        verdict = _s(
            self.scripts.begin_dial(keys=[keys.job(attempt.job_id), keys.counts, keys.meta], args=[attempt.attempt, self.worker_id])
        )
        if verdict != "ok":
            self.stats.stale += 1
            log.info("job %s attempt %s not started: %s", attempt.job_id, attempt.attempt, verdict)
            if verdict.startswith("campaign:paused"):
                # Put it back in line for when the campaign resumes (the entry is acked by DEFER).
                self.scripts.defer(
                    keys=[keys.job(attempt.job_id), keys.delayed, keys.jobs],
                    args=[attempt.attempt, attempt.entry_id, int(time.time() * 1000) + 1000, attempt.job_id],
                )
            return False
        return True

    def _reserve_cps(self, account: str, attempt: _Attempt) -> None:
        """Wait for a send slot of the account's fleet-wide schedule (runs right before the dial is sent).

        A slot is only good on time: a worker that wakes later than ``min(interval / 2, 50 ms)`` after its slot
        (a starved process, a GC pause) forfeits it and asks again, instead of sending late and bunching with
        the next slots at the carrier. Forfeits cost throughput, never the limit; they are counted. It does
        not give up when the worker is stopping: the dial intent is already recorded, and a drain lets this
        call happen and finish.
        """
        bucket = CpsKeys(account)
        while True:
            granted, wait_us, interval_us = self.scripts.cps_reserve(
                keys=[bucket.bucket, bucket.grants], args=[int(self.max_cps_wait * 1_000_000)]
            )
            slot = time.monotonic() + wait_us / 1_000_000
            if not granted:
                time.sleep(min(wait_us / 1_000_000, 1.0))
                continue
            if wait_us > 0:
                time.sleep(wait_us / 1_000_000)  # our reserved send slot
            if time.monotonic() - slot <= min(interval_us / 2_000_000, 0.05):
                attempt.dial_at = time.time()
                return
            self.stats.cps_forfeits += 1

    def _dial_and_run(
        self, attempt: _Attempt, keys: CampaignKeys, job: CallJob, flow: CampaignFlow, policy: RetryPolicy, account: str
    ) -> None:
        started = time.time()
        self.stats.dials += 1
        options: dict[str, Any] = {}
        if flow.machine_detection:
            options["machine_detection"] = "Enable"
        try:
            outbound = self.dialer.dial(job.number, before_send=lambda: self._reserve_cps(account, attempt), **options)
        except DialRejected as exc:
            self._finish(attempt, keys, job, policy, Outcome.FAILED, self.worker_id, error=str(exc))
            return
        except Exception as exc:
            # The request may or may not have reached the carrier: ask it rather than guess.
            log.warning("job %s: dial outcome unknown (%s); reconciling with the carrier", job.job_id, exc)
            records = self._safe_find(job.number, started - self.reconcile_skew)
            if records is None or not records:
                self._finish(attempt, keys, job, policy, Outcome.FAILED, self.worker_id, error=f"dial error: {exc}")
                return
            self._adopt(attempt, keys, job, policy, records[0].sid, self.worker_id, since=started - self.reconcile_skew)
            return
        sid = outbound.call_id
        if not attempt.dial_at:
            log.error("dialer %r placed call %s without running before_send: the CPS limit was bypassed", self.dialer, sid)
        attempt.call_sid, attempt.number = sid, job.number
        self.scripts.set_call(keys=[keys.job(job.job_id)], args=[attempt.attempt, self.worker_id, sid])
        with self._lock:
            self._live[sid] = {"campaign": attempt.campaign, "job": job.job_id, "number": job.number, "since": started, "state": "ringing"}
        session = outbound.session
        answered_by, result, error = None, None, None
        call_id = sid  # the id the results name: Plivo's CallUUID once answered, else the dial's id
        wants_retry = False
        answered_at = ended_at = None
        try:
            try:
                outbound.wait_answered(self.answer_timeout)
            except CallNotAnsweredError as exc:
                status = (getattr(exc, "status", None) or "no-answer").lower()
                if getattr(exc, "status", None) is None:  # our own timeout: stop the ringing
                    self._safe_hangup(sid)
                self._finish(attempt, keys, job, policy, _STATUS_OUTCOME.get(status, Outcome.FAILED), self.worker_id, call_sid=sid)
                return
            answered_at = time.time()
            call_id = self._record_answered_id(attempt, keys, sid, session)
            with self._lock:
                if sid in self._live:
                    self._live[sid]["state"] = "live"
            outcome = Outcome.HUMAN
            if flow.machine_detection:
                try:
                    answered_by = session.wait_for_answered_by(flow.amd_timeout)
                except Exception:
                    answered_by = "unknown"
                if answered_by and answered_by.startswith(("machine", "fax")):
                    outcome = Outcome.MACHINE
            if outcome == Outcome.MACHINE and flow.on_machine != "run":
                wants_retry = flow.on_machine == "retry"
            else:
                try:
                    result = flow.fn(session, job)
                except CallError as exc:  # the callee hung up mid-flow: they were reached
                    error = f"{type(exc).__name__}: {exc}"
                except Exception as exc:
                    log.exception("flow %s crashed on job %s", job.flow, job.job_id)
                    outcome, error = Outcome.ERROR, f"{type(exc).__name__}: {exc}"
        finally:
            if not session.is_disconnected:
                try:
                    session.hangup(10.0)
                except CallError as exc:  # did not end in time: the carrier's record settles it later
                    log.warning("job %s: %s", job.job_id, exc)
            ended_at = time.time()
            self.dialer.forget(sid)
        duration = round(ended_at - answered_at, 3) if answered_at else 0.0
        self._finish(
            attempt, keys, job, policy, outcome, self.worker_id, call_sid=call_id, answered_by=answered_by,
            duration=duration, result=result, error=error, wants_retry=wants_retry,
        )

    # ------------------------------------------------------------------------------------ reconciliation
    def _reconcile(self, attempt: _Attempt, keys: CampaignKeys, raw: dict[str, str], owner: str) -> bool:
        """A dead worker's attempt. True: it was undone (not dialled) and may be run now; False: settled."""
        job = CallJob.from_fields(attempt.job_id, raw)
        meta = self._campaign_meta(attempt.campaign)
        policy = RetryPolicy.from_dict(json.loads(meta["retry"])) if meta.get("retry") else RetryPolicy()
        sid = raw.get("call_sid", "")
        if not sid:
            intent = float(raw.get("intent_at") or 0.0)
            records = self._safe_find(job.number, intent - self.reconcile_skew)
            if records is None:
                return False  # carrier unreachable: leave the entry; it is reclaimed again later
            if not records:
                self.stats.reconciled_not_dialled += 1
                log.info("job %s attempt %s: worker %s died before the dial reached the carrier; dialling it now", job.job_id, attempt.attempt, owner)
                return bool(self.scripts.revert_dial(keys=[keys.job(job.job_id), keys.counts], args=[attempt.attempt, owner]))
            sid = records[0].sid
        since = float(raw.get("intent_at") or 0.0) - self.reconcile_skew
        self.stats.reconciled_dialled += 1
        log.info("job %s attempt %s: worker %s died after dialling %s; reconciling with the carrier record", job.job_id, attempt.attempt, owner, sid)
        self._adopt(attempt, keys, job, policy, sid, owner, since=since)
        return False

    def _record_answered_id(self, attempt: _Attempt, keys: CampaignKeys, sid: str, session: Any) -> str:
        """Plivo: the CallUUID replaces the request_uuid on answer. Record it on the job, so a worker that
        reconciles this attempt later looks the call up directly (the request_uuid still works, with more
        lookups). A Redis error here costs only that shortcut."""
        answered_id = str(getattr(session, "call_sid", "") or "")
        if not answered_id or answered_id == sid:
            return sid
        try:
            self.scripts.set_call(keys=[keys.job(attempt.job_id)], args=[attempt.attempt, self.worker_id, answered_id])
        except Exception as exc:
            log.warning("job %s: could not record CallUUID %s (%s); the request id %s stays", attempt.job_id, answered_id, exc, sid)
        return answered_id

    def _adopt(
        self, attempt: _Attempt, keys: CampaignKeys, job: CallJob, policy: RetryPolicy, sid: str, owner: str, *, since: float = 0.0
    ) -> None:
        """Settle an attempt from the carrier's record of call ``sid`` (no flow can run on it any more)."""
        try:
            status = self.dialer.call_status(sid, number=job.number, since=since)
        except Exception as exc:
            log.warning("job %s: carrier lookup of %s failed (%s); will retry", job.job_id, sid, exc)
            return
        if status in TERMINAL_STATUSES:
            outcome = Outcome.INTERRUPTED if status == "completed" else _STATUS_OUTCOME.get(status, Outcome.FAILED)
        else:
            self._safe_hangup(sid)  # ringing or up with nobody behind it: end it
            outcome = Outcome.INTERRUPTED if status == "in-progress" else Outcome.CANCELED
        canonical = getattr(self.dialer, "canonical_id", None)  # Plivo: the CallUUID a request_uuid was found as
        call_sid = str(canonical(sid)) if callable(canonical) else sid
        self._finish(attempt, keys, job, policy, outcome, owner, call_sid=call_sid, error=f"worker {owner} lost; carrier status {status}")

    def _safe_find(self, number: str, since: float) -> list[Any] | None:
        try:
            return self.dialer.find_calls(number, since)
        except Exception as exc:
            log.warning("carrier call lookup for %s failed: %s", number, exc)
            return None

    def _safe_hangup(self, sid: str) -> None:
        try:
            self.dialer.hangup(sid)
        except Exception as exc:
            log.warning("hangup of %s failed: %s", sid, exc)

    # ------------------------------------------------------------------------------------ results
    def _finish(
        self,
        attempt: _Attempt,
        keys: CampaignKeys,
        job: CallJob,
        policy: RetryPolicy,
        outcome: str,
        owner: str,
        *,
        call_sid: str = "",
        answered_by: str | None = None,
        duration: float = 0.0,
        result: Mapping[str, Any] | None = None,
        error: str | None = None,
        wants_retry: bool = False,
    ) -> None:
        delay = policy.retry_delay(outcome, attempt.attempt, flow_wants_retry=wants_retry)
        record = {
            "attempt": attempt.attempt, "outcome": outcome, "call_sid": call_sid, "worker": self.worker_id,
            "answered_by": answered_by, "duration": duration, "at": round(time.time(), 3),
            "dialled_at": round(attempt.dial_at, 4) if attempt.dial_at else None,
        }
        if error:
            record["error"] = error
        final_state = "done" if outcome in REACHED else "failed"
        summary = {
            "job_id": job.job_id, "number": job.number, "flow": job.flow, "outcome": outcome, "answered_by": answered_by,
            "duration": duration, "attempts": attempt.attempt, "call_sid": call_sid, "result": dict(result or {}),
            "error": error, "worker": self.worker_id,
        }

        def write() -> None:
            verdict = _s(
                self.scripts.finish_attempt(
                    keys=[keys.job(job.job_id), keys.counts, keys.jobs, keys.delayed, keys.results],
                    args=[
                        attempt.attempt, owner, attempt.entry_id, outcome, json.dumps(record),
                        "" if delay is None else int((time.time() + delay) * 1000), final_state, json.dumps(summary), job.job_id,
                    ],
                )
            )
            if verdict != "ok":
                self.stats.stale += 1
                log.warning("job %s attempt %s: result not recorded (%s)", job.job_id, attempt.attempt, verdict)
            else:
                self.stats.finished += 1

        try:
            write()
        except Exception as exc:
            if not _is_redis_error(exc):
                raise
            log.warning("job %s: Redis unavailable; result kept in memory until it is back", job.job_id)
            self._unwritten.append(write)

    def _flush_unwritten(self) -> None:
        while self._unwritten:
            write = self._unwritten[0]
            try:
                write()
            except Exception as exc:
                if _is_redis_error(exc):
                    return
                log.exception("could not write a buffered result")
            self._unwritten.popleft()

    # ------------------------------------------------------------------------------------ heartbeats
    def _heartbeat_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.heartbeat()
            except Exception as exc:
                self.stats.redis_errors += 1
                log.debug("heartbeat failed: %s", exc)
            self._stop.wait(self.heartbeat_interval)

    def heartbeat(self) -> None:
        """Liveness, load and live calls into Redis (with TTLs), and lease refresh of our work in progress."""
        ttl_ms = int(self.lease_ttl * 1000)
        with self._lock:
            active = list(self._active.values())
            live = {sid: json.dumps({**view, "worker": self.worker_id}) for sid, view in self._live.items()}
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(
            self.fleet.worker(self.worker_id),
            mapping={
                "load": f"{self.load:.3f}", "active": len(active), "max_calls": self.max_calls, "pid": os.getpid(),
                "host": socket.gethostname(), "at": f"{time.time():.3f}", "dials": self.stats.dials,
                "redis_ok": int(self.redis_ok),
            },
        )
        pipe.pexpire(self.fleet.worker(self.worker_id), ttl_ms)
        pipe.zadd(self.fleet.workers, {self.worker_id: int(time.time() * 1000)})
        pipe.delete(self.fleet.live(self.worker_id))
        if live:
            pipe.hset(self.fleet.live(self.worker_id), mapping=live)
            pipe.pexpire(self.fleet.live(self.worker_id), ttl_ms)
        slots = [a.slot for a in active if a.slot]
        if slots:
            self.scripts.refresh_slots(keys=[self.fleet.slots], args=[ttl_ms, *slots], client=pipe)
        by_campaign: dict[str, list[str]] = collections.defaultdict(list)
        for a in active:
            by_campaign[a.campaign].append(a.entry_id)
        for name, ids in by_campaign.items():
            pipe.xclaim(CampaignKeys(name).jobs, GROUP, self.worker_id, 0, ids, justid=True)
        pipe.execute()


def fleet_live_calls(redis: Any, fleet: str = "default") -> list[dict[str, Any]]:
    """Every live call of the fleet, from the workers' heartbeats (entries vanish with their TTL)."""
    keys = FleetKeys(fleet)
    calls = []
    for worker in redis.zrange(keys.workers, 0, -1):
        for sid, view in redis.hgetall(keys.live(_s(worker))).items():
            calls.append({"call_sid": _s(sid), **json.loads(view)})
    return calls


def fleet_workers(redis: Any, fleet: str = "default") -> list[dict[str, str]]:
    """Workers whose liveness key still exists, with their last reported load."""
    keys = FleetKeys(fleet)
    workers = []
    for worker in redis.zrange(keys.workers, 0, -1):
        data = {_s(k): _s(v) for k, v in redis.hgetall(keys.worker(_s(worker))).items()}
        if data:
            workers.append({"worker_id": _s(worker), **data})
    return workers


def _is_redis_error(exc: BaseException) -> bool:
    try:
        import redis
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, (redis.ConnectionError, redis.TimeoutError, ConnectionError, TimeoutError))


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
