"""REST hygiene against the loopback fake Twilio: timeouts, region/edge, API keys, hangup outcomes, dial options."""

from __future__ import annotations

import pytest

from voice_runtime.errors import CarrierApiError, ConfigError
from voice_runtime.testing.fake_twilio import FakeTwilio, parse_stream_twiml
from voice_runtime.transports.twilio_call import complete_call, create_call
from voice_runtime.transports.twilio_client import DEFAULT_HTTP_TIMEOUT, TwilioCredentials, build_twilio_client

from .conftest import Stack


def test_every_client_has_a_bounded_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    credentials = TwilioCredentials(account_sid="AC" + "1" * 32, auth_token="t" * 32)
    assert build_twilio_client(credentials).http_client.timeout == DEFAULT_HTTP_TIMEOUT
    env = {"TWILIO_ACCOUNT_SID": "AC" + "1" * 32, "TWILIO_AUTH_TOKEN": "t" * 32, "TWILIO_HTTP_TIMEOUT": "2.5"}
    assert build_twilio_client(TwilioCredentials.from_env(env)).http_client.timeout == 2.5
    for bad in ("0", "-1", "nan", "soon"):
        with pytest.raises(ConfigError, match="TWILIO_HTTP_TIMEOUT"):
            TwilioCredentials.from_env({**env, "TWILIO_HTTP_TIMEOUT": bad})


def test_credentials_never_in_repr() -> None:
    credentials = TwilioCredentials(account_sid="AC" + "1" * 32, auth_token="secret-token-value", api_key_sid=None)
    assert "secret-token-value" not in repr(credentials)
    with pytest.raises(ConfigError, match="TWILIO_AUTH_TOKEN"):
        TwilioCredentials(account_sid="AC" + "1" * 32)
    with pytest.raises(ConfigError, match="TWILIO_ACCOUNT_SID"):
        TwilioCredentials(account_sid="", auth_token="x")


def test_region_and_edge_route_the_sdk(fake: FakeTwilio) -> None:
    client = fake.client(region="ie1", edge="dublin")
    create_call(client, to="+15551234567", from_=fake.phone_number, twiml="<Response/>")
    (request,) = fake.requests_for("POST", "/Calls.json")
    assert request.original_host == "api.dublin.ie1.twilio.com"


def test_api_key_authenticates_rest(fake: FakeTwilio) -> None:
    fake.api_keys["SK" + "2" * 32] = "key-secret-value"
    client = fake.client(auth_token=None, api_key_sid="SK" + "2" * 32, api_key_secret="key-secret-value")
    create_call(client, to="+15551234567", from_=fake.phone_number, twiml="<Response/>")
    (request,) = fake.requests_for("POST", "/Calls.json")
    assert request.auth_user == "SK" + "2" * 32 and request.auth_ok
    assert request.path.startswith(f"/2010-04-01/Accounts/{fake.account_sid}/")  # the key is scoped to the account


def test_bad_credentials_give_code_20003_without_the_secret(fake: FakeTwilio) -> None:
    client = fake.client(auth_token="wrong-token-abcdef")
    with pytest.raises(CarrierApiError) as caught:
        create_call(client, to="+15551234567", from_=fake.phone_number, twiml="<Response/>")
    assert caught.value.code == 20003 and caught.value.status == 401
    assert "wrong-token-abcdef" not in str(caught.value)


def test_hangup_outcomes(fake: FakeTwilio) -> None:
    client = fake.client()
    sid = create_call(client, to="+15551234567", from_=fake.phone_number, twiml="<Response/>")
    assert complete_call(client, sid) is True
    assert complete_call(client, sid) is True  # Twilio answers 200 for an already-completed call
    assert complete_call(client, "CA" + "f" * 32) is False  # 404 / 20404
    fake.fail_next("POST", rf"/Calls/{sid}\.json$", status=400, code=21220, message="Call is not in-progress.")
    assert complete_call(client, sid) is False
    fake.fail_next("POST", rf"/Calls/{sid}\.json$", status=500, code=20500, message="Internal Server Error")
    with pytest.raises(CarrierApiError) as caught:
        complete_call(client, sid)
    assert caught.value.code == 20500 and caught.value.retryable
    with pytest.raises(ValueError):
        complete_call(client, "../Messages")
    hangups = [r for r in fake.requests if r.path.endswith(f"/Calls/{sid}.json")]
    assert all(r.method == "POST" and r.form == [("Status", "completed")] for r in hangups)
    assert fake.requests_for("DELETE", ".json") == []


def test_stalled_rest_request_times_out(fake: FakeTwilio) -> None:
    """A black-holed Twilio must not block a hangup for minutes: the bounded timeout turns it into an error."""
    client = fake.client(http_timeout=0.3)
    sid = create_call(client, to="+15551234567", from_=fake.phone_number, twiml="<Response/>")
    fake.fail_next("POST", rf"/Calls/{sid}\.json$", status=200, stall=30.0)
    with pytest.raises(CarrierApiError) as caught:
        complete_call(client, sid)
    assert caught.value.status is None and caught.value.retryable
    assert "Timeout" in str(caught.value)


def test_dial_with_async_amd_and_options(stack: Stack) -> None:
    outbound = stack.control.dial("+15551234567", machine_detection="DetectMessageEnd", ring_timeout=25, time_limit=600)
    (request,) = stack.fake.requests_for("POST", "/Calls.json")
    form = request.form_dict
    base = stack.running.http_url
    assert form["MachineDetection"] == "DetectMessageEnd"
    assert form["AsyncAmd"] == "true"
    assert form["AsyncAmdStatusCallback"] == f"{base}/twilio/amd"
    assert form["AsyncAmdStatusCallbackMethod"] == "POST"
    assert form["StatusCallback"] == f"{base}/twilio/status"
    assert form["Timeout"] == "25" and form["TimeLimit"] == "600"
    url, params, stream_callback = parse_stream_twiml(form["Twiml"])
    assert url == f"{stack.running.ws_url}/stream/{outbound.token}"
    assert params == {"direction": "outbound", "from_number": stack.fake.phone_number, "to_number": "+15551234567"}
    assert stream_callback == f"{base}/twilio/stream-status"
    assert outbound.session.call_sid == outbound.call_id and stack.control.session_for_call(outbound.call_id) is outbound.session


def test_dial_with_send_digits_and_refused_combinations(stack: Stack) -> None:
    stack.control.dial("+15551234567", send_digits="ww1234#")
    assert stack.fake.requests_for("POST", "/Calls.json")[0].form_dict["SendDigits"] == "ww1234#"
    pending = stack.server.registry.pending_count
    with pytest.raises(ConfigError, match="SendDigits and MachineDetection"):
        stack.control.dial("+15551234567", send_digits="1", machine_detection="Enable")
    with pytest.raises(ConfigError, match="send_digits"):
        stack.control.dial("+15551234567", send_digits="12;rm")
    assert stack.server.registry.pending_count == pending  # failed dials revoke their stream tokens
    assert len(stack.fake.requests_for("POST", "/Calls.json")) == 1


def test_dial_failure_is_typed_and_revokes_the_token(stack: Stack) -> None:
    stack.fake.fail_next("POST", r"/Calls\.json$", status=400, code=21215, message="Geo permission not enabled")
    pending = stack.server.registry.pending_count
    with pytest.raises(CarrierApiError) as caught:
        stack.control.dial("+882001234567")
    assert caught.value.code == 21215
    assert stack.server.registry.pending_count == pending


def test_control_send_sms(stack: Stack) -> None:
    result = stack.control.send_sms("+15557654321", "See you soon")
    assert result["status"] == "queued" and result["to"] == "+15557654321"
    assert stack.fake.messages[-1]["body"] == "See you soon"
