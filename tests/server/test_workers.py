"""Addressable workers: 4 real worker processes, dialled and webhook-answered calls all reach their owners.

The fleet is ``tests/server/fleet_app.py`` run by :func:`voice_runtime.server.workers.serve_workers` (forked
processes, each on its own port plus a shared ``SO_REUSEPORT`` webhook port). The carrier is the fake Twilio in
this process: real REST from the workers, real signed webhooks, real media WebSockets from simulated phones.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.output_lines import OutputLines
from voice_runtime.server.workers import WorkerAddress, WorkerPlan, WorkerRegistry, install_worker, owner_of, serve_workers
from voice_runtime.testing.fake_twilio import FakeTwilio
from voice_runtime.testing.phone import PhoneRejected
from voice_runtime.testing.ports import free_port_run, free_ports

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 4
CALLS_EACH = 50  # per worker and direction: 4 x 50 = 200 dialled + 200 webhook-answered


def start_fleet(fake: FakeTwilio, ports: list[int], webhook_port: int, **extra_env: str) -> tuple[subprocess.Popen[str], OutputLines]:
    """``tests/server/fleet_app.py`` with one worker per port in ``ports`` (consecutive), talking to ``fake``."""
    env = dict(
        os.environ,
        FAKE_TWILIO_URL=fake.base_url,
        FAKE_TWILIO_ACCOUNT_SID=fake.account_sid,
        FAKE_TWILIO_AUTH_TOKEN=fake.auth_token,
        FLEET_WORKERS=str(len(ports)),
        FLEET_BASE_PORT=str(ports[0]),
        FLEET_WEBHOOK_PORT=str(webhook_port),
        PYTHONUNBUFFERED="1",
        **extra_env,
    )
    proc = subprocess.Popen([sys.executable, "-m", "tests.server.fleet_app"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    return proc, OutputLines(proc, stdout=proc.stdout)


def wait_fleet_serving(output: OutputLines, ports: list[int], timeout: float = 90.0) -> None:
    """Until every worker logged that it serves its own port (a loaded CI machine starts the fleet slowly)."""
    deadline = time.monotonic() + timeout
    for port in ports:
        output.wait_for(rf"serving media streams on ws://127\.0\.0\.1:{port}/stream", max(0.0, deadline - time.monotonic()))


def stop(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM (the fleet drains), then a kill if it takes too long."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class Fleet:
    def __init__(self, fake: FakeTwilio, proc: subprocess.Popen[str], ports: list[int], webhook_port: int, output: OutputLines) -> None:
        self.fake, self.proc, self.ports, self.webhook_port, self.output = fake, proc, ports, webhook_port, output

    def url(self, index: int, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[index]}{path}"

    def reports(self) -> list[dict]:
        return [httpx.get(self.url(i, "/_test/report"), timeout=10).json() for i in range(WORKERS)]


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    with FakeTwilio() as fake:
        ports = free_port_run(WORKERS)  # consecutive, as the plan wants: worker i listens on base + i
        (webhook_port,) = free_ports(1)
        proc, output = start_fleet(fake, ports, webhook_port)
        try:
            wait_fleet_serving(output, ports)
            yield Fleet(fake, proc, ports, webhook_port, output)
        finally:
            stop(proc)
            output.join()


def _port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


def test_every_dialled_and_answered_call_reaches_its_owner(fleet: Fleet) -> None:
    fake = fleet.fake
    # --- 200 dialled: 50 from each worker -------------------------------------------------------------
    owner_by_sid: dict[str, int] = {}
    for index in range(WORKERS):
        sids = httpx.post(fleet.url(index, "/_test/dial"), json={"count": CALLS_EACH}, timeout=60).json()["call_sids"]
        owner_by_sid.update({sid: index for sid in sids})
    assert len(owner_by_sid) == WORKERS * CALLS_EACH

    refused: list[str] = []

    def answer(sid: str) -> str:
        call = fake.calls[sid]
        url, _, _ = call.stream()
        assert _port_of(url) == fleet.ports[owner_by_sid[sid]], "stream URL does not point at the dialling worker"
        assert call.status_callback and _port_of(call.status_callback) == fleet.ports[owner_by_sid[sid]]
        token = url.rsplit("/", 1)[-1]
        assert owner_of(token) == f"w{owner_by_sid[sid]}"
        try:
            phone = fake.answer(sid)
        except PhoneRejected as exc:
            refused.append(f"{sid}: {exc}")
            return "refused"
        return "closed" if phone.wait_closed(30) else "still open"

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(answer, owner_by_sid))
    assert refused == []
    assert outcomes.count("closed") == len(owner_by_sid), outcomes

    # --- 200 webhook-answered: posted to the shared port, whichever worker the kernel picks answers --------
    webhook = f"http://127.0.0.1:{fleet.webhook_port}/twilio/voice"

    def inbound(_: int) -> tuple[str, int, str]:
        try:
            call, response, phone = fake.inbound_call(webhook)
        except PhoneRejected as exc:
            refused.append(str(exc))
            return "", -1, "refused"
        assert response.status_code == 200, response.text
        assert phone is not None
        url, _, _ = call.stream()
        return call.sid, fleet.ports.index(_port_of(url)), "closed" if phone.wait_closed(30) else "still open"

    with ThreadPoolExecutor(16) as pool:
        answered = list(pool.map(inbound, range(WORKERS * CALLS_EACH)))
    assert refused == []
    assert [a[2] for a in answered].count("closed") == WORKERS * CALLS_EACH

    # --- what each worker saw -----------------------------------------------------------------------------
    reports = fleet.reports()
    assert len({r["pid"] for r in reports}) == WORKERS
    for index, report in enumerate(reports):
        assert report["worker_id"] == f"w{index}"
        assert report["misdirected"] == 0
        mine = {sid for sid, owner in owner_by_sid.items() if owner == index}
        assert set(report["dialled"]) == mine
        assert set(report["dialled"].values()) == {"spoke"}, report["dialled"]
        # an answered call's stream went to the worker whose webhook answered it, and its flow ran there
        streamed_here = {sid for sid, stream_worker, _ in answered if stream_worker == index}
        assert set(report["answered"]) == streamed_here
        assert set(report["answered"].values()) <= {"spoke"}
    # the kernel spread the webhooks: more than one worker answered
    assert sum(1 for r in reports if r["answered"]) >= 2


def test_stream_at_the_wrong_worker_is_refused_naming_the_owner(fleet: Fleet) -> None:
    fake = fleet.fake
    sid = httpx.post(fleet.url(0, "/_test/dial"), json={"count": 1}, timeout=30).json()["call_sids"][0]
    call = fake.calls[sid]
    url, _, _ = call.stream()
    # a misconfigured proxy sends worker 0's stream to worker 1
    wrong = url.replace(f":{fleet.ports[0]}/", f":{fleet.ports[1]}/")
    phone_headers = {"X-Twilio-Signature": fake.sign(wrong)}
    from voice_runtime.testing import SimulatedPhone

    with pytest.raises(PhoneRejected) as refused:
        SimulatedPhone(wrong, headers=phone_headers).connect()
    assert refused.value.status == 421
    assert "owned by worker w0, not w1" in str(refused.value)
    reports = fleet.reports()
    assert reports[1]["misdirected"] == 1
    # the right worker still serves it
    phone = fake.answer(sid)
    assert phone.wait_closed(30)
    # The flow's last step is recorded just after the phone closes: the worker answers once it is.
    waited = httpx.get(fleet.url(0, "/_test/outcome"), params={"sid": sid, "outcome": "spoke", "timeout": 10}, timeout=20)
    assert waited.json()["outcome"] == "spoke"
    fleet.output.wait_for(re.escape(f"token owned by worker w0 (http://127.0.0.1:{fleet.ports[0]}) arrived at worker w1"), 10)


def test_a_taken_port_fails_the_whole_fleet_before_any_worker_starts() -> None:
    """Worker 1's port taken: ``serve_workers`` raises naming it, forks nothing, and leaves no port bound.

    Before, worker 1 died alone in its child while 0, 2 and 3 served, a fleet with a hole the plan still sent
    calls to (CI saw exactly that when a parallel test's connection held the port).
    """
    ports = free_port_run(WORKERS)
    (webhook_port,) = free_ports(1)
    def build(address: WorkerAddress) -> object:
        # Only a forked child calls this; it would die, and serve_workers would return 1 instead of raising.
        raise AssertionError(f"{address.worker_id} was forked although a port was taken")

    plan = WorkerPlan(WORKERS, ports[0], "http://127.0.0.1:{port}", webhook_port=webhook_port, host="127.0.0.1")
    with socket.create_server(("127.0.0.1", ports[1])):
        with pytest.raises(OSError, match=rf"worker w1: cannot listen on 127\.0\.0\.1 port {ports[1]}: Address already in use"):
            serve_workers(build, plan)
    for port in [ports[0], ports[2], ports[3], webhook_port]:  # everything bound before the failure was closed
        socket.create_server(("127.0.0.1", port)).close()


def test_worker_registry_tokens_and_addresses() -> None:
    from voice_runtime import VoiceServer

    server = VoiceServer()
    registry = install_worker(server, WorkerAddress("w7", "https://voice.example.com/w/7"), peers={"w2": "https://voice.example.com/w/2"})
    assert isinstance(server.registry, WorkerRegistry)
    session = server.new_session()
    token = server.expect_stream(session)
    assert owner_of(token) == "w7"
    assert server.stream_url(token) == f"wss://voice.example.com/w/7/stream/{token}"
    assert registry.misdirected_reason(token) is None
    foreign = "w2." + token.split(".", 1)[1]
    assert registry.misdirected_reason(foreign) == "stream owned by worker w2, not w7"
    assert not registry.peek(foreign)
    assert registry.peek(token)
    assert registry.claim(token) is session
    assert not registry.peek(token)  # single use, as before
    assert owner_of("plainsingleprocesstoken") is None
    with pytest.raises(ValueError):
        WorkerAddress("bad id!", "http://x")


@pytest.mark.parametrize("mode", ["fastapi", "native", "picows"])
def test_every_server_mode_refuses_another_workers_stream_with_421(mode: str) -> None:
    from voice_runtime import VoiceServer
    from voice_runtime.testing import SimulatedPhone

    server = VoiceServer()
    install_worker(server, WorkerAddress("w1", "http://127.0.0.1:1"), peers={"w0": "http://10.0.0.9:8100"})
    if mode == "fastapi":
        running = server.start()
    elif mode == "native":
        from voice_runtime.server.ws_native import start_native

        running = start_native(server)
    else:
        pytest.importorskip("picows", reason="the picows mode needs the [fast] extra: pip install 'voice-runtime[fast]'")
        from voice_runtime.server.ws_picows import start_picows

        running = start_picows(server)
    try:
        with pytest.raises(PhoneRejected) as refused:
            SimulatedPhone(f"{running.ws_url}/stream/w0.{'x' * 24}").connect()
        assert refused.value.status == 421
        assert "stream owned by worker w0, not w1" in str(refused.value)
        assert server.registry.misdirected == 1
        with pytest.raises(PhoneRejected) as unknown:  # this worker's own prefix, unknown token: the usual 403
            SimulatedPhone(f"{running.ws_url}/stream/w1.{'x' * 24}").connect()
        assert unknown.value.status == 403
    finally:
        running.stop()


def test_a_worker_closes_a_half_sent_request_at_its_header_deadline(fleet: Fleet) -> None:
    """Workers are served with the same hardened uvicorn options as every other mode: a half-sent upgrade
    (slowloris) is closed at ``header_timeout`` (10 s by default); plain uvicorn would keep it open forever."""
    with socket.create_connection(("127.0.0.1", fleet.ports[1]), timeout=30) as slow:
        slow.sendall(b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the rest
        slow.settimeout(30)
        started = time.monotonic()
        assert slow.recv(4096) == b""  # closed by the worker, not by our 30 s timeout (that would raise)
        assert time.monotonic() - started < 25
