"""Plivo call control and SMS against the loopback fake Plivo: exact REST requests, webhooks, hangup, AMD.

The plivo SDK has no base-URL option, so its requests are redirected to the fake by a transport adapter on the
SDK's own ``requests`` sessions (``transports/_plivo_client.py``): the SDK builds and sends every request
over a real socket; the fake records method, path, Basic auth and JSON body exactly.
"""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from voice_runtime import CallNotAnsweredError, ConfigError, LocalProtocolError, MarkOutcome, VoiceSession
from voice_runtime.transport import get_sms_transport

from .conftest import PlivoRig

TO = "+14155551234"


def run_in_thread(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


@pytest.mark.timeout(60)
def test_outbound_call_exact_requests_xml_and_hangup(rig: PlivoRig) -> None:
    server, running = rig.server()
    fake = rig.fake()
    control = rig.control(server, fake, content_type="audio/x-l16;rate=8000")

    def flow() -> MarkOutcome | None:
        with control.call(TO, machine_detection=True, ring_timeout=30) as session:
            result = session.speak("Hello from Plivo.", wait=True, timeout=10)
            assert session.wait_for_answered_by(10) == "machine_start"
            return result.mark.outcome if result.mark else None

    thread, box = run_in_thread(flow)
    call = fake.wait_for_call()
    dial = fake.requests[0]
    assert dial.method == "POST"
    assert dial.path == f"/v1/Account/{fake.auth_id}/Call/"
    assert dial.auth == (fake.auth_id, fake.auth_token)
    assert dial.headers["Content-Type"] == "application/json"
    hooks = control.webhook_url("")
    key = dial.json["answer_url"].rsplit("/", 1)[-1]
    assert len(key) >= 20  # a per-call, unguessable answer URL
    assert dial.json == {
        "from": "+14155550000",
        "to": TO,
        "answer_url": f"{hooks}answer/{key}",
        "answer_method": "POST",
        "ring_url": f"{hooks}ring",
        "ring_method": "POST",
        "hangup_url": f"{hooks}hangup",
        "hangup_method": "POST",
        "fallback_method": "POST",  # SDK default, sent as-is
        "machine_detection": "true",
        "machine_detection_time": 5000,
        "machine_detection_url": f"{hooks}machine",
        "machine_detection_method": "POST",
        "ring_timeout": 30,
        "error_if_parent_not_found": False,  # SDK default
    }
    phone = call.answer()
    rig.phones.append(phone)
    # the answer XML: SDK-built, every attribute explicit, per-call token in the stream URL
    root = ET.fromstring(call.answer_xml)
    stream = root.find("Stream")
    assert stream is not None and list(root) == [stream]
    assert stream.attrib == {
        "bidirectional": "true",
        "audioTrack": "inbound",
        "streamTimeout": "86400",
        "statusCallbackUrl": f"{hooks}stream-status",
        "statusCallbackMethod": "POST",
        "contentType": "audio/x-l16;rate=8000",
        "keepCallAlive": "true",
    }
    assert stream.text is not None and stream.text.startswith(running.ws_url + "/stream/")
    call.detect_machine(True)
    thread.join(20)
    assert not thread.is_alive()
    assert "error" not in box, box.get("error")
    assert box["value"] is MarkOutcome.PLAYED
    assert phone.violations == []
    hangup = fake.wait_for_request(lambda r: r.method == "DELETE")
    assert hangup.path == f"/v1/Account/{fake.auth_id}/Call/{call.call_uuid}/"
    assert hangup.auth == (fake.auth_id, fake.auth_token)
    assert hangup.json == {"call_uuid": call.call_uuid}  # what the SDK sends with its DELETE
    assert fake.wait_for_webhook("hangup").status == 204
    assert [w.kind for w in fake.webhooks][:2] == ["ring", "answer"]
    assert all(w.status in (200, 204) for w in fake.webhooks)
    assert phone.wait_closed(10)


@pytest.mark.timeout(30)
def test_answer_url_is_single_use_and_token_bound(rig: PlivoRig) -> None:
    server, running = rig.server()
    fake = rig.fake()
    control = rig.control(server, fake)
    outbound = control.dial(TO)
    call = fake.wait_for_call()
    call.fetch_answer()
    assert outbound.session.call_sid == call.call_uuid  # re-keyed from request_uuid to CallUUID on answer
    again = fake.post_webhook("answer", call.request["answer_url"], {"CallUUID": call.call_uuid})
    assert again.status == 200 and "<Hangup" in again.body  # a replayed answer URL gets no stream
    phone = call.connect_stream()
    rig.phones.append(phone)
    outbound.wait_answered(5)
    assert outbound.session.carrier == "plivo"
    control.hangup_call(call.call_uuid)
    assert phone.wait_closed(10)


@pytest.mark.timeout(30)
def test_an_answer_that_beats_the_dial_response_still_binds_the_call(rig: PlivoRig) -> None:
    """Plivo can ring, fetch the answer URL and open the stream before its ``POST /Call/`` response reaches us
    (seen under load). The call must still be known by its CallUUID, keep its stream, and hang up over
    ``DELETE /Call/{CallUUID}/`` (not cancel a request that was answered long ago)."""
    server, _ = rig.server()
    phones: list[Any] = []
    fake = rig.fake(before_dial_response=lambda call: phones.append(call.answer()))
    rig.phones.extend(phones)
    control = rig.control(server, fake)

    def flow() -> str:
        with control.call(TO, answer_timeout=10) as session:
            session.speak("You answered before I knew I had dialled.", wait=True, timeout=10)
            return session.call_sid or ""

    thread, box = run_in_thread(flow)
    call = fake.wait_for_call()
    thread.join(20)
    rig.phones.extend(phones)
    assert "error" not in box, box.get("error")
    assert box["value"] == call.call_uuid  # re-keyed from the request_uuid to the CallUUID
    hangup = fake.wait_for_request(lambda r: r.method == "DELETE")
    assert hangup.path == f"/v1/Account/{fake.auth_id}/Call/{call.call_uuid}/"
    assert phones and phones[0].wait_closed(10)
    assert control.session_for_call(call.call_uuid) is None  # forgotten once the flow ended


@pytest.mark.timeout(30)
def test_hangup_refuses_missing_call_id_and_treats_404_as_ended(rig: PlivoRig) -> None:
    server, _ = rig.server()
    fake = rig.fake()
    control = rig.control(server, fake)
    for bad in ("", None, "../Call", "a/b"):
        with pytest.raises(LocalProtocolError, match="every call on the account"):
            control.hangup_call(bad)  # type: ignore[arg-type]
    assert fake.requests == []  # nothing was sent
    control.hangup_call("11111111-2222-3333-4444-555555555555")  # unknown: Plivo says 404 -> already ended
    request = fake.requests[-1]
    assert (request.method, request.path) == ("DELETE", f"/v1/Account/{fake.auth_id}/Call/11111111-2222-3333-4444-555555555555/")


@pytest.mark.timeout(30)
def test_busy_before_answer_fails_fast_and_cancel_uses_request_uuid(rig: PlivoRig) -> None:
    server, _ = rig.server()
    fake = rig.fake()
    control = rig.control(server, fake)

    def attempt() -> None:
        with control.call(TO, answer_timeout=20):
            raise AssertionError("must not be answered")

    thread, box = run_in_thread(attempt)
    call = fake.wait_for_call()
    call.ring()
    call.end("busy", "USER_BUSY", close_stream=False)
    thread.join(10)
    assert isinstance(box.get("error"), CallNotAnsweredError)
    assert box["error"].status == "busy"
    # a dial that is still queued is cancelled through its request_uuid
    outbound = control.dial(TO)
    second = fake.wait_for_call(index=1)
    control.hangup_call(outbound.call_id)
    cancel = fake.wait_for_request(lambda r: r.method == "DELETE" and "/Request/" in r.path)
    assert cancel.path == f"/v1/Account/{fake.auth_id}/Request/{second.request_uuid}/"
    assert fake.wait_for_webhook("hangup").params["CallStatus"] in ("busy", "cancel")
    with pytest.raises(CallNotAnsweredError):
        outbound.wait_answered(10)


@pytest.mark.timeout(30)
def test_inbound_answer_webhook_starts_the_flow_with_its_own_session(rig: PlivoRig) -> None:
    sessions: list[VoiceSession] = []
    done = threading.Event()
    release = threading.Event()

    def flow(session: VoiceSession) -> None:
        sessions.append(session)
        session.speak("Welcome!", wait=True, timeout=10)
        if len(sessions) == 2:
            done.set()
        release.wait(15)  # keep both calls up while the test posts stream-status callbacks

    server, _ = rig.server(flow)
    fake = rig.fake()
    control = rig.control(server, fake)
    first = fake.inbound_call(control.webhook_url("answer"), from_="+14155550111")
    second = fake.inbound_call(control.webhook_url("answer"), from_="+14155550222")
    assert done.wait(15)
    assert first.phone is not None and second.phone is not None
    first.phone.wait_for("mark_echoed", 10)
    second.phone.wait_for("mark_echoed", 10)
    assert len({id(s) for s in sessions}) == 2
    assert {s.caller_number for s in sessions} == {"+14155550111", "+14155550222"}
    assert {s.call_sid for s in sessions} == {first.call_uuid, second.call_uuid}
    hook = fake.webhooks[0]
    assert hook.kind == "answer" and hook.status == 200
    # stream status callbacks (both documented vocabularies) are accepted
    for event in ("StartStream", "started", "DroppedStream"):
        status = fake.post_webhook("stream-status", control.webhook_url("stream-status"), {"CallUUID": first.call_uuid, "Event": event})
        assert status.status == 204
    by_call = {s.call_sid: s for s in sessions}
    statuses = [e.data.get("status") for e in by_call[first.call_uuid].events if e.kind == "call_status"]
    assert statuses == ["stream:StartStream", "stream:started", "stream:DroppedStream"]
    release.set()


@pytest.mark.timeout(30)
def test_inbound_without_flow_hangs_up(rig: PlivoRig) -> None:
    server, _ = rig.server()
    fake = rig.fake()
    control = rig.control(server, fake)
    call = fake.inbound_call(control.webhook_url("answer"))
    assert "<Hangup" in call.answer_xml and call.phone is None


def test_config_errors_are_clear(rig: PlivoRig, monkeypatch: pytest.MonkeyPatch) -> None:
    from voice_runtime.transports.plivo_control import PlivoCallControl

    server, _ = rig.server()
    monkeypatch.delenv("PLIVO_AUTH_ID", raising=False)
    monkeypatch.delenv("PLIVO_AUTH_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="PLIVO_AUTH_ID, PLIVO_AUTH_TOKEN"):
        PlivoCallControl(server)
    with pytest.raises(ValueError, match="unsupported Plivo contentType"):
        PlivoCallControl(server, auth_id="MAXXXXXXXXXXXXXXXXXX", auth_token="t", content_type="audio/x-mulaw;rate=16000")
    fake = rig.fake()
    control = rig.control(server, fake, from_number=None)
    monkeypatch.delenv("PLIVO_PHONE_NUMBER", raising=False)
    control.from_number = ""
    with pytest.raises(ConfigError, match="PLIVO_PHONE_NUMBER"):
        control.dial(TO)
    with pytest.raises(ConfigError, match="extraHeaders"):
        control.answer_xml("wss://x/stream/t", extra_headers={"user-id": "1"})


# ------------------------------------------------------------------------------------------- SMS
@pytest.mark.timeout(30)
def test_send_sms_exact_request_and_result_shape(rig: PlivoRig, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = rig.fake()
    monkeypatch.setenv("PLIVO_AUTH_ID", fake.auth_id)
    monkeypatch.setenv("PLIVO_AUTH_TOKEN", fake.auth_token)
    monkeypatch.setenv("PLIVO_PHONE_NUMBER", "+14155550000")
    monkeypatch.setenv("PLIVO_API_URL", fake.base_url)
    result = get_sms_transport("plivo").send_sms(TO, "Your code is 1234")
    assert set(result) == {"message_sid", "status", "to"}
    assert result["status"] == "queued" and result["to"] == TO
    assert result["message_sid"] == fake.messages[0]["message_uuid"]
    request = fake.requests[-1]
    assert (request.method, request.path) == ("POST", f"/v1/Account/{fake.auth_id}/Message/")
    assert request.auth == (fake.auth_id, fake.auth_token)
    assert request.json == {
        "src": "+14155550000",
        "dst": TO,
        "text": "Your code is 1234",
        "type": "sms",
        "method": "POST",
        "log": "true",
        "trackable": False,
    }


def test_send_sms_errors(rig: PlivoRig, monkeypatch: pytest.MonkeyPatch) -> None:
    from plivo.exceptions import AuthenticationError

    sms = get_sms_transport("plivo")
    with pytest.raises(ValueError):
        sms.send_sms("", "x")
    monkeypatch.delenv("PLIVO_PHONE_NUMBER", raising=False)
    with pytest.raises(ConfigError, match="PLIVO_PHONE_NUMBER"):
        sms.send_sms(TO, "x")
    fake = rig.fake()
    monkeypatch.setenv("PLIVO_PHONE_NUMBER", "+14155550000")
    with pytest.raises(AuthenticationError):  # the fake refuses wrong credentials like Plivo (401)
        sms.send_sms(TO, "x", auth_id=fake.auth_id, auth_token="wrong", api_base_url=fake.base_url)
