"""One CampaignWorker in this process against a real Redis, a real VoiceServer and the fake Twilio.

Everything crosses real sockets: REST dials and lookups to the fake, its signed callbacks and media streams to
the server, Lua scripts on Redis. The callees' behaviour is scripted by :class:`CarrierPlan`.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from voice_runtime import VoiceServer, create_tts
from voice_runtime.campaign import (
    CallJob,
    Campaign,
    CampaignFlow,
    CampaignWorker,
    Outcome,
    RetryPolicy,
    TimeWindow,
    TwilioDialer,
    fleet_live_calls,
    fleet_workers,
)
from voice_runtime.campaign.keys import GROUP
from voice_runtime.server.workers import WorkerAddress, install_worker
from voice_runtime.testing.carrier_plan import CarrierPlan
from voice_runtime.testing.fake_twilio import FakeTwilio
from voice_runtime.testing.redis_server import RedisServer
from voice_runtime.transports.twilio_control import TwilioCallControl

FAST = RetryPolicy(max_attempts=3, delays={Outcome.BUSY: 0.2, Outcome.NO_ANSWER: 0.2}, machine_delay=0.2)


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)  # polling state that lives in another process (Redis): no event to wait on


class Rig:
    def __init__(self, redis: Any, plan: dict[str, list[str]]) -> None:
        self.redis = redis
        self.plan_table = plan
        self.fake = FakeTwilio().start()
        self.plan = CarrierPlan(self.fake, self.decide)
        self.server = VoiceServer(tts_factory=lambda: create_tts("mock", min_seconds=0.1))
        self.running = self.server.start()
        install_worker(self.server, WorkerAddress("t1", f"http://127.0.0.1:{self.running.port}"))
        self.control = TwilioCallControl(self.server, credentials=self.fake.credentials(), http_client=self.fake.http_client())
        self.release = threading.Event()
        self.in_hold = threading.Event()
        self.workers: list[CampaignWorker] = []

    def decide(self, number: str, nth: int) -> str:
        outcomes = self.plan_table.get(number, ["human"])
        return outcomes[min(nth, len(outcomes)) - 1]

    def flows(self) -> dict[str, CampaignFlow]:
        def greet(session: Any, job: CallJob) -> dict[str, Any]:
            session.speak("hi", wait=True, timeout=10)
            return {"said": "hi", "name": job.params.get("name")}

        def hold(session: Any, job: CallJob) -> dict[str, Any]:
            self.in_hold.set()
            assert self.release.wait(30)
            return {"held": True}

        return {
            "greet": CampaignFlow(greet, machine_detection=True, on_machine="hangup"),
            "greet-retry-machines": CampaignFlow(greet, machine_detection=True, on_machine="retry"),
            "hold": CampaignFlow(hold),
        }

    def worker(self, **kwargs: Any) -> CampaignWorker:
        kwargs.setdefault("heartbeat_interval", 0.2)
        kwargs.setdefault("lease_ttl", 1.0)
        worker = CampaignWorker(self.redis, TwilioDialer(self.control), self.flows(), worker_id=kwargs.pop("worker_id", "t1"), **kwargs)
        self.workers.append(worker)
        return worker.start()

    def dials_to(self, number: str) -> int:
        return self.plan.dial_counts()[number]

    def close(self) -> None:
        self.release.set()
        for worker in self.workers:
            worker.stop(20)
        self.running.stop()
        self.plan.close()
        self.fake.close()


@pytest.fixture
def rig_factory(redis_client: Any) -> Iterator[Callable[[dict[str, list[str]]], Rig]]:
    rigs: list[Rig] = []

    def make(plan: dict[str, list[str]]) -> Rig:
        rig = Rig(redis_client, plan)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()


def test_outcomes_retries_results_and_live_view(rig_factory: Callable[..., Rig], redis_client: Any) -> None:
    rig = rig_factory({
        "+15550000001": ["human"],
        "+15550000002": ["machine"],
        "+15550000003": ["busy"],  # busy on every attempt
        "+15550000004": ["busy", "human"],
        "+15550000005": ["no-answer", "no-answer", "human"],
        "+15550000006": ["failed"],
        "+15550000007": ["machine", "human"],
    })
    campaign = Campaign.create(redis_client, "c1", account=rig.fake.account_sid, cps=20, retry=FAST)
    jobs = [CallJob(f"+1555000000{i}", "greet", {"name": f"n{i}"}, job_id=f"j{i}") for i in range(1, 7)]
    jobs.append(CallJob("+15550000007", "greet-retry-machines", job_id="j7"))
    jobs.append(CallJob("+15550000008", "hold", job_id="j8"))
    assert campaign.add(jobs) == [j.job_id for j in jobs]
    assert campaign.add([CallJob("+15550000001", "greet", job_id="j1")]) == []  # ids are unique
    rig.worker()
    # the shared live-call view shows the held call while it is up
    assert rig.in_hold.wait(20)
    live = wait_until(
        lambda: [c for c in fleet_live_calls(redis_client) if (c["job"], c["state"]) == ("j8", "live")], what="live call view"
    )
    assert live[0]["worker"] == "t1" and live[0]["number"] == "+15550000008" and live[0]["call_sid"].startswith("CA")
    assert [w["worker_id"] for w in fleet_workers(redis_client)] == ["t1"]
    rig.release.set()
    status = campaign.wait_finished(60)
    assert (status.total, status.done, status.failed, status.queued, status.active) == (8, 6, 2, 0, 0)
    results = {r["job_id"]: r for r in campaign.results()}
    expect = {  # job: (outcome, attempts)
        "j1": (Outcome.HUMAN, 1), "j2": (Outcome.MACHINE, 1), "j3": (Outcome.BUSY, 3), "j4": (Outcome.HUMAN, 2),
        "j5": (Outcome.HUMAN, 3), "j6": (Outcome.FAILED, 1), "j7": (Outcome.HUMAN, 2), "j8": (Outcome.HUMAN, 1),
    }
    assert {j: (r["outcome"], r["attempts"]) for j, r in results.items()} == expect
    assert results["j1"]["result"] == {"said": "hi", "name": "n1"} and results["j1"]["answered_by"] == "human"
    assert results["j1"]["duration"] > 0
    assert results["j2"]["answered_by"] == "machine_start" and results["j2"]["result"] == {}
    assert [h["outcome"] for h in campaign.job("j5")["history"]] == ["no-answer", "no-answer", "human"]
    assert campaign.job("j8")["result"]["result"] == {"held": True}
    # each attempt is exactly one dial at the carrier; failed and machine-with-hangup are not retried
    for job in jobs:
        assert rig.dials_to(job.number) == expect[job.job_id][1], job.job_id
    assert redis_client.xpending(campaign.keys.jobs, GROUP)["pending"] == 0
    assert status.retries == 2 + 1 + 2 + 1


def test_pause_resume_and_cancel(rig_factory: Callable[..., Rig], redis_client: Any) -> None:
    rig = rig_factory({})
    campaign = Campaign.create(redis_client, "c2", account=rig.fake.account_sid, cps=20, retry=FAST)
    campaign.pause()
    campaign.add([CallJob(f"+1555000010{i}", "greet", job_id=f"p{i}") for i in range(3)])
    worker = rig.worker()
    beats = [redis_client.hget(worker.fleet.worker("t1"), "at")]
    for _ in range(3):  # three heartbeats later the worker has looped many times: still nothing dialled
        beats.append(wait_until(lambda: (b := redis_client.hget(worker.fleet.worker("t1"), "at")) != beats[-1] and b, what="heartbeat"))
    assert worker.stats.dials == 0 and campaign.status().queued == 3
    campaign.resume()
    assert campaign.wait_finished(30).done == 3
    other = Campaign.create(redis_client, "c3", account=rig.fake.account_sid, retry=FAST)
    other.pause()
    other.add([CallJob(f"+1555000020{i}", "greet", job_id=f"x{i}") for i in range(4)])
    other.cancel()
    status = other.wait_finished(30)
    assert (status.cancelled, status.done, status.state) == (4, 0, "cancelled")
    assert all(rig.dials_to(f"+1555000020{i}") == 0 for i in range(4))
    with pytest.raises(Exception, match="cannot go to running"):
        other.resume()


def test_job_outside_its_calling_hours_waits_for_the_window(rig_factory: Callable[..., Rig], redis_client: Any) -> None:
    rig = rig_factory({})
    now = datetime.now(timezone.utc)
    opens = (now + timedelta(hours=3)).replace(second=0, microsecond=0)
    window = TimeWindow(opens.strftime("%H:%M"), (opens + timedelta(hours=1)).strftime("%H:%M"), "UTC")
    campaign = Campaign.create(redis_client, "c4", account=rig.fake.account_sid, cps=20, retry=FAST)
    campaign.add([CallJob("+15550000301", "greet", window=window, job_id="night")])
    rig.worker()
    score = wait_until(lambda: redis_client.zscore(campaign.keys.delayed, "night|1"), what="deferral")
    assert int(score) == int(opens.timestamp() * 1000)
    assert campaign.job("night")["state"] == "queued" and rig.dials_to("+15550000301") == 0
    assert redis_client.xpending(campaign.keys.jobs, GROUP)["pending"] == 0


def _ghost_dial(redis_client: Any, campaign: Campaign, job_id: str) -> str:
    """A worker 'ghost' took the job and wrote its dial intent, then died (no heartbeat, no liveness key)."""
    entries = redis_client.xreadgroup(GROUP, "ghost", {campaign.keys.jobs: ">"}, count=1)
    entry_id = entries[0][1][0][0]
    verdict = campaign.scripts.begin_dial(keys=[campaign.keys.job(job_id), campaign.keys.counts, campaign.keys.meta], args=[1, "ghost"])
    assert verdict == b"ok"
    return entry_id.decode()


def test_reclaimed_intent_without_a_carrier_record_is_dialled_once(rig_factory: Callable[..., Rig], redis_client: Any) -> None:
    rig = rig_factory({})
    campaign = Campaign.create(redis_client, "c5", account=rig.fake.account_sid, cps=20, retry=FAST)
    campaign.add([CallJob("+15550000401", "greet", job_id="r1")])
    _ghost_dial(redis_client, campaign, "r1")
    worker = rig.worker()
    status = campaign.wait_finished(30)
    assert status.done == 1
    assert rig.dials_to("+15550000401") == 1
    assert worker.stats.reconciled_not_dialled == 1 and worker.stats.reclaimed == 1
    assert campaign.job("r1")["history"][0]["attempt"] == 1  # still attempt 1: the ghost's never went out


def test_reclaimed_intent_that_reached_the_carrier_is_not_redialled(rig_factory: Callable[..., Rig], redis_client: Any) -> None:
    rig = rig_factory({"+15550000501": ["busy", "busy", "busy"]})
    campaign = Campaign.create(redis_client, "c6", account=rig.fake.account_sid, cps=20, retry=RetryPolicy(max_attempts=2, delays={Outcome.BUSY: 0.2}))
    campaign.add([CallJob("+15550000501", "greet", job_id="r2")])
    _ghost_dial(redis_client, campaign, "r2")
    # the ghost's REST dial reached the carrier before it died (its callbacks go nowhere)
    rig.fake.client().calls.create(to="+15550000501", from_=rig.fake.phone_number, twiml="<Response><Hangup/></Response>", status_callback="http://127.0.0.1:9/gone")
    wait_until(lambda: any(c.status == "busy" for c in rig.fake.calls.values()), what="carrier to end the ghost's call")
    worker = rig.worker()
    status = campaign.wait_finished(30)
    assert status.failed == 1
    job = campaign.job("r2")
    assert [(h["attempt"], h["outcome"]) for h in job["history"]] == [(1, "busy"), (2, "busy")]
    assert "worker ghost lost" in job["history"][0]["error"]
    assert rig.dials_to("+15550000501") == 2  # the ghost's attempt 1 and our attempt 2: nothing twice
    assert worker.stats.reconciled_dialled == 1


def test_redis_outage_keeps_the_live_call_and_writes_its_result_afterwards(
    rig_factory: Callable[..., Rig], redis_server: RedisServer
) -> None:
    client = redis_server.client(socket_timeout=0.5)
    client.flushall()
    rig = rig_factory({})
    rig.redis = client
    campaign = Campaign.create(client, "c7", account=rig.fake.account_sid, cps=20, retry=FAST)
    campaign.add([CallJob("+15550000601", "hold", job_id="h1"), CallJob("+15550000602", "greet", job_id="h2")])
    worker = rig.worker(max_calls=1)  # one call at a time: h2 waits for h1
    assert rig.in_hold.wait(20)
    assert redis_server.proc is not None
    os.kill(redis_server.proc.pid, signal.SIGSTOP)  # Redis hangs (a partition): every request times out
    try:
        rig.release.set()  # the call goes on and ends normally without Redis
        call = next(c for c in rig.fake.calls.values() if c.to == "+15550000601")
        wait_until(lambda: call.status == "completed", what="the live call to end at the carrier")
        wait_until(lambda: not worker.redis_ok, what="the worker to notice Redis is down")
        assert rig.dials_to("+15550000602") == 0  # no new jobs taken while Redis is away
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
    status = campaign.wait_finished(30)
    assert status.done == 2
    assert campaign.job("h1")["result"]["result"] == {"held": True}
    client.close()
