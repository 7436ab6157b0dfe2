"""A simulated campaign fleet: real Redis, real worker processes, the fake Twilio (or Plivo) with scripted callees.

``CampaignFleet`` starts N worker processes (``python -m voice_runtime.testing.campaign_fleet``). Each is an
addressable worker (its own port: its streams and callbacks come back to it) running a real ``VoiceServer``,
the carrier's call control (``carrier="twilio"`` or ``"plivo"``) against its fake in the calling process, and
a ``CampaignWorker`` on Redis with the dialer the carrier registry names for it (``dialer_for``). The
flow ``greet`` says one word and hangs up. Used by ``tests/campaign`` and ``benchmarks/campaign_bench.py``.

Each worker counts its Redis round trips (one per ``send_packed_command``: a pipeline is one) and writes
``{worker_id, pid, redis_round_trips, cpu_seconds, dials, ...}`` to ``$CAMPAIGN_STATS_DIR/<id>.json`` when it
stops.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from voice_runtime.testing.carrier_plan import CarrierPlan, PlivoCarrierPlan
from voice_runtime.testing.fake_plivo import FakePlivo
from voice_runtime.testing.fake_twilio import FakeTwilio
from voice_runtime.testing.redis_server import free_port

log = logging.getLogger(__name__)

ROUND_TRIPS = [0]


def counting_redis(url: str) -> Any:
    """A redis-py client that counts its round trips in ``ROUND_TRIPS``."""
    import redis

    class CountingConnection(redis.Connection):
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            ROUND_TRIPS[0] += 1
            super().send_packed_command(command, check_health)

    pool = redis.ConnectionPool.from_url(url, connection_class=CountingConnection, socket_timeout=5.0, socket_connect_timeout=2.0)
    return redis.Redis(connection_pool=pool)


def greet(session: Any, job: Any) -> dict[str, Any]:
    session.speak(job.params.get("word", "hi"), wait=True, timeout=10)
    return {"said": job.params.get("word", "hi")}


def worker_main() -> None:
    from voice_runtime import VoiceServer, create_tts
    from voice_runtime.campaign import CampaignFlow, CampaignWorker, dialer_for
    from voice_runtime.server.workers import WorkerAddress, install_worker

    env = os.environ
    worker_id, port = env["WORKER_ID"], int(env["WORKER_PORT"])
    logging.basicConfig(level=getattr(logging, env.get("WORKER_LOG_LEVEL", "WARNING")), format=f"%(asctime)s %(levelname)s [{worker_id}] %(name)s: %(message)s")
    logging.getLogger("twilio").setLevel(logging.WARNING)  # the SDK logs every request's headers at INFO
    server = VoiceServer(tts_factory=lambda: create_tts("mock", min_seconds=0.1))
    install_worker(server, WorkerAddress(worker_id, f"http://127.0.0.1:{port}"))
    control = _call_control(server, env)
    running = server.start(port=port)
    redis = counting_redis(env["REDIS_URL"])
    flows = {"greet": CampaignFlow(greet, machine_detection=True, on_machine=env.get("ON_MACHINE", "hangup"), amd_timeout=5.0)}
    worker = CampaignWorker(
        redis,
        dialer_for(control),
        flows,
        worker_id=worker_id,
        max_calls=int(env.get("MAX_CALLS", "10")),
        global_max_calls=int(env["GLOBAL_MAX_CALLS"]) if env.get("GLOBAL_MAX_CALLS") else None,
        heartbeat_interval=float(env.get("HEARTBEAT", "0.5")),
        lease_ttl=float(env.get("LEASE_TTL", "2.0")),
        answer_timeout=20.0,
    ).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"READY {worker_id}", flush=True)
    stop.wait()
    worker.stop(30)
    running.stop()
    stats_dir = env.get("CAMPAIGN_STATS_DIR")
    if stats_dir:
        times = os.times()
        stats = {
            "worker_id": worker_id, "pid": os.getpid(), "redis_round_trips": ROUND_TRIPS[0],
            "cpu_seconds": times.user + times.system, **worker.stats.__dict__,
        }
        Path(stats_dir, f"{worker_id}.json").write_text(json.dumps(stats))


def _call_control(server: Any, env: Any) -> Any:
    """The worker's call control for ``$CARRIER`` (default twilio), pointed at the fake in the parent."""
    if env.get("CARRIER", "twilio") == "plivo":
        from voice_runtime.transports.plivo_control import PlivoCallControl

        logging.getLogger("plivo").setLevel(logging.WARNING)
        return PlivoCallControl(
            server, auth_id=env["FAKE_CARRIER_ACCOUNT"], auth_token=env["FAKE_CARRIER_TOKEN"], from_number="+15550001000",
            api_base_url=env["FAKE_CARRIER_URL"],
        )
    from voice_runtime.testing.fake_twilio import FakeTwilioHttpClient
    from voice_runtime.transports.twilio_client import TwilioCredentials
    from voice_runtime.transports.twilio_control import TwilioCallControl

    credentials = TwilioCredentials(account_sid=env["FAKE_CARRIER_ACCOUNT"], auth_token=env["FAKE_CARRIER_TOKEN"], from_number="+15550001000")
    return TwilioCallControl(server, credentials=credentials, http_client=FakeTwilioHttpClient(env["FAKE_CARRIER_URL"]))


class CampaignFleet:
    """Fake carrier + callee plan in this process, N worker processes against a given Redis."""

    def __init__(
        self,
        redis_url: str,
        decide: Callable[[str, int], str],
        *,
        workers: int = 4,
        stats_dir: str | Path,
        max_calls: int = 10,
        global_max_calls: int | None = None,
        heartbeat: float = 0.5,
        lease_ttl: float = 2.0,
        log_level: str = "WARNING",
        carrier: str = "twilio",
    ) -> None:
        self.redis_url = redis_url
        self.decide = decide
        self.count = workers
        self.stats_dir = Path(stats_dir)
        self.settings = {
            "MAX_CALLS": str(max_calls), "HEARTBEAT": str(heartbeat), "LEASE_TTL": str(lease_ttl),
            "WORKER_LOG_LEVEL": log_level, **({"GLOBAL_MAX_CALLS": str(global_max_calls)} if global_max_calls else {}),
        }
        if carrier not in ("twilio", "plivo"):
            raise ValueError(f"the simulated fleet has fakes for twilio and plivo, not {carrier!r}")
        self.carrier = carrier
        self.fake: Any = FakePlivo() if carrier == "plivo" else FakeTwilio()
        self.plan: Any = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}

    @property
    def account(self) -> str:
        return str(self.fake.auth_id if self.carrier == "plivo" else self.fake.account_sid)

    def start(self, timeout: float = 90.0) -> CampaignFleet:
        """Spawn the workers and wait for each to be ready (90 s: a loaded shared machine is slow to import).
        If one is not, every spawned worker is stopped before the error propagates: none outlives the caller."""
        self.fake.start()
        self.plan = PlivoCarrierPlan(self.fake, self.decide) if self.carrier == "plivo" else CarrierPlan(self.fake, self.decide)
        self.stats_dir.mkdir(parents=True, exist_ok=True)
        try:
            for index in range(self.count):
                self.spawn(f"w{index}")
            deadline = time.monotonic() + timeout
            for worker_id in list(self.procs):
                self.wait_ready(worker_id, deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def spawn(self, worker_id: str) -> None:
        env = dict(
            os.environ, WORKER_ID=worker_id, WORKER_PORT=str(free_port()), REDIS_URL=self.redis_url,
            CARRIER=self.carrier, FAKE_CARRIER_URL=self.fake.base_url, FAKE_CARRIER_ACCOUNT=self.account,
            FAKE_CARRIER_TOKEN=self.fake.auth_token, CAMPAIGN_STATS_DIR=str(self.stats_dir), **self.settings,
        )
        log_path = self.stats_dir / f"{worker_id}.log"
        self.logs[worker_id] = log_path
        with log_path.open("wb") as out:
            self.procs[worker_id] = subprocess.Popen(
                [sys.executable, "-m", "voice_runtime.testing.campaign_fleet"], env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def wait_ready(self, worker_id: str, deadline: float) -> None:
        while f"READY {worker_id}" not in self.logs[worker_id].read_text(errors="replace"):
            if self.procs[worker_id].poll() is not None:
                raise RuntimeError(f"worker {worker_id} exited: {self.logs[worker_id].read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker {worker_id} not ready")
            time.sleep(0.05)  # the child's "READY" line is the only readiness signal across processes

    def kill(self, worker_id: str) -> None:
        """``kill -9``: no drain, no goodbye to Redis."""
        proc = self.procs[worker_id]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def cpu_seconds(self, worker_id: str) -> float:
        """User+system CPU of a live worker process so far (from /proc)."""
        fields = Path(f"/proc/{self.procs[worker_id].pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> dict[str, dict[str, Any]]:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for worker_id, proc in self.procs.items():
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                log.warning("worker %s did not stop; killing it", worker_id)
                proc.kill()
                proc.wait(5)
        if self.plan is not None:
            self.plan.close()
        self.fake.close()
        stats = {}
        for worker_id in self.procs:
            path = self.stats_dir / f"{worker_id}.json"
            if path.exists():
                stats[worker_id] = json.loads(path.read_text())
        return stats

    def dial_times(self) -> list[float]:
        """When each dial (Twilio ``POST Calls.json``, Plivo ``POST /Call/``) reached the fake carrier (its own
        request log)."""
        return sorted(r.at for r in self.fake.requests_for("POST", "/Call/" if self.carrier == "plivo" else "/Calls.json"))

    def wait_for_dials(self, count: int, timeout: float) -> None:
        """Block until ``count`` dials reached the fake carrier (to act mid-campaign, e.g. kill a worker).

        The workers are other processes, but the fake carrier lives here and notifies its condition on every
        request it records, so this waits on that instead of polling. Raises ``TimeoutError`` past ``timeout``.
        """
        cond = self.fake._cond  # FakeTwilio and FakePlivo: a Condition over an RLock, held by requests_for too
        with cond:
            if not cond.wait_for(lambda: len(self.dial_times()) >= count, timeout):
                raise TimeoutError(f"only {len(self.dial_times())} of {count} dials reached the fake carrier in {timeout} s")


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The most events in any half-open window ``[t, t + window)`` (sliding over every event)."""
    best, j = 0, 0
    for i, start in enumerate(times):
        while j < len(times) and times[j] < start + window:
            j += 1
        best = max(best, j - i)
    return best




def mix_plan(index: int) -> list[str]:
    """The issue's callee mix by job index: 10 % busy (half of them on every attempt, half once), 5 % no-answer
    on every attempt, 5 % answering machines, the rest humans."""
    kind = index % 20
    if kind == 0:
        return ["busy"]
    if kind == 1:
        return ["busy", "human"]
    if kind == 2:
        return ["no-answer"]
    if kind == 3:
        return ["machine"]
    return ["human"]


def mix_number(index: int) -> str:
    return f"+1555{index:07d}"


def mix_decide(number: str, nth: int) -> str:
    plan = mix_plan(int(number[5:]))
    return plan[min(nth, len(plan)) - 1]


def mix_expected_dials(index: int, max_attempts: int) -> int:
    """Dials the retry policy allows for job ``index`` under :func:`mix_plan` (busy/no-answer retried)."""
    plan = mix_plan(index)
    if plan == ["busy"] or plan == ["no-answer"]:
        return max_attempts
    return len(plan)


if __name__ == "__main__":
    worker_main()
