"""A drain that finishes: at the deadline every late call is hung up over REST at once, each with its own timeout.

Hole 4 of issue 13: REST hangups queued behind the loop's default six-thread executor, so with 60 calls and
1 s of carrier latency 36 of 60 hangups timed out and a call not hung up stays connected (and billed). Here:
200 live calls, a fake Twilio whose every REST request takes 1 s, and a drain whose deadline passes at once.
All 200 must be hung up (a ``Status=completed`` POST each, seen by the fake) before the deadline plus one
REST timeout, and the report must say 200 hung up and 0 failed.

Also here: flows that ignore their hangup are logged with their call id and counted, and the drain says so.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from voice_runtime import CallHangupError, VoiceServer, create_stt, create_tts
from voice_runtime.server import RunningServer
from voice_runtime.session import VoiceSession
from voice_runtime.testing.fake_twilio import FakeTwilio, new_sid
from voice_runtime.transports.twilio_control import TwilioCallControl

from tests.reliability.conftest import server_loop
from tests.reliability.swarm import Swarm

CALLS = 200
LATENCY = 1.0  # seconds per carrier REST request
HANGUP_TIMEOUT = 5.0  # the drain's per-call REST timeout
DEADLINE = 0.2


class FlowsStarted:
    """Counts flows that have seen their call go live, so a test can wait for "all N are up"."""

    def __init__(self) -> None:
        self.count = 0
        self.cond = threading.Condition()

    def started(self) -> None:
        with self.cond:
            self.count += 1
            self.cond.notify_all()

    def wait(self, n: int, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.count >= n, timeout)


def lingering(started: FlowsStarted) -> Any:
    def linger(session: VoiceSession) -> None:
        """A call that would go on forever: only the drain ends it."""
        session.wait_for_ws_connect(30)
        started.started()
        try:
            while True:
                session.listen(timeout=120)
        except CallHangupError:
            pass

    return linger


@pytest.fixture
def twilio_stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[VoiceServer, RunningServer, FakeTwilio, FlowsStarted]]:
    monkeypatch.delenv("TWILIO_SKIP_SIGNATURE_VALIDATION", raising=False)
    started = FlowsStarted()
    with FakeTwilio(latency=LATENCY, completed_callbacks=False, end_streams_on_update=False) as fake:
        server = VoiceServer(
            stt_factory=lambda: create_stt("mock"), tts_factory=lambda: create_tts("mock"), inbound_flow=lingering(started)
        )
        TwilioCallControl(server, credentials=fake.credentials(), http_client=fake.http_client(timeout=HANGUP_TIMEOUT))
        running = server.start()
        server.public_url = running.http_url
        try:
            yield server, running, fake, started
        finally:
            running.stop()


def _drain(running: RunningServer, server: VoiceServer, **kwargs: Any) -> Any:
    loop = server_loop(running)
    return asyncio.run_coroutine_threadsafe(server.drain(**kwargs), loop).result(120)


@pytest.mark.timeout(180)
def test_200_calls_at_1s_carrier_latency_all_hung_up_within_deadline_plus_one_timeout(twilio_stack: Any) -> None:
    server, running, fake, started = twilio_stack
    sids = [fake.add_call().sid for _ in range(CALLS)]
    url = running.ws_url + "/stream"
    with Swarm(url, sids, headers=lambda _sid: {"X-Twilio-Signature": fake.sign(url)}) as swarm:
        swarm.open_all()
        assert started.wait(CALLS, 60), f"only {started.count} of {CALLS} calls came up"

        report = _drain(running, server, deadline=DEADLINE, hangup_timeout=HANGUP_TIMEOUT, flow_grace=5.0)

        assert report.cut_at_deadline == CALLS
        assert report.hung_up == CALLS and report.rest_hangup_failures == 0, report.as_dict()
        assert report.elapsed < DEADLINE + HANGUP_TIMEOUT, f"drain took {report.elapsed:.2f}s"
        hangups = {r.path.rsplit("/", 1)[-1].removesuffix(".json") for r in fake.requests_for("POST", ".json") if r.value("Status") == "completed"}
        assert hangups == set(sids), f"{len(set(sids) - hangups)} calls never got a REST hangup"
        assert not swarm.wait_all_closed(10), "some streams were not closed after their hangup"
        assert {c.close_code for c in swarm.calls} == {1012}
        assert report.flow_threads_left == 0 and report.clean


@pytest.mark.timeout(60)
def test_failed_rest_hangups_are_counted_and_named(twilio_stack: Any) -> None:
    server, running, fake, started = twilio_stack
    sids = [fake.add_call().sid for _ in range(3)]
    fake.latency = 0.0
    fake.fail_next("POST", r"/Calls/CA[0-9a-f]+\.json", status=500, code=20500, times=3)
    url = running.ws_url + "/stream"
    with Swarm(url, sids, headers=lambda _sid: {"X-Twilio-Signature": fake.sign(url)}) as swarm:
        swarm.open_all()
        assert started.wait(3, 30)
        report = _drain(running, server, deadline=DEADLINE, hangup_timeout=HANGUP_TIMEOUT)
    assert report.cut_at_deadline == 3 and report.hung_up == 0 and report.rest_hangup_failures == 3
    assert sorted(report.failed_calls) == sorted(sids)
    assert not report.clean


@pytest.mark.timeout(60)
def test_flow_that_ignores_hangup_is_logged_counted_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    release = threading.Event()
    started = FlowsStarted()

    def stubborn(session: VoiceSession) -> None:
        session.wait_for_ws_connect(30)
        started.started()
        release.wait(30)  # ignores the session entirely: a hangup cannot reach it

    server = VoiceServer(stt_factory=lambda: create_stt("mock"), tts_factory=lambda: create_tts("mock"), inbound_flow=stubborn)
    server.allow_unsigned_streams = True
    server.flow_watch.grace = 0.3
    running = server.start()
    try:
        url = running.ws_url + "/stream"
        with caplog.at_level(logging.WARNING), Swarm(url, ["CA" + "d" * 32]) as swarm:
            swarm.open_all()
            assert started.wait(1, 30)
            report = _drain(running, server, deadline=DEADLINE, flow_grace=0.5)
            assert report.flow_threads_left == 1 and report.flows_left_calls == ["CA" + "d" * 32]
            assert not report.clean
            assert "1 flow thread(s) still running" in caplog.text
            assert server.flow_watch.wait_outlived(1, 10)  # fires grace seconds after the call ended
            assert server.flow_watch.outlived == 1
            assert "flow for call CA" + "d" * 32 + " is still running" in caplog.text
    finally:
        release.set()
        running.stop()
