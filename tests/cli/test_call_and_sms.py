"""``voice-runtime call`` and ``voice-runtime sms`` as subprocesses against the fake Twilio and Plivo.

``call`` serves its own stream endpoint; the fake carrier "answers" by connecting a simulated phone to the
``<Stream url>`` of the dial (signed), and reports AMD / busy through the real signed callbacks.
"""

from __future__ import annotations

import pytest

from voice_runtime.testing.fake_plivo import FakePlivo
from voice_runtime.testing.fake_twilio import FakeTwilio
from voice_runtime.testing.ports import free_port

from .carriers import PLIVO_NUMBER, carrier_env
from .conftest import run_cli

NUMBER = "+15550102222"


def _call(cli, env, carrier: str, *extra: str):  # type: ignore[no-untyped-def]
    port = free_port()
    return cli(
        ["call", NUMBER, "examples/reminder.py:flow", "--carrier", carrier, "--stt", "mock", "--tts", "mock",
         "--public-url", f"http://127.0.0.1:{port}", "--host", "127.0.0.1", "--port", str(port), *extra],
        env=env,
    )


def test_twilio_call_answered_by_a_machine_leaves_a_voicemail_and_exits_6(cli) -> None:  # type: ignore[no-untyped-def]
    with FakeTwilio() as twilio:
        process = _call(cli, carrier_env(twilio), "twilio", "--amd")
        dialled = twilio.wait_for_call(60)
        assert dialled.to == NUMBER and dialled.form.get("MachineDetection") == "Enable"
        phone = twilio.answer(dialled.sid)
        assert twilio.send_amd(dialled.sid, "machine_end_beep") == 204
        assert process.wait(90) == 6, process.out + process.err
        assert phone.wait_closed(10)
    out = process.out
    assert "dialling +15550102222 via twilio" in out
    assert 'AGENT   says: "This is Sunny Dental with a reminder' in out and "please call us back" in out
    assert "answered by machine_end_beep" in out
    assert len(phone.agent_track) > 8000 * 5  # the message was played into the "voicemail"


def test_twilio_busy_exits_3(cli) -> None:  # type: ignore[no-untyped-def]
    with FakeTwilio() as twilio:
        process = _call(cli, carrier_env(twilio), "twilio")
        dialled = twilio.wait_for_call(60)
        assert twilio.send_status(dialled.sid, "busy") == 204
        assert process.wait(60) == 3, process.out + process.err
    assert "not answered (busy)" in process.out


def test_twilio_no_answer_exits_4_and_failed_exits_5(cli) -> None:  # type: ignore[no-untyped-def]
    with FakeTwilio() as twilio:
        first = _call(cli, carrier_env(twilio), "twilio")
        twilio.send_status(twilio.wait_for_call(60).sid, "no-answer")
        assert first.wait(60) == 4, first.out + first.err
        second = _call(cli, carrier_env(twilio), "twilio")
        twilio.send_status(twilio.wait_for_call(60, index=1).sid, "failed")
        assert second.wait(60) == 5, second.out + second.err


def test_plivo_call_answered_by_a_person_exits_0(cli) -> None:  # type: ignore[no-untyped-def]
    with FakePlivo() as plivo:
        process = _call(cli, carrier_env(plivo=plivo), "plivo", "--amd", "--mock-script", "thanks, see you")
        dialled = plivo.wait_for_call(60)
        assert dialled.request.get("machine_detection") == "true"
        phone = dialled.answer()
        plivo.wait_for_webhook("answer", 10)
        dialled.detect_machine(False)
        phone.wait_for("playback_end", timeout=30)  # the reminder was heard
        from voice_runtime.providers.mock import tone_speech

        phone.say(tone_speech(1.0), 8000)  # the person answers; the mock STT "hears" the scripted words
        assert process.wait(90) == 0, process.out + process.err
    out = process.out
    assert 'HEARD   "thanks, see you"' in out and 'AGENT   says: "See you tomorrow. Goodbye!"' in out
    assert "mark '" in out and "played" in out


def test_sms_twilio_prints_id_and_status() -> None:
    with FakeTwilio() as twilio:
        result = run_cli(["sms", "+15550103333", "See you at 3", "--carrier", "twilio"], env=carrier_env(twilio))
        assert result.returncode == 0, result.stderr
        assert len(twilio.messages) == 1
        message = twilio.messages[0]
    assert message["body"] == "See you at 3" and message["to"] == "+15550103333"
    assert result.stdout.splitlines() == [f"id: {message['sid']}", "status: queued", "to: +15550103333"]


def test_sms_plivo_json_output() -> None:
    import json

    with FakePlivo() as plivo:
        result = run_cli(["sms", "+15550103333", "Your code is 1234", "--carrier", "plivo", "--json"], env=carrier_env(plivo=plivo))
        assert result.returncode == 0, result.stderr
        assert len(plivo.messages) == 1
        sent = plivo.messages[0]
    assert sent["dst"] == "+15550103333" and sent["src"] == PLIVO_NUMBER and sent["text"] == "Your code is 1234"
    assert json.loads(result.stdout) == {"message_sid": sent["message_uuid"], "status": "queued", "to": "+15550103333"}


@pytest.mark.parametrize("carrier", ["twilio", "plivo"])
def test_sms_refused_by_the_carrier_exits_1(carrier: str) -> None:
    with FakeTwilio() as twilio, FakePlivo() as plivo:
        env = carrier_env(twilio, plivo, TWILIO_AUTH_TOKEN="wrong-token", PLIVO_AUTH_TOKEN="wrong-token")
        result = run_cli(["sms", "+15550103333", "hi", "--carrier", carrier], env=env)
        assert not twilio.messages and not plivo.messages
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert f"voice-runtime sms: {carrier} refused the message" in result.stderr and "Traceback" not in result.stderr
