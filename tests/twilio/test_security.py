"""Signature checks on webhooks and stream upgrades (signed with the SDK's validator), and log redaction.

Everything goes over real loopback sockets: webhooks are posted by the fake Twilio (httpx), upgrades are made by
the simulated phone (websockets) against the real uvicorn server.
"""

from __future__ import annotations

import hashlib
import json
import logging

import httpx
import pytest

from voice_runtime import VoiceServer, create_stt, create_tts
from voice_runtime.errors import ConfigError
from voice_runtime.testing import PhoneRejected, SimulatedPhone
from voice_runtime.testing.fake_twilio import FakeTwilio
from voice_runtime.transports.twilio_control import TwilioCallControl
from voice_runtime.transports.twilio_security import (
    REDACTED,
    SecretRedactingFilter,
    TwilioSignatureValidator,
    reconstruct_url,
)

from .conftest import Stack


def status_params(fake: FakeTwilio, call_sid: str, status: str = "ringing") -> dict[str, str]:
    return {"AccountSid": fake.account_sid, "CallSid": call_sid, "CallStatus": status, "From": "+1555", "To": "+1556"}


# ------------------------------------------------------------------------------------------------ pure checks
def test_sdk_validator_known_vector() -> None:
    """Twilio's documented example, through our wrapper (form variant)."""
    validator = TwilioSignatureValidator("12345")
    body = "CallSid=CA1234567890ABCDE&Caller=%2B12349013030&Digits=1234&From=%2B12349013030&To=%2B18005551212"
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert validator.check_form(url, body, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")[0]
    assert not validator.check_form(url, body.replace("1234&", "1235&"), "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")[0]
    assert not validator.check_form(url.replace("foo=1", "foo=2"), body, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")[0]
    assert not validator.check_form(url, body, None)[0]
    assert validator.stats["valid"] == 1 and validator.stats["invalid"] == 2 and validator.stats["missing"] == 1


def test_url_reconstruction_honours_forwarded_headers() -> None:
    scope = {"scheme": "http", "raw_path": b"/twilio/status%2Fx", "query_string": b"a=1&b=%20", "server": ("10.0.0.5", 8080)}
    headers = {"host": "10.0.0.5:8080", "x-forwarded-proto": "https, http", "x-forwarded-host": "voice.example.com"}
    assert reconstruct_url(scope, headers) == "https://voice.example.com/twilio/status%2Fx?a=1&b=%20"
    assert reconstruct_url(scope, headers, trust_forwarded=False) == "http://10.0.0.5:8080/twilio/status%2Fx?a=1&b=%20"
    ws_scope = {"scheme": "ws", "raw_path": b"/stream/tok", "query_string": b""}
    assert reconstruct_url(ws_scope, headers, websocket=True) == "wss://voice.example.com/stream/tok"
    assert reconstruct_url(ws_scope, {"host": "h:1"}, websocket=True) == "ws://h:1/stream/tok"


def test_validation_needs_a_token_unless_opted_out(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("TWILIO_SKIP_SIGNATURE_VALIDATION", raising=False)
    with pytest.raises(ConfigError, match="TWILIO_SKIP_SIGNATURE_VALIDATION"):
        TwilioSignatureValidator(None)
    with caplog.at_level(logging.WARNING):
        validator = TwilioSignatureValidator(None, environ={"TWILIO_SKIP_SIGNATURE_VALIDATION": "1"})
    assert not validator.enabled
    assert "DISABLED" in caplog.text and "Development only" in caplog.text
    assert validator.check_form("https://x/y", "a=1", None)[0] and validator.stats["skipped"] == 1


# ------------------------------------------------------------------------------------------------ webhooks
def test_webhooks_refuse_bad_signatures(stack: Stack) -> None:
    fake, url = stack.fake, stack.url("/twilio/status")
    outbound = stack.control.dial("+15551234567")
    params = status_params(fake, outbound.call_id)
    assert fake.post_signed(url, params).status_code == 204
    # tampered body: sign one value, send another
    good = fake.sign(url, params)
    assert fake.post_signed(url, {**params, "CallStatus": "completed"}, signature=good).status_code == 403
    # tampered URL: signed for another path
    assert fake.post_signed(url, params, sign_url=stack.url("/twilio/amd")).status_code == 403
    # tampered header / wrong token / missing header
    assert fake.post_signed(url, params, signature=good[:-2] + "AA").status_code == 403
    other = FakeTwilio(account_sid=fake.account_sid, auth_token="not-the-token")
    assert fake.post_signed(url, params, signature=other.sign(url, params)).status_code == 403
    assert httpx.post(url, data=params).status_code == 403
    # none of the refused callbacks reached the session
    statuses = [e.data["status"] for e in outbound.session.events if e.kind == "call_status"]
    assert statuses == ["ringing"] and not outbound.session.is_disconnected
    assert stack.control.validator.stats["valid"] == 1 and stack.control.validator.stats["invalid"] >= 4


def test_inbound_webhook_forged_creates_nothing(stack: Stack) -> None:
    stack.control.on_inbound_call(lambda session: None)
    pending = stack.server.registry.pending_count
    response = httpx.post(stack.url("/twilio/voice"), data={"CallSid": "CA" + "1" * 32, "From": "+1555"},
                          headers={"X-Twilio-Signature": "bm9wZQ=="})
    assert response.status_code == 403
    assert stack.server.registry.pending_count == pending and stack.server.flow_threads == set()


def test_webhook_behind_proxy_validates_public_url(stack: Stack) -> None:
    """Twilio signed https://voice.example.com/...; we see http://127.0.0.1:port/... plus X-Forwarded-*."""
    fake = stack.fake
    outbound = stack.control.dial("+15551234567")
    params = status_params(fake, outbound.call_id)
    public = "https://voice.example.com/twilio/status"
    proxy_headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "voice.example.com"}
    assert fake.post_signed(stack.url("/twilio/status"), params, sign_url=public, headers=proxy_headers).status_code == 204
    # without the forwarded headers the same signature is (correctly) for a different URL
    assert fake.post_signed(stack.url("/twilio/status"), params, sign_url=public).status_code == 403


def test_json_webhook_with_body_hash(stack: Stack) -> None:
    fake = stack.fake
    outbound = stack.control.dial("+15551234567")
    body = json.dumps({"CallSid": outbound.call_id, "AnsweredBy": "human"})
    url = stack.url("/twilio/amd") + "?bodySHA256=" + hashlib.sha256(body.encode()).hexdigest()
    headers = {"Content-Type": "application/json", "X-Twilio-Signature": fake.sign(url, {})}
    assert httpx.post(url, content=body, headers=headers).status_code == 204
    assert outbound.session.wait_for_answered_by(5) == "human"
    tampered = body.replace("human", "fax")
    assert httpx.post(url, content=tampered, headers=headers).status_code == 403
    no_hash = stack.url("/twilio/amd")
    headers = {"Content-Type": "application/json", "X-Twilio-Signature": fake.sign(no_hash, {})}
    assert httpx.post(no_hash, content=body, headers=headers).status_code == 403


def test_oversized_webhook_body_refused(stack: Stack) -> None:
    response = httpx.post(stack.url("/twilio/status"), content=b"a=" + b"x" * 200_000,
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 413


# ------------------------------------------------------------------------------------------------ stream upgrades
def test_upgrade_signature_checked_before_accept(stack: Stack) -> None:
    fake = stack.fake
    outbound = stack.control.dial("+15551234567")
    call = fake.calls[outbound.call_id]
    url = call.stream()[0]
    pending = stack.server.registry.pending_count
    bad_signatures = [
        {"X-Twilio-Signature": fake.sign(url + "x")},  # signed for another URL
        {"X-Twilio-Signature": fake.sign(url.replace("ws://", "wss://"))},  # wrong scheme
        {"X-Twilio-Signature": "AAAA" + fake.sign(url)[4:]},  # tampered header
        {},  # unsigned
    ]
    for headers in bad_signatures:
        phone = SimulatedPhone(url, headers=headers, call_id=call.sid)
        with pytest.raises(PhoneRejected) as caught:
            phone.connect()
        assert caught.value.status == 403
        phone.close()
    # no session state: the token is still pending, nothing connected, no connection objects
    assert stack.server.registry.pending_count == pending
    assert not outbound.session.is_connected and stack.server.connections == set()
    phone = fake.answer(call.sid, callbacks=False)  # the genuine Twilio upgrade still works
    try:
        outbound.wait_answered(5)
        assert outbound.session.stream_sid == call.stream_sid
    finally:
        phone.hangup()


def test_unknown_and_reused_tokens_are_refused(stack: Stack) -> None:
    fake = stack.fake
    outbound = stack.control.dial("+15551234567")
    call = fake.calls[outbound.call_id]
    url = call.stream()[0]
    forged = url.rsplit("/", 1)[0] + "/not-a-real-token"
    phone = SimulatedPhone(forged, headers={"X-Twilio-Signature": fake.sign(forged)})
    with pytest.raises(PhoneRejected) as caught:
        phone.connect()
    assert caught.value.status == 403
    phone.close()
    first = fake.answer(call.sid, callbacks=False)
    outbound.wait_answered(5)
    replay = SimulatedPhone(url, headers={"X-Twilio-Signature": fake.sign(url)}, call_id=call.sid)
    with pytest.raises(PhoneRejected) as caught:
        replay.connect()  # a valid signature, but the token was used
    assert caught.value.status == 403
    replay.close()
    assert len(stack.server.connections) == 1
    first.hangup()


def test_opt_out_admits_unsigned_streams_with_a_warning(
    fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TWILIO_SKIP_SIGNATURE_VALIDATION", "true")
    server = VoiceServer(stt_factory=lambda: create_stt("mock"), tts_factory=lambda: create_tts("mock"))
    with caplog.at_level(logging.WARNING):
        control = TwilioCallControl(server, credentials=fake.credentials(), http_client=fake.http_client())
    assert "DISABLED" in caplog.text
    running = server.start()
    try:
        server.public_url = running.http_url
        outbound = control.dial("+15551234567")
        phone = fake.connect_stream(fake.calls[outbound.call_id], signed=False)
        outbound.wait_answered(5)
        phone.hangup()
        assert httpx.post(running.http_url + "/twilio/status", data=status_params(fake, outbound.call_id)).status_code == 204
    finally:
        running.stop()


# ------------------------------------------------------------------------------------------------ redaction
def test_redacting_filter_unit() -> None:
    token = "0123456789abcdef0123456789abcdef"
    redactor = SecretRedactingFilter([token])
    redactor.add_basic_auth("AC" + "1" * 32, token)
    logger = logging.getLogger("tests.twilio.redaction")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(redactor)
    logger.addHandler(handler)
    try:
        logger.warning("token=%s", token)
        logger.warning("headers %s", {"Authorization": "Basic QUMxMTExOnNlY3JldHNlY3JldHNlY3JldA=="})
        try:
            raise RuntimeError(f"failed with {token}")
        except RuntimeError:
            logger.exception("boom")
    finally:
        logger.removeHandler(handler)
    rendered = [logging.Formatter().format(r) for r in records]
    assert all(token not in text for text in rendered)
    assert rendered[0] == f"token={REDACTED}"
    assert "QUMxMTExOnNlY3JldHNlY3JldHNlY3JldA" not in rendered[1]
    assert REDACTED in rendered[2]


def test_control_redacts_its_secrets_from_sdk_logs(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("twilio.http_client").info("leaky %s", stack.fake.auth_token)
    assert stack.fake.auth_token not in caplog.text and REDACTED in caplog.text
    assert stack.fake.auth_token not in repr(stack.control) + repr(stack.control.credentials)
