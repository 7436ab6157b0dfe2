"""Issue 13, webhooks and admission: the holes an attacker found, each probed again over real loopback sockets.

* bounded bodies on every carrier route (413 *before* the body is read: the probe never sends it);
* one session and one flow per carrier call, however often its signed webhook is replayed or retried, and
  the same answer document each time; a replayed Plivo nonce refused; the call map never re-pointed;
* a Plivo inbound token that dies when its stream misses ``inbound_connect_timeout``;
* forwarded headers believed only from configured proxies, and only web schemes;
* fail-closed unsigned-stream policy, logged once at startup;
* the tokenless ``/stream`` route: one session per CallSid, and per-call tickets checked on ``start``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import xml.etree.ElementTree as ET
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from voice_runtime import VoiceServer, create_stt, create_tts
from voice_runtime.server import RunningServer
from voice_runtime.server.stream_tickets import PARAMETER, StreamTickets
from voice_runtime.session import VoiceSession
from voice_runtime.testing import PhoneRejected, SimulatedPhone
from voice_runtime.testing.fake_plivo import FakePlivo, plivo_sign_headers
from voice_runtime.testing.fake_twilio import FakeTwilio
from voice_runtime.transports.forwarded import ForwardedHeaders, reconstruct_url
from voice_runtime.transports.plivo_control import PlivoCallControl
from voice_runtime.transports.twilio_control import TwilioCallControl
from voice_runtime.transports.webhooks import InboundAnswers, NonceCache

PLIVO_ROUTES = ["answer", "hangup", "ring", "machine", "stream-status"]
TWILIO_ROUTES = ["voice", "status", "stream-status", "amd"]


class Flows:
    """Counts flow starts (one per session the server created for a call)."""

    def __init__(self) -> None:
        self.sessions: list[VoiceSession] = []
        self.cond = threading.Condition()

    def __call__(self, session: VoiceSession) -> None:
        with self.cond:
            self.sessions.append(session)
            self.cond.notify_all()
        session.wait_until_disconnected(30)

    def wait(self, n: int, timeout: float = 10.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.sessions) >= n, timeout)


@dataclass
class Stack:
    server: VoiceServer
    running: RunningServer
    twilio: TwilioCallControl
    plivo: PlivoCallControl
    fake_twilio: FakeTwilio
    fake_plivo: FakePlivo
    flows: Flows

    def url(self, path: str) -> str:
        return self.running.http_url + path


def _make(monkeypatch: pytest.MonkeyPatch, **control_kwargs: Any) -> Iterator[Stack]:
    monkeypatch.delenv("TWILIO_SKIP_SIGNATURE_VALIDATION", raising=False)
    monkeypatch.delenv("VOICE_STREAM_URL", raising=False)
    flows = Flows()
    control_kwargs.setdefault("inbound_stream_timeout", 1.0)  # answered-but-never-streamed flows end quickly
    with FakeTwilio() as ft, FakePlivo() as fp:
        server = VoiceServer(stt_factory=lambda: create_stt("mock"), tts_factory=lambda: create_tts("mock"), inbound_flow=flows)
        running = server.start()
        server.public_url = running.http_url
        tw = TwilioCallControl(server, credentials=ft.credentials(), http_client=ft.http_client(), **control_kwargs)
        pl = PlivoCallControl(
            server, auth_id=fp.auth_id, auth_token=fp.auth_token, api_base_url=fp.base_url, from_number="+14155550000",
            inbound_connect_timeout=0.5,
        )
        try:
            yield Stack(server, running, tw, pl, ft, fp, flows)
        finally:
            running.stop()


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    yield from _make(monkeypatch)


# ------------------------------------------------------------------------------------------- bounded bodies
def _declare_huge_body(host: str, port: int, path: str, size: int = 48 * 1024 * 1024) -> bytes:
    """Send only the headers of a ``size``-byte POST and read the answer: a 413 here was sent unread."""
    with socket.create_connection((host, port), timeout=10) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {size}\r\n\r\n"
        )
        sock.sendall(head.encode() + b"a=" + b"x" * 1000)
        sock.settimeout(10)
        return sock.recv(4096)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("route", [f"/plivo/{r}" for r in PLIVO_ROUTES] + [f"/twilio/{r}" for r in TWILIO_ROUTES])
def test_declared_oversized_body_refused_413_before_it_is_sent(stack: Stack, route: str) -> None:
    answer = _declare_huge_body(stack.running.host, stack.running.port, route)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:80]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("route", ["/plivo/hangup", "/plivo/ring", "/twilio/status"])
def test_chunked_oversized_body_refused_413(stack: Stack, route: str) -> None:
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        yield b"a="
        for _ in range(2000):  # up to 32 MiB if nobody stops us
            sent += 16384
            yield b"x" * 16384

    try:
        response = httpx.post(stack.url(route), content=chunks(), headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert response.status_code == 413
    except httpx.HTTPError:
        pass  # the server answered 413 and closed while we were still sending: the same refusal
    assert sent < 4 * 1024 * 1024, f"the server kept reading: {sent} bytes sent"


# ------------------------------------------------------------------------------------------- idempotent answers
@pytest.mark.timeout(60)
def test_replayed_twilio_voice_webhook_gets_one_session_one_flow_same_twiml(stack: Stack) -> None:
    fake = stack.fake_twilio
    url = stack.url("/twilio/voice")
    params = {"CallSid": "CA" + "1" * 32, "AccountSid": fake.account_sid, "From": "+15557654321", "To": fake.phone_number,
              "CallStatus": "ringing", "Direction": "inbound"}
    pending_before = stack.server.registry.pending_count
    answers = [fake.post_signed(url, params) for _ in range(25)]
    assert {a.status_code for a in answers} == {200}
    assert len({a.text for a in answers}) == 1, "a replay got a different answer document"
    assert "<Stream" in answers[0].text
    assert stack.server.registry.pending_count == pending_before + 1, "replays issued extra stream tokens"
    assert len(stack.server.flow_threads) == 1, "replays started extra flows"
    assert stack.twilio.inbound_answers.stats["repeated"] == 24
    original = stack.twilio.session_for_call(params["CallSid"])
    assert original is not None
    # the call map is never re-pointed: neither by replays nor by a direct attempt
    assert stack.twilio.track(params["CallSid"], VoiceSession()) is False
    assert stack.twilio.session_for_call(params["CallSid"]) is original


@pytest.mark.timeout(60)
def test_concurrent_twilio_webhook_retries_build_the_answer_once(stack: Stack) -> None:
    fake = stack.fake_twilio
    url = stack.url("/twilio/voice")
    params = {"CallSid": "CA" + "2" * 32, "AccountSid": fake.account_sid, "From": "+15557654321", "To": fake.phone_number}
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def post() -> None:
        response = fake.post_signed(url, params)
        with lock:
            results.append(response)

    threads = [threading.Thread(target=post) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(results) == 10 and {r.status_code for r in results} == {200}
    assert len({r.text for r in results}) == 1
    assert stack.twilio.inbound_answers.stats["answered"] == 1


@pytest.mark.timeout(60)
def test_replayed_plivo_answer_same_xml_and_replayed_nonce_refused(stack: Stack) -> None:
    url = stack.plivo.webhook_url("answer")
    params = {"CallUUID": "0b6f7c5e-1111-4f00-9a00-000000000001", "From": "+14155550100", "To": "+14155550199",
              "Direction": "inbound", "CallStatus": "ringing"}
    pending_before = stack.server.registry.pending_count
    with httpx.Client(timeout=10) as http:
        first_headers = plivo_sign_headers(stack.fake_plivo.auth_token, "POST", url, params)
        first = http.post(url, data=params, headers=first_headers)
        assert first.status_code == 200 and "<Stream" in first.text
        # a retry (fresh nonce, valid signature): the same XML, nothing new
        again = [http.post(url, data=params, headers=plivo_sign_headers(stack.fake_plivo.auth_token, "POST", url, params)) for _ in range(10)]
        assert {r.status_code for r in again} == {200} and {r.text for r in again} == {first.text}
        # a replay of the captured request (same nonce): refused outright
        assert http.post(url, data=params, headers=first_headers).status_code == 403
    assert stack.plivo.validator.replays == 1
    assert stack.plivo.inbound_answers.stats["answered"] == 1
    assert stack.server.registry.pending_count <= pending_before + 1, "replays issued extra stream tokens"
    assert len(stack.server.flow_threads) == 1, "replays started extra flows"


@pytest.mark.timeout(60)
def test_replayed_plivo_upgrade_nonce_refused(stack: Stack) -> None:
    """A signed upgrade to the tokenless route, captured and played again (even with a new call id): 403."""
    url = stack.running.ws_url + "/stream"
    headers = plivo_sign_headers(stack.fake_plivo.auth_token, "GET", url.replace("ws://", "https://"))
    first = SimulatedPhone(url, carrier="plivo", headers=headers)
    replay = SimulatedPhone(url, carrier="plivo", headers=headers)
    try:
        first.connect()
        assert stack.flows.wait(1)
        with pytest.raises(PhoneRejected) as refused:
            replay.connect()
        assert refused.value.status == 403
    finally:
        first.close()
        replay.close()
    assert stack.plivo.validator.replays == 1 and len(stack.flows.sessions) == 1


# ------------------------------------------------------------------------------------------- tokens on failure
@pytest.mark.timeout(60)
def test_plivo_inbound_token_revoked_when_stream_misses_connect_timeout(stack: Stack) -> None:
    url = stack.plivo.webhook_url("answer")
    params = {"CallUUID": "0b6f7c5e-2222-4f00-9a00-000000000002", "From": "+14155550100", "To": "+14155550199"}
    hook = stack.fake_plivo.post_webhook("answer", url, params)
    assert hook.status == 200
    stream_url = (ET.fromstring(hook.body).find("./Stream").text or "").strip()  # type: ignore[union-attr]
    token = stream_url.rsplit("/", 1)[-1]
    session = stack.plivo.session_for_call(params["CallUUID"])
    assert session is not None and stack.server.registry.peek(token)
    # the flow's wait_for_ws_connect gives up after 0.5 s and ends the session; its token dies with it
    assert session.wait_until_disconnected(10)
    assert session.end_reason == "stream_never_connected"
    assert not stack.server.registry.peek(token)
    headers = plivo_sign_headers(stack.fake_plivo.auth_token, "GET", stream_url.replace("ws://", "https://"))
    late = SimulatedPhone(stream_url, carrier="plivo", headers=headers)
    with pytest.raises(PhoneRejected) as refused:
        late.connect()
    assert refused.value.status == 403
    late.close()
    assert stack.server.connections == set()


# ------------------------------------------------------------------------------------------- trusted proxies
def test_forwarded_headers_only_from_configured_proxies() -> None:
    scope = {"type": "http", "scheme": "http", "client": ("203.0.113.9", 5555), "raw_path": b"/twilio/voice", "query_string": b""}
    headers = {"host": "10.0.0.5:8080", "x-forwarded-host": "staging.example.com", "x-forwarded-proto": "https"}
    assert ForwardedHeaders("127.0.0.1").request_url(scope, headers) == "http://10.0.0.5:8080/twilio/voice"
    assert ForwardedHeaders("203.0.113.0/24").request_url(scope, headers) == "https://staging.example.com/twilio/voice"
    assert ForwardedHeaders("*").trusts(scope)
    assert ForwardedHeaders(environ={"FORWARDED_ALLOW_IPS": "203.0.113.9"}).trusts(scope)
    assert not ForwardedHeaders(environ={}).trusts(scope)  # default: 127.0.0.1 only
    odd = {**headers, "x-forwarded-proto": "ftp"}
    assert reconstruct_url(scope, odd, trust_forwarded=True).startswith("http://staging.example.com/")
    assert reconstruct_url(scope, {**odd, "x-forwarded-proto": "wss"}, websocket=True, trust_forwarded=True).startswith("wss://")


@pytest.mark.timeout(60)
def test_spoofed_forwarded_host_from_untrusted_peer_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    gen = _make(monkeypatch, forwarded_allow_ips="192.0.2.1")  # a proxy that is not us
    stack = next(gen)
    try:
        fake = stack.fake_twilio
        params = {"CallSid": "CA" + "3" * 32, "AccountSid": fake.account_sid, "From": "+15557654321"}
        staging = "https://staging.example.com/twilio/status"
        spoof = {"X-Forwarded-Host": "staging.example.com", "X-Forwarded-Proto": "https"}
        response = fake.post_signed(stack.url("/twilio/status"), {**params, "CallStatus": "completed"}, sign_url=staging, headers=spoof)
        assert response.status_code == 403
    finally:
        gen.close()


@pytest.mark.timeout(60)
def test_forwarded_headers_from_the_trusted_proxy_and_only_web_schemes(stack: Stack) -> None:
    fake = stack.fake_twilio
    params = {"CallSid": "CA" + "4" * 32, "AccountSid": fake.account_sid, "CallStatus": "completed"}
    public = "https://voice.example.com/twilio/status"
    proxy = {"X-Forwarded-Host": "voice.example.com", "X-Forwarded-Proto": "https"}
    assert fake.post_signed(stack.url("/twilio/status"), params, sign_url=public, headers=proxy).status_code == 204
    ftp = {"X-Forwarded-Host": "voice.example.com", "X-Forwarded-Proto": "ftp"}
    signed_ftp = "ftp://voice.example.com/twilio/status"
    assert fake.post_signed(stack.url("/twilio/status"), params, sign_url=signed_ftp, headers=ftp).status_code == 403


# ------------------------------------------------------------------------------------------- fail closed
@pytest.mark.timeout(60)
def test_public_https_url_refuses_unsigned_streams_unless_allowed(caplog: pytest.LogCaptureFixture) -> None:
    server = VoiceServer(stt_factory=lambda: create_stt("mock"), tts_factory=lambda: create_tts("mock"),
                         public_url="https://voice.example.com")
    with caplog.at_level(logging.WARNING):
        running = server.start()
    try:
        assert "UNSIGNED" not in caplog.text
        phone = SimulatedPhone(running.ws_url + "/stream")
        with pytest.raises(PhoneRejected) as refused:
            phone.connect()
        assert refused.value.status == 403
        phone.close()
        server.allow_unsigned_streams = True
        phone = SimulatedPhone(running.ws_url + "/stream").connect()
        phone.close()
    finally:
        running.stop()


def test_unsigned_policy_warned_once_at_startup_with_the_way_out(caplog: pytest.LogCaptureFixture) -> None:
    flows = Flows()
    server = VoiceServer(stt_factory=lambda: create_stt("mock"), tts_factory=lambda: create_tts("mock"), inbound_flow=flows)
    with caplog.at_level(logging.WARNING):
        running = server.start()
        try:
            startup = [r for r in caplog.records if "UNSIGNED" in r.getMessage()]
            assert len(startup) == 1 and startup[0].levelno == logging.WARNING
            assert "allow_unsigned_streams = False" in startup[0].getMessage()
            for _ in range(2):
                SimulatedPhone(running.ws_url + "/stream").connect().close()
            assert flows.wait(2)
        finally:
            running.stop()
    assert len([r for r in caplog.records if "UNSIGNED" in r.getMessage()]) == 1


# ------------------------------------------------------------------------------------------- tokenless route
@pytest.mark.timeout(60)
def test_replayed_signed_tokenless_upgrade_opens_one_session(stack: Stack) -> None:
    fake = stack.fake_twilio
    url = stack.running.ws_url + "/stream"
    headers = {"X-Twilio-Signature": fake.sign(url)}
    call_sid = "CA" + "5" * 32
    phones = [SimulatedPhone(url, headers=headers, call_id=call_sid) for _ in range(5)]
    try:
        phones[0].connect()
        assert stack.flows.wait(1)
        for replay in phones[1:]:
            replay.connect()
            assert replay.wait_closed(10) and replay.close_code == 1008
        assert len(stack.flows.sessions) == 1
        assert stack.server.start_guard.stats["refused_repeated_call"] == 4
    finally:
        for phone in phones:
            phone.close()


@pytest.mark.timeout(60)
def test_stream_tickets_bind_a_start_to_its_callsid_and_expire(harness: Any) -> None:
    flows = Flows()
    server, running = harness.serve(flows)
    tickets = StreamTickets("a-test-secret-of-enough-length", ttl=60)
    server.stream_tickets = tickets
    url = running.ws_url + "/stream"
    sid_a, sid_b = "CA" + "a" * 32, "CA" + "b" * 32
    refused = [
        {},  # no ticket
        {PARAMETER: tickets.issue(sid_b)},  # another call's ticket
        {PARAMETER: tickets.issue(sid_a, now=0)},  # expired
        {PARAMETER: "123.deadbeef"},  # forged
    ]
    for params in refused:
        phone = harness.phone(running, custom_parameters=params, call_id=sid_a)
        assert phone.wait_closed(10) and phone.close_code == 1008, params
    assert not flows.sessions
    good = harness.phone(running, custom_parameters=tickets.parameters(sid_a), call_id=sid_a)
    assert flows.wait(1)
    good.hangup()
    replay = harness.phone(running, custom_parameters=tickets.parameters(sid_a), call_id=sid_a)
    assert replay.wait_closed(10) and replay.close_code == 1008
    assert len(flows.sessions) == 1
    with pytest.raises(ValueError):
        StreamTickets("short")


# ------------------------------------------------------------------------------------------- units
def test_nonce_cache_expires_and_stays_bounded() -> None:
    now = [0.0]
    cache = NonceCache(ttl=10, max_size=3, clock=lambda: now[0])
    assert cache.first_use("a") and not cache.first_use("a")
    now[0] = 11
    assert cache.first_use("a"), "an expired nonce is forgotten"
    for n in "bcde":
        assert cache.first_use(n)
    assert len(cache) == 3 and cache.stats["evicted_early"] >= 1


def test_inbound_answers_do_not_remember_refusals() -> None:
    asyncio.run(_answers_scenario())


async def _answers_scenario() -> None:
    answers = InboundAnswers()
    built: list[str] = []

    async def refuse() -> str | None:
        built.append("refuse")
        return None

    async def accept() -> str | None:
        built.append("accept")
        return "<Response/>"

    assert await answers.answer("c1", refuse) == (None, True)
    assert await answers.answer("c1", accept) == ("<Response/>", True)
    assert await answers.answer("c1", accept) == ("<Response/>", False)
    assert built == ["refuse", "accept"]
