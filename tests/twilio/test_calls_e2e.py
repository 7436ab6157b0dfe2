"""Whole calls: real VoiceServer (uvicorn), TwilioCallControl, the SDK over a socket to the fake Twilio, and a
simulated phone that the fake connects to the ``<Stream url>`` of the call's TwiML with a signed upgrade.

Providers are the mock ones (scripted STT words, timing from the phone's real audio; tone TTS): speech
recognition itself is not what these tests are about.
"""

from __future__ import annotations

import base64
import logging
import threading
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from voice_runtime.errors import CallHangupError, CallNotAnsweredError
from voice_runtime.providers.mock import tone_speech
from voice_runtime.session import VoiceSession
from voice_runtime.testing import SimulatedPhone
from voice_runtime.testing.fake_twilio import FakeCall, FakeTwilio, parse_stream_twiml

from .conftest import Stack


class Answerer:
    """Plays the callee: waits for the dial to reach the fake Twilio, then answers (in its own thread)."""

    def __init__(self, fake: FakeTwilio, action: str = "answer", index: int = 0, **kwargs: Any) -> None:
        self.fake, self.action, self.index, self.kwargs = fake, action, index, kwargs
        self.call: FakeCall | None = None
        self.phone: SimulatedPhone | None = None
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.call = self.fake.wait_for_call(10, index=self.index)
            if self.action == "answer":
                self.phone = self.fake.answer(self.call.sid, **self.kwargs)
            else:
                self.fake.send_status(self.call.sid, self.action)
        except BaseException as exc:  # surfaced by wait()
            self.error = exc
        finally:
            self.done.set()

    def wait(self, timeout: float = 10.0) -> Answerer:
        assert self.done.wait(timeout), "answerer did not finish"
        if self.error is not None:
            raise self.error
        return self


def completed_request(fake: FakeTwilio, call_sid: str, timeout: float = 10.0) -> Any:
    return fake.wait_for_request(
        lambda r: r.method == "POST" and r.path.endswith(f"/Calls/{call_sid}.json") and r.value("Status") == "completed",
        timeout,
    )


def test_outbound_call_end_to_end(make_stack: Any, caplog: pytest.LogCaptureFixture) -> None:
    stack: Stack = make_stack(script=["book a table for two"])
    fake = stack.fake
    answerer = Answerer(fake)
    with caplog.at_level(logging.DEBUG):
        with stack.control.call("+15551234567", answer_timeout=10) as session:
            phone = answerer.wait().phone
            assert phone is not None
            spoken = session.speak("Hello, this is the restaurant calling.", wait=True)
            assert spoken.heard
            phone.say(tone_speech(0.8))
            assert session.listen(timeout=10) == "book a table for two"
            call_sid = session.call_sid
        # leaving the block hung up: REST first, then the socket closed
        hangup = completed_request(fake, call_sid)
        assert phone.wait_closed(10)
        assert session.wait_until_disconnected(5)
        answerer.thread.join(5)

    (create,) = fake.requests_for("POST", "/Calls.json")
    assert create.auth_user == fake.account_sid and create.auth_ok
    assert create.original_host == "api.twilio.com"
    base = stack.running.http_url
    assert [k for k, _ in create.form] == [  # exactly these fields, nothing else (the SDK's order)
        "To", "From", "StatusCallback", "StatusCallbackEvent", "StatusCallbackEvent", "StatusCallbackEvent",
        "StatusCallbackEvent", "StatusCallbackMethod", "Twiml",
    ]
    form = create.form_dict
    assert form["To"] == "+15551234567" and form["From"] == fake.phone_number
    assert form["StatusCallback"] == f"{base}/twilio/status" and form["StatusCallbackMethod"] == "POST"
    assert create.values("StatusCallbackEvent") == ["initiated", "ringing", "answered", "completed"]
    url, params, stream_callback = parse_stream_twiml(form["Twiml"])
    assert url.startswith(f"{stack.running.ws_url}/stream/") and stream_callback == f"{base}/twilio/stream-status"
    assert params == {"direction": "outbound", "from_number": fake.phone_number, "to_number": "+15551234567"}

    assert hangup.form == [("Status", "completed")]
    assert fake.requests_for("DELETE", ".json") == []
    assert session.call_sid == answerer.call.sid  # type: ignore[union-attr]
    assert session.called_number == "+15551234567" and session.caller_number == fake.phone_number
    assert phone.media_bytes > 0 and phone.violations == []
    assert [e.data["status"] for e in session.events if e.kind == "call_status"][:2] == ["ringing", "in-progress"]
    assert stack.control.session_for_call(call_sid) is None  # forgotten after the call
    assert fake.wait_idle(10)  # Twilio's own "completed" callback, posted after our hangup, has been answered
    assert (f"{base}/twilio/status", 204) in fake.callback_responses[-1:]
    assert call_sid not in stack.control._early  # that late callback is not kept around

    # secrets never reached a log record, formatted or not
    secret_basic = base64.b64encode(f"{fake.account_sid}:{fake.auth_token}".encode()).decode()
    assert caplog.records, "expected DEBUG logs from the call"
    assert fake.auth_token not in caplog.text and secret_basic not in caplog.text
    assert all(fake.auth_token not in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("status", ["busy", "no-answer", "failed"])
def test_not_answered_raises_from_status_callback(stack: Stack, status: str) -> None:
    answerer = Answerer(stack.fake, action=status)
    pending_before = stack.server.registry.pending_count
    with pytest.raises(CallNotAnsweredError) as caught:
        with stack.control.call("+15551234567", answer_timeout=60):
            pytest.fail("the flow must not run for an unanswered call")
    answerer.wait()
    error = caught.value
    assert error.status == status and error.timeout is None  # released by the callback, not the deadline
    assert error.call_id == answerer.call.sid  # type: ignore[union-attr]
    assert stack.server.registry.pending_count == pending_before  # the stream token was revoked
    assert stack.control.session_for_call(error.call_id) is None


def test_stream_error_before_connect_releases_waiters(stack: Stack) -> None:
    outbound = stack.control.dial("+15551234567")
    outcome: dict[str, BaseException] = {}

    def wait() -> None:
        try:
            outbound.wait_answered(60)
        except BaseException as exc:
            outcome["error"] = exc

    waiter = threading.Thread(target=wait)
    waiter.start()
    assert stack.fake.send_stream_status(outbound.call_id, "stream-error", error="31920 handshake failed") == 204
    waiter.join(10)
    assert isinstance(outcome.get("error"), CallNotAnsweredError)
    assert [e.data["event"] for e in outbound.session.events if e.kind == "stream_status"] == ["stream-error"]


def test_status_before_tracking_is_replayed(stack: Stack) -> None:
    """Twilio may post 'busy' before our REST call returned; the callback is kept and applied on track()."""
    session = stack.server.new_session()
    sid = "CA" + "3" * 32
    stack.control.on_call_status(sid, "busy")
    assert not session.is_disconnected
    stack.control.track(sid, session)
    assert session.is_disconnected and session.end_reason == "busy"


def test_async_amd_result_reaches_the_flow(stack: Stack) -> None:
    answerer = Answerer(stack.fake)
    with stack.control.call("+15551234567", answer_timeout=10, machine_detection="Enable") as session:
        answerer.wait()
        call = answerer.call
        assert call is not None and call.amd_callback == f"{stack.running.http_url}/twilio/amd"
        result: dict[str, str] = {}
        waiter = threading.Thread(target=lambda: result.setdefault("by", session.wait_for_answered_by(10)))
        waiter.start()
        assert stack.fake.send_amd(call.sid, "machine_end_beep") == 204
        waiter.join(10)
        assert result["by"] == "machine_end_beep" and session.answered_by == "machine_end_beep"
    completed_request(stack.fake, call.sid)


def test_inbound_call_runs_flow_with_caller_numbers(make_stack: Any) -> None:
    stack: Stack = make_stack(script=["i would like to cancel"])
    seen: dict[str, Any] = {}
    finished = threading.Event()

    @stack.control.on_inbound_call
    def flow(session: VoiceSession) -> None:
        try:
            seen["thread"] = threading.current_thread()
            seen["session"] = session
            seen["numbers"] = (session.caller_number, session.called_number, session.call_sid)
            session.speak("Thanks for calling.", wait=True)
            seen["heard"] = session.listen(timeout=10)
        finally:
            finished.set()

    call, response, phone = stack.fake.inbound_call(stack.url("/twilio/voice"), from_="+15557654321")
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/xml")
    url, params, callback = parse_stream_twiml(response.text)
    assert url.startswith(f"{stack.running.ws_url}/stream/")
    assert params == {"direction": "inbound", "from_number": "+15557654321", "to_number": stack.fake.phone_number}
    assert callback == f"{stack.running.http_url}/twilio/stream-status"
    assert phone is not None
    phone.wait_for("playback_end", 10)
    phone.say(tone_speech(0.8))
    assert finished.wait(15)
    assert seen["heard"] == "i would like to cancel"
    assert seen["numbers"] == ("+15557654321", stack.fake.phone_number, call.sid)
    assert seen["thread"] is not threading.current_thread()
    # the flow returned: REST hangup of the inbound call, then the stream closed
    assert completed_request(stack.fake, call.sid).form == [("Status", "completed")]
    assert phone.wait_closed(10)
    assert seen["session"].wait_until_disconnected(5)


def test_inbound_call_without_a_flow_is_rejected(stack: Stack) -> None:
    _, response, phone = stack.fake.inbound_call(stack.url("/twilio/voice"))
    assert response.status_code == 200 and phone is None
    assert ET.fromstring(response.text).find("Reject") is not None
    assert stack.server.registry.pending_count == 0


def test_request_disconnect_when_twilio_says_call_already_ended(stack: Stack) -> None:
    answerer = Answerer(stack.fake)
    outbound = stack.control.dial("+15551234567")
    session = outbound.wait_answered(10)
    phone = answerer.wait().phone
    assert phone is not None
    stack.fake.fail_next("POST", rf"/Calls/{outbound.call_id}\.json$", status=404, code=20404, message="not found")
    session.request_disconnect()
    assert session.wait_until_disconnected(10)
    assert phone.wait_closed(10)  # 404/20404 = already ended: we still close our side
    assert stack.fake.requests_for("POST", f"/Calls/{outbound.call_id}.json")[0].form == [("Status", "completed")]


def test_transfer_replaces_twiml_and_does_not_hang_up(stack: Stack) -> None:
    answerer = Answerer(stack.fake)
    with stack.control.call("+15551234567", answer_timeout=10) as session:
        phone = answerer.wait().phone
        assert phone is not None
        assert stack.control.transfer(session, "+15559990000", caller_id=stack.fake.phone_number) is True
        assert session.is_disconnected  # Twilio ended the stream when the TwiML was replaced
        with pytest.raises(CallHangupError):
            session.listen(timeout=1)
        call_sid = session.call_sid
    update = stack.fake.requests_for("POST", f"/Calls/{call_sid}.json")
    assert len(update) == 1  # the <Dial> update only: leaving the flow did not hang up the transferred call
    dial = ET.fromstring(update[0].form_dict["Twiml"]).find("Dial")
    assert dial is not None and dial.text == "+15559990000"
    assert any(e.kind == "call_transferred" for e in session.events)


def test_oversized_messages_refused_call_and_server_survive(make_stack: Any) -> None:
    """A 1 MB message is dropped and counted and the call goes on; past the socket cap (1 MiB) the socket is
    closed with 1009 — and either way the server keeps serving calls."""
    stack: Stack = make_stack(script=["still here", "second call"])
    answerer = Answerer(stack.fake)
    outbound = stack.control.dial("+15551234567")
    session = outbound.wait_answered(10)
    phone = answerer.wait().phone
    assert phone is not None
    dropped = threading.Event()
    session.add_event_listener(lambda e: dropped.set() if e.kind == "protocol_error" else None)
    phone.send_raw('{"event":"media","pad":"' + "x" * 1_000_000 + '"}')
    assert dropped.wait(10)
    assert session.stats["dropped_oversized_message"] == 1 and session.is_connected
    phone.say(tone_speech(0.8))
    assert session.listen(timeout=10) == "still here"  # the call survived
    phone.send_raw("x" * (2 * 1024 * 1024))
    assert phone.wait_closed(10) and phone.close_code == 1009
    assert session.wait_until_disconnected(10)
    # the server survived: a second call works end to end
    second = Answerer(stack.fake, index=1)
    with stack.control.call("+15551234568", answer_timeout=10) as again:
        phone2 = second.wait().phone
        assert phone2 is not None
        assert again.speak("Hello again.", wait=True).heard


def test_inbound_stream_url_derived_from_webhook_when_no_public_url(stack: Stack) -> None:
    """No public_url / VOICE_STREAM_URL: the stream URL is built from the URL Twilio used for the webhook."""
    stack.server.public_url = None
    finished = threading.Event()
    stack.control.on_inbound_call(lambda session: (session.speak("Hi.", wait=True), finished.set()))
    _, response, phone = stack.fake.inbound_call(stack.url("/twilio/voice"))
    assert parse_stream_twiml(response.text)[0].startswith(f"{stack.running.ws_url}/stream/")
    assert phone is not None and finished.wait(10)
    assert phone.wait_closed(10)
