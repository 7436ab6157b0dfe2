"""A CampaignWorker dialling with Plivo: real Redis, a real VoiceServer, the fake Plivo over real sockets.

The plivo SDK sends every dial and lookup to :class:`FakePlivo`; its signed webhooks and media streams come
back to the server; the callees are scripted by :class:`PlivoCarrierPlan`. The reconciliation cases stand in
for a worker that died mid-attempt: a 'ghost' wrote the dial intent (and maybe the REST dial went out), then
vanished without a heartbeat; a live worker must settle the job from Plivo's own records.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("plivo", reason="plivo SDK not installed: pip install voice-runtime[plivo]")

from voice_runtime import VoiceServer, create_tts
from voice_runtime.campaign import CallJob, Campaign, CampaignFlow, CampaignWorker, Outcome, PlivoDialer, RetryPolicy, dialer_for
from voice_runtime.campaign.keys import GROUP
from voice_runtime.server.workers import WorkerAddress, install_worker
from voice_runtime.testing.carrier_plan import PlivoCarrierPlan
from voice_runtime.testing.fake_plivo import FakeCall, FakePlivo
from voice_runtime.transports.plivo_control import PlivoCallControl

FAST = RetryPolicy(max_attempts=3, delays={Outcome.BUSY: 0.2, Outcome.NO_ANSWER: 0.2, Outcome.CANCELED: 0.2}, machine_delay=0.2)


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)  # polling state kept in Redis / the fake's threads: no event to wait on


class PlivoRig:
    def __init__(self, redis: Any, plan: dict[str, list[str]], **fake_kwargs: Any) -> None:
        self.redis = redis
        self.plan_table = plan
        self.fake = FakePlivo(**fake_kwargs).start()
        self.plan = PlivoCarrierPlan(self.fake, self.decide)
        self.server = VoiceServer(tts_factory=lambda: create_tts("mock", min_seconds=0.1))
        self.running = self.server.start()
        install_worker(self.server, WorkerAddress("p1", f"http://127.0.0.1:{self.running.port}"))
        self.control = PlivoCallControl(
            self.server, auth_id=self.fake.auth_id, auth_token=self.fake.auth_token, from_number="+14155550000",
            api_base_url=self.fake.base_url,
        )
        self.release = threading.Event()
        self.workers: list[CampaignWorker] = []

    def decide(self, number: str, nth: int) -> str:
        outcomes = self.plan_table.get(number, ["human"])
        return outcomes[min(nth, len(outcomes)) - 1]

    def flows(self) -> dict[str, CampaignFlow]:
        def greet(session: Any, job: CallJob) -> dict[str, Any]:
            session.speak("hi", wait=True, timeout=10)
            return {"said": "hi", "call": session.call_sid}

        return {
            "greet": CampaignFlow(greet, machine_detection=True, on_machine="hangup"),
            "greet-retry-machines": CampaignFlow(greet, machine_detection=True, on_machine="retry"),
        }

    def worker(self, **kwargs: Any) -> CampaignWorker:
        kwargs.setdefault("heartbeat_interval", 0.2)
        kwargs.setdefault("lease_ttl", 1.0)
        worker = CampaignWorker(self.redis, dialer_for(self.control), self.flows(), worker_id=kwargs.pop("worker_id", "p1"), **kwargs)
        self.workers.append(worker)
        return worker.start()

    def dials_to(self, number: str) -> int:
        return self.plan.dial_counts()[number]

    def fake_calls_to(self, number: str) -> list[FakeCall]:
        return [c for c in self.fake.calls.values() if c.to == number]

    def ghost_rest_dial(self, number: str, *, play: bool = False) -> FakeCall:
        """The ghost's own ``POST /Call/`` (through the SDK), its answer and hangup URLs on a dead worker.
        ``play``: let the plan act the callee; otherwise the test drives the call."""
        hook = self.fake.on_dial
        if not play:
            self.fake.on_dial = None
        try:
            self.control.client.calls.create(from_="+14155550000", to_=number, answer_url="http://127.0.0.1:9/dead/answer")
        finally:
            self.fake.on_dial = hook
        return self.fake_calls_to(number)[-1]

    def close(self) -> None:
        self.release.set()
        for worker in self.workers:
            worker.stop(20)
        self.running.stop()
        self.plan.close()
        self.fake.stop()


@pytest.fixture
def rig_factory(redis_client: Any) -> Iterator[Callable[..., PlivoRig]]:
    rigs: list[PlivoRig] = []

    def make(plan: dict[str, list[str]], **fake_kwargs: Any) -> PlivoRig:
        rig = PlivoRig(redis_client, plan, **fake_kwargs)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()


def test_plivo_outcomes_retries_amd_and_results(rig_factory: Callable[..., PlivoRig], redis_client: Any) -> None:
    rig = rig_factory({
        "+15550000001": ["human"],
        "+15550000002": ["machine"],
        "+15550000003": ["busy"],  # busy on every attempt
        "+15550000004": ["busy", "human"],
        "+15550000005": ["no-answer", "no-answer", "human"],
        "+15550000006": ["failed"],
        "+15550000007": ["machine", "human"],
    })
    campaign = Campaign.create(redis_client, "pl1", account=rig.fake.auth_id, cps=20, retry=FAST, carrier="plivo")
    jobs = [CallJob(f"+1555000000{i}", "greet", job_id=f"j{i}") for i in range(1, 7)]
    jobs.append(CallJob("+15550000007", "greet-retry-machines", job_id="j7"))
    campaign.add(jobs)
    worker = rig.worker()
    assert isinstance(worker.dialer, PlivoDialer) and worker.carrier == "plivo"
    status = campaign.wait_finished(60)
    assert (status.total, status.done, status.failed, status.queued, status.active, status.carrier) == (7, 5, 2, 0, 0, "plivo")
    results = {r["job_id"]: r for r in campaign.results()}
    expect = {  # job: (outcome, attempts)
        "j1": (Outcome.HUMAN, 1), "j2": (Outcome.MACHINE, 1), "j3": (Outcome.BUSY, 3), "j4": (Outcome.HUMAN, 2),
        "j5": (Outcome.HUMAN, 3), "j6": (Outcome.FAILED, 1), "j7": (Outcome.HUMAN, 2),
    }
    assert {j: (r["outcome"], r["attempts"]) for j, r in results.items()} == expect
    # the flow ran on the answered call, under its CallUUID, and the job records that id (not the request_uuid)
    human = rig.fake_calls_to("+15550000001")[0]
    assert results["j1"]["result"] == {"said": "hi", "call": human.call_uuid}
    assert results["j1"]["answered_by"] == "human" and results["j1"]["duration"] > 0
    assert campaign.job("j1")["history"][0]["call_sid"] == results["j1"]["call_sid"] == human.call_uuid != human.request_uuid
    # AMD through Plivo's async machine_detection_url; machine + on_machine=hangup is final, not retried
    assert results["j2"]["answered_by"] == "machine_start" and results["j2"]["result"] == {}
    assert rig.fake_calls_to("+15550000002")[0].request["machine_detection"] == "true"
    assert [h["outcome"] for h in campaign.job("j5")["history"]] == ["no-answer", "no-answer", "human"]
    assert [h["outcome"] for h in campaign.job("j7")["history"]] == ["machine", "human"]
    # each attempt is exactly one POST /Call/ at the carrier, each sent in its CPS slot (before_send ran)
    for job in jobs:
        assert rig.dials_to(job.number) == expect[job.job_id][1], job.job_id
    assert all(h["dialled_at"] for j in expect for h in campaign.job(j)["history"])
    assert redis_client.xpending(campaign.keys.jobs, GROUP)["pending"] == 0
    assert status.retries == 2 + 1 + 2 + 1


def test_answer_that_beats_the_rest_response_still_runs_the_flow(rig_factory: Callable[..., PlivoRig], redis_client: Any) -> None:
    rig = rig_factory({}, before_dial_response=lambda call: (call.ring(), call.fetch_answer()))
    campaign = Campaign.create(redis_client, "pl2", account=rig.fake.auth_id, cps=20, retry=FAST, carrier="plivo")
    campaign.add([CallJob("+15550000101", "greet", job_id="race")])
    rig.worker()
    status = campaign.wait_finished(30)
    call = rig.fake_calls_to("+15550000101")[0]
    result = campaign.job("race")["result"]
    assert (status.done, result["outcome"], result["result"]["call"]) == (1, Outcome.HUMAN, call.call_uuid)
    assert rig.dials_to("+15550000101") == 1


def test_a_worker_takes_only_its_carriers_campaigns(rig_factory: Callable[..., PlivoRig], redis_client: Any) -> None:
    rig = rig_factory({})
    other = Campaign.create(redis_client, "tw", account="ACtwilio", cps=20, retry=FAST, carrier="twilio")
    other.add([CallJob("+15550000201", "greet", job_id="tw1")])
    mine = Campaign.create(redis_client, "pl3", account=rig.fake.auth_id, cps=20, retry=FAST, carrier="plivo")
    mine.add([CallJob("+15550000202", "greet", job_id="pl1")])
    rig.worker()
    assert mine.wait_finished(30).done == 1
    assert other.status().queued == 1 and rig.dials_to("+15550000201") == 0
    with pytest.raises(ValueError, match="unknown carrier 'sip'"):
        Campaign.create(redis_client, "bad", account="x", cps=1, carrier="sip")


def _ghost_intent(redis_client: Any, campaign: Campaign, job_id: str) -> None:
    """A worker 'ghost' took the job and wrote its dial intent, then died (no heartbeat, no liveness key)."""
    redis_client.xreadgroup(GROUP, "ghost", {campaign.keys.jobs: ">"}, count=1)
    verdict = campaign.scripts.begin_dial(keys=[campaign.keys.job(job_id), campaign.keys.counts, campaign.keys.meta], args=[1, "ghost"])
    assert verdict == b"ok"


def test_intent_without_a_plivo_record_is_dialled_once(rig_factory: Callable[..., PlivoRig], redis_client: Any) -> None:
    rig = rig_factory({})
    campaign = Campaign.create(redis_client, "pl4", account=rig.fake.auth_id, cps=20, retry=FAST, carrier="plivo")
    campaign.add([CallJob("+15550000301", "greet", job_id="r1")])
    _ghost_intent(redis_client, campaign, "r1")
    worker = rig.worker()
    assert campaign.wait_finished(30).done == 1
    assert rig.dials_to("+15550000301") == 1
    assert worker.stats.reconciled_not_dialled == 1 and worker.stats.reclaimed == 1
    assert campaign.job("r1")["history"][0]["attempt"] == 1  # still attempt 1: the ghost's never went out
    # it asked Plivo's three views (queued, live, CDRs) for calls to that number before dialling
    lookups = [(r.method, r.path.rsplit("/Account/", 1)[-1], r.query.get("status", [""])[0]) for r in rig.fake.requests if r.method == "GET"]
    assert {("GET", f"{rig.fake.auth_id}/Call/", s) for s in ("queued", "live", "")} <= set(lookups)


def test_busy_call_the_ghost_placed_is_settled_from_its_cdr(rig_factory: Callable[..., PlivoRig], redis_client: Any) -> None:
    rig = rig_factory({"+15550000401": ["busy", "busy"]})
    campaign = Campaign.create(redis_client, "pl5", account=rig.fake.auth_id, cps=20, retry=RetryPolicy(max_attempts=2, delays={Outcome.BUSY: 0.2}), carrier="plivo")
    campaign.add([CallJob("+15550000401", "greet", job_id="r2")])
    _ghost_intent(redis_client, campaign, "r2")
    ghost_call = rig.ghost_rest_dial("+15550000401", play=True)  # the ghost's dial reached Plivo; the callee is busy
    assert ghost_call.ended.wait(10) and ghost_call.status == "busy"
    worker = rig.worker()
    assert campaign.wait_finished(30).failed == 1
    history = campaign.job("r2")["history"]
    assert [(h["attempt"], h["outcome"]) for h in history] == [(1, "busy"), (2, "busy")]
    assert "worker ghost lost" in history[0]["error"] and history[0]["call_sid"] == ghost_call.call_uuid
    assert rig.dials_to("+15550000401") == 2  # the ghost's attempt 1 and our attempt 2: nothing twice
    assert worker.stats.reconciled_dialled == 1


@pytest.mark.parametrize("stage", ["queued", "live", "ended"])
def test_ghost_known_by_request_uuid_is_reconciled_not_redialled(
    rig_factory: Callable[..., PlivoRig], redis_client: Any, stage: str
) -> None:
    """The ghost got its ``request_uuid`` back and recorded it (job ``live``), then died before the CallUUID.

    queued: Plivo had not placed it yet -> the request is cancelled (``DELETE /Request/``), the attempt ends
    ``canceled`` and is retried under the policy; live: the call is up with nobody behind it -> found in the
    live calls by its request_uuid, hung up by CallUUID, ``interrupted``; ended: only a CDR is left (it carries
    no request_uuid) -> matched by number and time, ``interrupted``. In no case is attempt 1 dialled again."""
    number = "+15550000501"
    rig = rig_factory({})
    campaign = Campaign.create(redis_client, f"pl6{stage}", account=rig.fake.auth_id, cps=20, retry=FAST, carrier="plivo")
    campaign.add([CallJob(number, "greet", job_id="g1")])
    _ghost_intent(redis_client, campaign, "g1")
    ghost_call = rig.ghost_rest_dial(number)  # not played: this test sets the carrier-side state
    assert campaign.scripts.set_call(keys=[campaign.keys.job("g1")], args=[1, "ghost", ghost_call.request_uuid]) == 1
    if stage in ("live", "ended"):
        ghost_call.status, ghost_call.answered_at = "in-progress", time.time()  # answered at Plivo; its stream went to the dead worker
    if stage == "ended":
        ghost_call.end("completed")
    worker = rig.worker()
    status = campaign.wait_finished(30)
    history = campaign.job("g1")["history"]
    assert history[0]["attempt"] == 1 and "worker ghost lost" in history[0]["error"]
    assert worker.stats.reconciled_dialled == 1
    if stage == "queued":
        assert [h["outcome"] for h in history] == [Outcome.CANCELED, Outcome.HUMAN] and status.done == 1
        assert any(r.method == "DELETE" and r.path.endswith(f"/Request/{ghost_call.request_uuid}/") for r in rig.fake.requests)
        assert ghost_call.status == "cancel"
        assert rig.dials_to(number) == 1  # our attempt 2 (the ghost's went through the SDK directly)
    else:
        assert [h["outcome"] for h in history] == [Outcome.INTERRUPTED] and status.failed == 1  # interrupted is final
        assert history[0]["call_sid"] == ghost_call.call_uuid
        assert rig.dials_to(number) == 0  # reconciled, never redialled
        assert ghost_call.ended.is_set()
        hung_up = any(r.method == "DELETE" and r.path.endswith(f"/Call/{ghost_call.call_uuid}/") for r in rig.fake.requests)
        assert hung_up == (stage == "live")
    assert redis_client.xpending(campaign.keys.jobs, GROUP)["pending"] == 0


def test_a_refused_dial_is_rejected_and_a_timeout_is_unknown(rig_factory: Callable[..., PlivoRig]) -> None:
    from voice_runtime.campaign import DialRejected

    rig = rig_factory({})
    sent: list[str] = []
    wrong = PlivoCallControl(
        rig.server, auth_id=rig.fake.auth_id, auth_token="not-the-token", from_number="+14155550000", api_base_url=rig.fake.base_url,
        route_prefix="/plivo-wrong",
    )
    with pytest.raises(DialRejected, match="HTTP 401"):  # Plivo answered 401: the call was not placed
        PlivoDialer(wrong).dial("+15550000601", before_send=lambda: sent.append("slot"))
    assert sent == ["slot"]  # the CPS slot is taken right before the POST goes on the wire
    slow = FakePlivo(latency=1.0).start()
    try:
        control = PlivoCallControl(
            rig.server, auth_id=slow.auth_id, auth_token=slow.auth_token, from_number="+14155550000",
            api_base_url=slow.base_url, http_timeout=0.2, route_prefix="/plivo-slow",
        )
        with pytest.raises(Exception) as info:  # no answer in time: the call may exist, so not DialRejected
            PlivoDialer(control).dial("+15550000602")
        assert not isinstance(info.value, DialRejected)
        assert slow.wait_for_call(5).to == "+15550000602"  # ... and indeed it was placed: hence reconciliation
    finally:
        slow.stop()
