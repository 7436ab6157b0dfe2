"""Conversation helpers on Plivo: gather on an inbound call, voicemail after async AMD (``Machine=true``) and
the beep on the stream, transfer through the Transfer API (the same contract as Twilio's), warm transfer —
the real server and PlivoCallControl, the plivo SDK over a socket to the fake Plivo, signed webhooks."""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np
import pytest

from voice_runtime import CallHangupError, MarkOutcome, VoiceSession
from voice_runtime.audio.g711 import pcm16_to_ulaw
from voice_runtime.conversation import GatherKind, GreetingEnd
from voice_runtime.providers.mock import tone_speech
from voice_runtime.testing.phone import to_ulaw

from .conftest import PlivoRig
from .test_plivo_control import TO, run_in_thread


def beep(seconds: float = 0.3) -> bytes:
    t = np.arange(int(seconds * 8000)) / 8000
    return pcm16_to_ulaw((8000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16))


@pytest.mark.timeout(60)
def test_gather_speech_or_digits_on_an_inbound_plivo_call(rig: PlivoRig) -> None:
    box: dict[str, Any] = {}
    done = threading.Event()

    def flow(session: VoiceSession) -> None:
        try:
            box["first"] = session.gather("Say or press your choice.", num_digits=1, timeout=5)
            box["second"] = session.gather("And now press two digits.", speech=False, num_digits=2, timeout=5)
        finally:
            done.set()

    server, _ = rig.server(flow, script=["sales"])
    fake = rig.fake()
    control = rig.control(server, fake)
    call = fake.inbound_call(control.webhook_url("answer"))
    phone = call.phone
    assert phone is not None
    first = phone.wait_for("mark_echoed", 10)
    phone.say(tone_speech(0.6))
    phone.wait_for("mark_echoed", 10, after=first.at + 1e-6)
    phone.press("42")
    assert done.wait(20)
    assert (box["first"].kind, box["first"].value) == (GatherKind.SPEECH, "sales")
    assert (box["second"].kind, box["second"].value) == (GatherKind.DIGITS, "42")


@pytest.mark.timeout(60)
def test_voicemail_after_async_amd_waits_for_the_beep(rig: PlivoRig) -> None:
    server, _ = rig.server()
    fake = rig.fake()
    control = rig.control(server, fake)
    greeting = to_ulaw(tone_speech(1.0)) + b"\xff" * 1600 + beep()
    box: dict[str, Any] = {}

    def flow() -> Any:
        with control.call(TO, machine_detection=True) as session:
            box["answered_by"] = session.answered_by_or_none(timeout=10)
            return session.leave_voicemail("This is your pharmacy: your order is ready.", timeout=10)

    thread, result_box = run_in_thread(flow)
    call = fake.wait_for_call()
    assert call.request["machine_detection"] == "true"
    try:
        phone = call.answer()
    except Exception:
        thread.join(5)
        raise AssertionError(f"answer failed; flow: {result_box!r}")
    rig.phones.append(phone)
    assert call.detect_machine(True).status == 204  # Plivo: "a machine" — but not when its greeting ends
    said = phone.say(greeting)
    thread.join(30)
    assert "error" not in result_box, result_box.get("error")
    result = result_box["value"]
    assert box["answered_by"] == "machine_start"
    assert result.reason is GreetingEnd.BEEP and result.outcome is MarkOutcome.PLAYED
    assert phone.wait_for("playback_start", 5).at >= said.start_time + len(greeting) / 8000 - 0.1
    assert fake.wait_for_request(lambda r: r.method == "DELETE").path.endswith(f"/Call/{call.call_uuid}/")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("warm", [False, True])
def test_transfer_points_the_a_leg_at_dial_xml_and_does_not_hang_up(rig: PlivoRig, warm: bool) -> None:
    from examples.warm_transfer import warm_transfer

    server, _ = rig.server()
    fake = rig.fake()
    control = rig.control(server, fake)
    box: dict[str, Any] = {}

    def flow() -> bool:
        with control.call(TO) as session:
            box["session"] = session
            if warm:
                ok = warm_transfer(session, control, "+14155557777", caller_id="+14155550000", dial_timeout=20)
            else:
                ok = control.transfer(session, "+14155557777", caller_id="+14155550000", dial_timeout=20)
            assert session.is_disconnected  # Plivo left the <Stream>: our stream ended
            with pytest.raises(CallHangupError):
                session.listen(timeout=1)
            return ok

    thread, result_box = run_in_thread(flow)
    call = fake.wait_for_call()
    phone = call.answer()
    rig.phones.append(phone)
    thread.join(30)
    assert "error" not in result_box, result_box.get("error")
    assert result_box["value"] is True
    if warm:
        assert phone.events_of("mark_echoed")  # the line was heard before the transfer
    transfer = fake.wait_for_request(lambda r: r.method == "POST" and r.path.endswith(f"/Call/{call.call_uuid}/"))
    key = transfer.json["aleg_url"].rsplit("/", 1)[-1]
    assert transfer.json == {  # what the SDK sends for calls.transfer (it echoes the call_uuid in the body)
        "call_uuid": call.call_uuid,
        "legs": "aleg",
        "aleg_url": control.webhook_url(f"transfer/{key}"),
        "aleg_method": "POST",
    }
    assert call.transferred.wait(5)
    dial = ET.fromstring(call.transfers[0]).find("Dial")
    assert dial is not None and dial.attrib == {"callerId": "+14155550000", "timeout": "20"}
    assert [n.text for n in dial.findall("Number")] == ["+14155557777"]
    assert not any(r.method == "DELETE" for r in fake.requests)  # leaving the flow did not hang up the call
    assert any(e.kind == "call_transferred" for e in box["session"].events)
    replay = fake.post_webhook("transfer", control.webhook_url(f"transfer/{key}"), {"CallUUID": call.call_uuid})
    assert replay.status == 200 and "<Hangup" in replay.body  # a transfer URL is single use


@pytest.mark.timeout(30)
def test_transfer_webhook_needs_a_valid_signature_and_ended_calls_cannot_transfer(rig: PlivoRig) -> None:
    server, running = rig.server()
    fake = rig.fake(sign_webhooks=False)
    control = rig.control(server, fake)
    import httpx

    assert httpx.post(control.webhook_url("transfer/anything"), data={"CallUUID": "x"}).status_code == 403
    ended = server.new_session()
    ended.call_sid = "11111111-2222-3333-4444-555555555555"
    ended.signal_disconnected("test")
    with pytest.raises(CallHangupError):
        control.transfer(ended, "+14155557777")
    assert fake.requests == []
