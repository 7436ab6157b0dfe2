"""Issue 13, fleets: a replay sent to a *second* worker is refused there too, once the guards share a Redis.

Two real servers on loopback stand for two workers behind one load balancer (the same public host: each
request carries the fleet's ``Host``, as a proxy that preserves it sends), and a real ``redis-server``
(``voice_runtime/testing/redis_server.py``) is what they share. Without :func:`share_replay_guards` each
worker's caches are its own and the replay to worker B opens a second session; with it, B answers the same
document and creates nothing. When Redis cannot be reached the guards fail closed (documented in
``voice_runtime/fleet_replay.py``); ``fail_open=True`` keeps each worker's own cache instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from voice_runtime import VoiceServer, create_stt, create_tts
from voice_runtime.fleet_replay import share_replay_guards
from voice_runtime.server import RunningServer
from voice_runtime.session import VoiceSession
from voice_runtime.testing.fake_plivo import FakePlivo, plivo_sign_headers
from voice_runtime.testing.fake_twilio import FakeTwilio
from voice_runtime.testing.redis_server import RedisServer, free_port
from voice_runtime.transports.plivo_control import PlivoCallControl
from voice_runtime.transports.twilio_control import TwilioCallControl


class Flows:
    def __init__(self) -> None:
        self.sessions: list[VoiceSession] = []
        self.lock = threading.Lock()

    def __call__(self, session: VoiceSession) -> None:
        with self.lock:
            self.sessions.append(session)
        session.wait_until_disconnected(30)


@dataclass
class Worker:
    server: VoiceServer
    running: RunningServer
    twilio: TwilioCallControl
    plivo: PlivoCallControl
    flows: Flows

    def url(self, path: str) -> str:
        return self.running.http_url + path


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    if not RedisServer.available():
        pytest.skip("redis-server not installed: apt-get install redis-server (scripts/test.sh does it as root)")
    pytest.importorskip("redis", reason="redis-py not installed: pip install voice-runtime[redis]")
    with RedisServer() as server:
        yield server


@pytest.fixture
def fleet(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., tuple[Worker, Worker, FakeTwilio, FakePlivo]]]:
    """``make(redis=None, fail_open=False)``: two workers with one public host; shared guards when ``redis``."""
    monkeypatch.delenv("TWILIO_SKIP_SIGNATURE_VALIDATION", raising=False)
    monkeypatch.delenv("VOICE_STREAM_URL", raising=False)
    running: list[RunningServer] = []
    with FakeTwilio() as ft, FakePlivo() as fp:

        def make(redis: Any = None, fail_open: bool = False, share_after: bool = False) -> tuple[Worker, Worker, FakeTwilio, FakePlivo]:
            workers = []
            public_url = None
            for _ in range(2):
                flows = Flows()
                server = VoiceServer(stt_factory=lambda: create_stt("mock"), tts_factory=lambda: create_tts("mock"), inbound_flow=flows)
                handle = server.start()
                running.append(handle)
                public_url = public_url or handle.http_url  # worker A's address is the fleet's public name
                server.public_url = public_url
                if redis is not None and not share_after:
                    share_replay_guards(server, redis, fail_open=fail_open)  # before the controls: they pick it up
                tw = TwilioCallControl(server, credentials=ft.credentials(), http_client=ft.http_client(), inbound_stream_timeout=1.0)
                pl = PlivoCallControl(server, auth_id=fp.auth_id, auth_token=fp.auth_token, api_base_url=fp.base_url,
                                      from_number="+14155550000", inbound_connect_timeout=0.5)
                if redis is not None and share_after:
                    share_replay_guards(server, redis, fail_open=fail_open)  # after: the controls are converted
                workers.append(Worker(server, handle, tw, pl, flows))
            return workers[0], workers[1], ft, fp

        try:
            yield make
        finally:
            for handle in running:
                handle.stop()


def _twilio_params(fake: FakeTwilio, n: str) -> dict[str, str]:
    return {"CallSid": "CA" + n * 32, "AccountSid": fake.account_sid, "From": "+15557654321", "To": fake.phone_number,
            "CallStatus": "ringing", "Direction": "inbound"}


def _post_twilio(fake: FakeTwilio, a: Worker, to: Worker, params: dict[str, str]) -> httpx.Response:
    """A signed voice webhook for the fleet's public URL, delivered to worker ``to`` (the balancer's choice)."""
    public = a.url("/twilio/voice")
    return fake.post_signed(to.url("/twilio/voice"), params, sign_url=public, headers={"Host": urlsplit(public).netloc})


@pytest.mark.timeout(60)
def test_without_shared_guards_a_replay_to_another_worker_opens_a_second_session(fleet: Any) -> None:
    """The hole, measured: per-process caches, so worker B answers a captured webhook afresh."""
    a, b, fake, _ = fleet()
    params = _twilio_params(fake, "7")
    first, replay = _post_twilio(fake, a, a, params), _post_twilio(fake, a, b, params)
    assert first.status_code == replay.status_code == 200
    assert b.twilio.session_for_call(params["CallSid"]) is not None, "worker B created a session for the replay"


@pytest.mark.timeout(60)
def test_replayed_twilio_webhook_to_a_second_worker_gets_the_same_twiml_and_creates_nothing(fleet: Any, redis_server: RedisServer) -> None:
    client = redis_server.client(socket_timeout=1.0)
    client.flushall()
    a, b, fake, _ = fleet(client)
    params = _twilio_params(fake, "8")
    pending_b = b.server.registry.pending_count
    first = _post_twilio(fake, a, a, params)
    assert first.status_code == 200 and "<Stream" in first.text
    replays = [_post_twilio(fake, a, b, params) for _ in range(5)]
    assert {r.status_code for r in replays} == {200}
    assert {r.text for r in replays} == {first.text}, "worker B answered a replay with a different document"
    assert b.twilio.session_for_call(params["CallSid"]) is None and not b.flows.sessions
    assert b.server.registry.pending_count == pending_b, "worker B issued a stream token for a replay"
    assert b.twilio.inbound_answers.stats["repeated_elsewhere"] == 5
    assert a.twilio.inbound_answers.stats["answered"] == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("share_after", [False, True], ids=["shared-first", "shared-after-controls"])
def test_replayed_plivo_nonce_to_a_second_worker_is_refused(fleet: Any, redis_server: RedisServer, share_after: bool) -> None:
    client = redis_server.client(socket_timeout=1.0)
    client.flushall()
    a, b, _, fake = fleet(client, share_after=share_after)
    public = a.plivo.webhook_url("answer")
    params = {"CallUUID": "0b6f7c5e-2222-4f00-9a00-000000000002", "From": "+14155550100", "To": "+14155550199",
              "Direction": "inbound", "CallStatus": "ringing"}
    captured = plivo_sign_headers(fake.auth_token, "POST", public, params)
    host = {"Host": urlsplit(public).netloc}
    with httpx.Client(timeout=10) as http:
        first = http.post(public, data=params, headers=captured)
        assert first.status_code == 200 and "<Stream" in first.text
        replay = http.post(b.url(urlsplit(public).path), data=params, headers={**captured, **host})
        assert replay.status_code == 403, "worker B accepted a nonce worker A had already seen"
        # a genuine retry (fresh nonce) to worker B: the same XML, nothing new
        retry = http.post(b.url(urlsplit(public).path), data=params,
                          headers={**plivo_sign_headers(fake.auth_token, "POST", public, params), **host})
        assert retry.status_code == 200 and retry.text == first.text
    assert b.plivo.validator.replays == 1 and not b.flows.sessions


def _unreachable_redis() -> Any:
    import redis

    return redis.Redis(host="127.0.0.1", port=free_port(), socket_timeout=0.5, socket_connect_timeout=0.5)


@pytest.mark.timeout(60)
def test_unreachable_redis_fails_closed(fleet: Any, caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("redis", reason="redis-py not installed: pip install voice-runtime[redis]")
    a, _, fake, plivo = fleet(_unreachable_redis())
    answer = _post_twilio(fake, a, a, _twilio_params(fake, "9"))
    assert answer.status_code == 503 and answer.headers.get("retry-after"), "an unguardable webhook was answered"
    assert not a.flows.sessions and a.twilio.session_for_call("CA" + "9" * 32) is None
    public = a.plivo.webhook_url("answer")
    params = {"CallUUID": "0b6f7c5e-3333-4f00-9a00-000000000003", "From": "+1415", "To": "+1416", "Direction": "inbound"}
    refused = httpx.post(public, data=params, headers=plivo_sign_headers(plivo.auth_token, "POST", public, params), timeout=10)
    assert refused.status_code == 403  # the nonce cannot be proven fresh
    assert a.twilio.inbound_answers.redis_stats["redis_unavailable"] >= 1
    assert a.plivo.validator.nonces.stats["redis_unavailable"] == 1
    assert a.server.start_guard.seen.first_use("CA" + "a" * 32) is False  # /stream's start: refused too


@pytest.mark.timeout(60)
def test_unreachable_redis_with_fail_open_keeps_each_workers_own_guard(fleet: Any) -> None:
    pytest.importorskip("redis", reason="redis-py not installed: pip install voice-runtime[redis]")
    a, _, fake, _ = fleet(_unreachable_redis(), fail_open=True)
    params = _twilio_params(fake, "b")
    first, again = _post_twilio(fake, a, a, params), _post_twilio(fake, a, a, params)
    assert first.status_code == again.status_code == 200 and "<Stream" in first.text
    assert again.text == first.text and a.twilio.inbound_answers.stats["answered"] == 1
    seen = a.server.start_guard.seen
    assert seen.first_use("CA" + "c" * 32) is True and seen.first_use("CA" + "c" * 32) is False
