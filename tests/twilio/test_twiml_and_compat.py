"""TwiML builders (SDK-built, escaped, within Twilio's limits) and the prior-art env-driven functions.

The env-driven functions build their own SDK clients; ``fake.installed()`` swaps the SDK's HTTP client for
one whose requests go to the loopback fake Twilio, so every assertion is about a request that crossed a socket.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

import voice_runtime
from voice_runtime.errors import CarrierApiError, ConfigError, MissingStreamUrlError
from voice_runtime.testing.fake_twilio import FakeTwilio, parse_stream_twiml
from voice_runtime.transport import get_sms_transport
from voice_runtime.transports.twilio_call import (
    MAX_PARAMETER_CHARS,
    build_dial_twiml,
    build_route_stream_xml,
    build_stream_twiml,
    build_stream_xml,
    hangup_call,
    initiate_outbound_call,
)


def test_stream_twiml_shape_and_escaping() -> None:
    hostile = 'O\'Brien <b>&"quotes"</b>'
    twiml = build_stream_twiml(
        "https://voice.example.com/stream/tok",
        {"from_number": "+15550001111", "note": hostile},
        status_callback="https://voice.example.com/twilio/stream-status",
    )
    root = ET.fromstring(twiml)  # well-formed despite the hostile value
    assert root.tag == "Response"
    stream = root.find("./Connect/Stream")
    assert stream is not None
    assert stream.get("url") == "wss://voice.example.com/stream/tok"
    assert stream.get("statusCallback") == "https://voice.example.com/twilio/stream-status"
    assert stream.get("statusCallbackMethod") == "POST"
    assert parse_stream_twiml(twiml)[1] == {"from_number": "+15550001111", "note": hostile}
    assert "<b>" not in twiml  # escaped by the SDK, not injected


def test_stream_twiml_prior_art_base_url_gets_voice_route() -> None:
    assert parse_stream_twiml(build_stream_twiml("https://abc.ngrok.io"))[0] == "wss://abc.ngrok.io/voice"
    assert parse_stream_twiml(build_stream_twiml("http://localhost:8080/"))[0] == "ws://localhost:8080/voice"
    assert build_stream_xml is build_stream_twiml
    routed = build_route_stream_xml("https://abc.ngrok.io/", "a/b c")
    assert parse_stream_twiml(routed)[0] == "wss://abc.ngrok.io/voice/a%2Fb%20c"


def test_stream_twiml_refuses_what_twilio_would_drop() -> None:
    with pytest.raises(ConfigError, match="query string"):
        build_stream_twiml("wss://x.example.com/stream?token=1")
    with pytest.raises(ConfigError, match="under 500"):
        build_stream_twiml("wss://x.example.com/s", {"k": "v" * (MAX_PARAMETER_CHARS - 1)})
    build_stream_twiml("wss://x.example.com/s", {"k": "v" * (MAX_PARAMETER_CHARS - 2)})  # 499 chars: fine
    with pytest.raises(ConfigError):
        build_stream_twiml("ftp://x.example.com/s")


def test_dial_twiml() -> None:
    root = ET.fromstring(build_dial_twiml("+15559990000", caller_id="+15550001000", timeout=20))
    dial = root.find("Dial")
    assert dial is not None and dial.text == "+15559990000"
    assert dial.get("callerId") == "+15550001000" and dial.get("timeout") == "20"


def test_initiate_outbound_call_without_stream_url_is_a_clear_error(fake: FakeTwilio) -> None:
    with pytest.raises(MissingStreamUrlError, match="VOICE_STREAM_URL"):
        initiate_outbound_call("+15551234567", environ=fake.environ())
    assert fake.requests == []  # failed before any REST traffic


def test_initiate_outbound_call_missing_credentials(fake: FakeTwilio) -> None:
    env = fake.environ(VOICE_STREAM_URL="https://voice.example.com")
    del env["TWILIO_AUTH_TOKEN"]
    with pytest.raises(ConfigError, match="TWILIO_AUTH_TOKEN"):
        initiate_outbound_call("+15551234567", environ=env)
    env = fake.environ(VOICE_STREAM_URL="https://voice.example.com")
    del env["TWILIO_PHONE_NUMBER"]
    with fake.installed(), pytest.raises(ConfigError, match="TWILIO_PHONE_NUMBER"):
        initiate_outbound_call("+15551234567", environ=env)


def test_initiate_outbound_call_posts_exact_form(fake: FakeTwilio) -> None:
    env = fake.environ(VOICE_STREAM_URL="https://voice.example.com")
    with fake.installed():
        sid = voice_runtime.initiate_outbound_call(
            "+15551234567", environ=env, parameters={"lead": "42"}, status_callback="https://voice.example.com/cb"
        )
    assert sid in fake.calls and sid.startswith("CA")
    (request,) = fake.requests_for("POST", "/Calls.json")
    assert request.path == f"/2010-04-01/Accounts/{fake.account_sid}/Calls.json"
    assert request.auth_user == fake.account_sid and request.auth_ok
    assert request.original_host == "api.twilio.com"
    form = request.form_dict
    assert form["To"] == "+15551234567"
    assert form["From"] == fake.phone_number
    assert form["StatusCallback"] == "https://voice.example.com/cb"
    assert form["StatusCallbackMethod"] == "POST"
    assert request.values("StatusCallbackEvent") == ["initiated", "ringing", "answered", "completed"]
    url, params, _ = parse_stream_twiml(form["Twiml"])
    assert url == "wss://voice.example.com/voice" and params == {"lead": "42"}
    assert "MachineDetection" not in form and "SendDigits" not in form


def test_hangup_call_env_driven_and_idempotent(fake: FakeTwilio) -> None:
    env = fake.environ(VOICE_STREAM_URL="https://voice.example.com")
    with fake.installed():
        sid = initiate_outbound_call("+15551234567", environ=env)
        assert voice_runtime.hangup_call(sid, environ=env) is True
        assert fake.calls[sid].status == "completed"
        assert hangup_call("CA" + "0" * 32, environ=env) is False  # 404/20404: already gone = success
    updates = fake.requests_for("POST", ".json")[1:]
    assert [u.form for u in updates] == [[("Status", "completed")], [("Status", "completed")]]
    assert fake.requests_for("DELETE", ".json") == []  # never DELETE a call to hang up


def test_sms_through_get_sms_transport(fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in fake.environ().items():
        monkeypatch.setenv(key, value)
    with fake.installed():
        result = get_sms_transport("twilio").send_sms("+15557654321", "Your appointment is at 10:00")
    assert set(result) == {"message_sid", "status", "to"}
    assert result["message_sid"].startswith("SM") and result["status"] == "queued" and result["to"] == "+15557654321"
    (request,) = fake.requests_for("POST", "/Messages.json")
    assert request.form_dict == {"To": "+15557654321", "Body": "Your appointment is at 10:00", "From": fake.phone_number}


def test_sms_error_carries_twilio_code(fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in fake.environ().items():
        monkeypatch.setenv(key, value)
    with fake.installed(), pytest.raises(CarrierApiError) as caught:
        get_sms_transport("twilio").send_sms("12345", "hi")
    assert caught.value.code == 21211 and caught.value.status == 400 and not caught.value.retryable
    assert fake.auth_token not in str(caught.value)
    fake.fail_next("POST", r"/Messages\.json$", status=429, code=20429, message="Too Many Requests")
    with fake.installed(), pytest.raises(CarrierApiError) as caught:
        get_sms_transport("twilio").send_sms("+15557654321", "hi")
    assert caught.value.code == 20429 and caught.value.retryable
    with pytest.raises(ValueError):
        get_sms_transport("twilio").send_sms("+15557654321", "")


def test_twilio_sdk_is_imported_lazily() -> None:
    code = (
        "import sys, voice_runtime, voice_runtime.transports.twilio_call, voice_runtime.transports.twilio_sms, "
        "voice_runtime.transports.twilio_security, voice_runtime.transports.twilio_control; "
        "print('twilio' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"
