"""Signature V3: signed with the plivo SDK's own code, validated by its validator; tampering fails everywhere.

Webhooks are exercised over real HTTP (the fake posts them); stream upgrades over a real WebSocket handshake,
where a bad signature must be refused *before* the socket is accepted and before any session exists.
"""

from __future__ import annotations

import logging

import httpx
import pytest
from plivo.utils.signature_v3 import construct_get_url, construct_post_url, get_signature_v3, validate_v3_signature

from voice_runtime.testing import PhoneRejected, SimulatedPhone
from voice_runtime.testing.fake_plivo import plivo_sign_headers
from voice_runtime.transports.plivo_security import (
    NONCE_HEADER,
    SIGNATURE_HEADER,
    PlivoSignatureValidator,
    sign,
    websocket_candidates,
)

from .conftest import PlivoRig

TOKEN = "MY_AUTH_TOKEN"
NONCE = "05429567804466091622"
URL = "https://example.com/answer"
PARAMS = {"CallUUID": "abc", "From": "15550001111"}


def sdk_signature(method: str, uri: str, params: dict[str, str], nonce: str = NONCE, token: str = TOKEN) -> str:
    """Straight from the SDK, independent of our helper."""
    base = construct_post_url(uri, dict(params)) if method == "POST" else construct_get_url(uri, dict(params))
    return get_signature_v3(token.encode(), base.decode(), nonce.encode()).decode()


def test_known_vector_from_the_reference() -> None:
    """telephony-protocols §2.6 CHECKED example."""
    assert sdk_signature("POST", URL, PARAMS) == "dUjcVzVD5PqsUiVgR5mrI1oaT25wIxxOYLZye2wiN6o="
    assert sign(TOKEN, "POST", URL, NONCE, PARAMS) == "dUjcVzVD5PqsUiVgR5mrI1oaT25wIxxOYLZye2wiN6o="


def headers(signature: str, nonce: str = NONCE) -> dict[str, str]:
    return {SIGNATURE_HEADER: signature, NONCE_HEADER: nonce}


def test_validator_accepts_sdk_signatures_and_rejects_tampering() -> None:
    validator = PlivoSignatureValidator(TOKEN, public_url="https://example.com")
    good = sdk_signature("POST", URL, PARAMS)
    assert validate_v3_signature("POST", URL, NONCE, TOKEN, good, dict(PARAMS))
    assert validator.check_webhook("POST", URL, headers(good), PARAMS)
    assert validator.check_webhook("POST", URL, headers(f"bogus=,{good}"), PARAMS)  # any of a comma list
    tampered = {
        "url": ("POST", "https://example.com/answer2", headers(good), PARAMS),
        "body": ("POST", URL, headers(good), {**PARAMS, "From": "15550002222"}),
        "extra param": ("POST", URL, headers(good), {**PARAMS, "To": "1"}),
        "nonce": ("POST", URL, headers(good, nonce=NONCE + "1"), PARAMS),
        "signature": ("POST", URL, headers(good[:-2] + "A="), PARAMS),
        "other token": ("POST", URL, headers(sdk_signature("POST", URL, PARAMS, token="other")), PARAMS),
        "missing nonce": ("POST", URL, {SIGNATURE_HEADER: good}, PARAMS),
        "missing signature": ("POST", URL, {NONCE_HEADER: NONCE}, PARAMS),
    }
    for name, (method, url, hdrs, params) in tampered.items():
        assert not validator.check_webhook(method, url, hdrs, params), name
    assert validator.rejected == len(tampered)


def test_enforcement_opt_out_is_explicit_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        validator = PlivoSignatureValidator(TOKEN, enforce=False)
        assert validator.check_webhook("POST", URL, headers("wrong"), PARAMS)
    assert "DISABLED" in caplog.text and "development only" in caplog.text
    assert PlivoSignatureValidator(TOKEN).enforce is True  # on by default


def test_websocket_candidates_cover_every_documented_form() -> None:
    found = dict(websocket_candidates("ws://10.0.0.5:8080/stream/tok", "https://voice.example.com"))
    assert found["public:wss"] == "wss://voice.example.com/stream/tok"
    assert found["public:https"] == "https://voice.example.com/stream/tok"  # Node stream SDK
    assert found["public:http"] == "http://voice.example.com/stream/tok"
    assert found["public:python-sdk"] == "http://voice.example.com/stream/tok/websocket"  # Python stream SDK
    assert found["request:ws"] == "ws://10.0.0.5:8080/stream/tok"


# ------------------------------------------------------------------------------------------- over the wire
@pytest.mark.timeout(30)
def test_webhook_over_http_rejects_tampered_requests(rig: PlivoRig) -> None:
    server, running = rig.server()
    fake = rig.fake()
    control = rig.control(server, fake)
    url = control.webhook_url("ring")
    params = {"CallUUID": "c-1", "RequestUUID": "r-1", "CallStatus": "ringing"}
    good = plivo_sign_headers(fake.auth_token, "POST", url, params)
    with httpx.Client(timeout=5) as http:
        assert http.post(url, data=params, headers=good).status_code == 204
        assert http.post(url, data={**params, "CallStatus": "busy"}, headers=good).status_code == 403  # body
        assert http.post(url + "?x=1", data=params, headers=good).status_code == 403  # url
        assert http.post(url, data=params, headers={**good, NONCE_HEADER: "1"}).status_code == 403  # nonce
        assert http.post(url, data=params, headers={**good, SIGNATURE_HEADER: "AAAA"}).status_code == 403  # header
        assert http.post(url, data=params).status_code == 403  # unsigned
        answer = control.webhook_url("answer")
        assert http.post(answer, data={"CallUUID": "x"}).status_code == 403  # no flow starts for a forged call
    assert control.validator.rejected == 6


@pytest.mark.timeout(30)
@pytest.mark.parametrize("style, label", [("https", "public:https"), ("http", "public:http"), ("exact", "public:ws"), ("python-sdk", "public:python-sdk")])
def test_upgrade_accepts_each_documented_uri_form_and_logs_it(
    rig: PlivoRig, style: str, label: str, caplog: pytest.LogCaptureFixture
) -> None:
    server, _ = rig.server()
    fake = rig.fake()
    control = rig.control(server, fake)
    outbound = control.dial("+14155551234")
    call = fake.wait_for_call()
    call.fetch_answer()
    with caplog.at_level(logging.INFO, logger="voice_runtime.transports.plivo_security"):
        phone = call.connect_stream(signature=style)
        rig.phones.append(phone)
        outbound.wait_answered(5)
    assert control.validator.matched.get(label) == 1
    assert f"matched the {label!r} URI form" in caplog.text
    assert call.stream_url.rsplit("/", 1)[-1] not in caplog.text  # the per-call token is never logged


@pytest.mark.timeout(30)
@pytest.mark.parametrize("signature", ["bad", "none"])
def test_bad_or_missing_signature_upgrade_refused_before_any_session(rig: PlivoRig, signature: str) -> None:
    flows: list[object] = []
    server, running = rig.server(lambda s: flows.append(s))
    fake = rig.fake()
    control = rig.control(server, fake)
    # a dialled call's routed stream: the token stays unclaimed, the session never attaches
    outbound = control.dial("+14155551234")
    call = fake.wait_for_call()
    call.fetch_answer()
    with pytest.raises(PhoneRejected) as err:
        call.connect_stream(signature=signature)
    assert err.value.status == 403  # refused during the handshake: close-before-accept
    token = call.stream_url.rsplit("/", 1)[-1]
    assert server.registry.peek(token)  # still unused
    assert not outbound.session.is_connected
    # the inbound route: nothing is created either
    headers = {} if signature == "none" else plivo_sign_headers("wrong-token", "GET", running.http_url + "/stream")
    phone = SimulatedPhone(running.ws_url + "/stream", carrier="plivo", headers=headers)
    with pytest.raises(PhoneRejected):
        phone.connect()
    assert server.connections == set() and flows == []
