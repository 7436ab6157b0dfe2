"""``voice-runtime serve examples/<flow>.py:flow`` against the fake carriers, as separate processes.

The server is a real subprocess; FakeTwilio and FakePlivo place inbound calls through its answer webhooks
(signed, as the carriers do) and connect simulated phones to the stream URLs it answers with. Providers are
the mock ones (tones, scripted words): the flows, webhooks, streams, REST hangups and drain are real.
"""

from __future__ import annotations

import re
import signal

import pytest

from voice_runtime.testing.fake_plivo import FakePlivo
from voice_runtime.testing.fake_twilio import FakeTwilio
from voice_runtime.testing.ports import free_port

from .carriers import carrier_env
from .conftest import EXAMPLES as REPO_EXAMPLES
from .conftest import run_cli

ADMIN_TOKEN = "admin-token-for-tests-0123"


@pytest.fixture
def fakes():  # type: ignore[no-untyped-def]
    with FakeTwilio() as twilio, FakePlivo() as plivo:
        yield twilio, plivo


def _serve(cli, fakes, flow: str, *extra: str):  # type: ignore[no-untyped-def]
    twilio, plivo = fakes
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = cli(
        ["serve", flow, "--stt", "mock", "--tts", "mock", "--carrier", "twilio", "--carrier", "plivo",
         "--public-url", base, "--host", "127.0.0.1", "--port", str(port), *extra],
        env=carrier_env(twilio, plivo, VOICE_ADMIN_TOKEN=ADMIN_TOKEN),
    )
    process.wait_for_line(r"^ready: ", timeout=60)
    return process, base


def _completed_over_rest(twilio: FakeTwilio, call_sid: str) -> None:
    twilio.wait_for_request(
        lambda r: r.method == "POST" and r.path.endswith(f"/Calls/{call_sid}.json") and r.value("Status") == "completed", 30
    )


def test_serve_prints_where_the_carriers_must_point(cli, fakes) -> None:  # type: ignore[no-untyped-def]
    process, base = _serve(cli, fakes, "examples/ivr_menu.py:flow")
    out = process.out
    assert re.search(rf"answer URL:\s+{base}/twilio/voice", out), out
    assert re.search(rf"status callback:\s+{base}/twilio/status", out), out
    assert re.search(rf"answer URL:\s+{base}/plivo/answer", out), out
    assert re.search(rf"status callback \(hangup URL\):\s+{base}/plivo/hangup", out), out
    assert f"stream URL:" in out and "ws://127.0.0.1" in out
    process.signal(signal.SIGTERM)
    assert process.wait(30) == 0


def test_twilio_inbound_call_through_the_answer_webhook(cli, fakes) -> None:  # type: ignore[no-untyped-def]
    twilio, _ = fakes
    process, base = _serve(cli, fakes, "examples/ivr_menu.py:flow")
    call, response, phone = twilio.inbound_call(f"{base}/twilio/voice", from_="+15557654321")
    assert response.status_code == 200 and "<Connect><Stream" in response.text and phone is not None
    phone.wait_for("playback_start", timeout=20)  # the menu is playing
    listing = run_cli(["calls", "--server", base], env={"VOICE_ADMIN_TOKEN": ADMIN_TOKEN})
    assert listing.returncode == 0, listing.stderr
    row = next(line for line in listing.stdout.splitlines() if call.sid in line)
    assert "twilio" in row and "+15557654321" in row and "live" in row, listing.stdout
    phone.press("1")  # opening hours: the flow answers and hangs up over REST
    _completed_over_rest(twilio, call.sid)
    assert phone.wait_closed(30)
    assert len(phone.agent_track) > 8000 * 8  # menu + answer + goodbye were played to the caller
    process.signal(signal.SIGTERM)
    assert process.wait(30) == 0


def test_plivo_inbound_call_through_the_answer_webhook(cli, fakes) -> None:  # type: ignore[no-untyped-def]
    _, plivo = fakes
    process, base = _serve(cli, fakes, "examples/ivr_menu.py:flow")
    call = plivo.inbound_call(f"{base}/plivo/answer")
    assert call.stream_url.startswith(f"ws://127.0.0.1:{base.rsplit(':', 1)[1]}/stream/"), call.answer_xml
    phone = call.phone
    assert phone is not None
    phone.wait_for("playback_start", timeout=20)
    phone.press("2")
    plivo.wait_for_request(lambda r: r.method == "DELETE" and r.path.endswith(f"/Call/{call.call_uuid}/"), 30)
    assert phone.wait_closed(30)
    process.signal(signal.SIGTERM)
    assert process.wait(30) == 0


def test_sigterm_drains_live_calls_and_refuses_new_ones(cli, fakes) -> None:  # type: ignore[no-untyped-def]
    twilio, _ = fakes
    process, base = _serve(cli, fakes, "examples/ivr_menu.py:flow", "--drain-deadline", "30")
    call, _, phone = twilio.inbound_call(f"{base}/twilio/voice")
    assert phone is not None
    phone.wait_for("playback_start", timeout=20)
    process.signal(signal.SIGTERM)
    process.wait_for_line(r"draining: refusing new calls; 1 call\(s\) in progress", timeout=20, stream="stderr")
    _, refused, _ = twilio.inbound_call(f"{base}/twilio/voice", connect=False)
    assert refused.status_code == 200 and "<Reject" in refused.text  # the carrier tries elsewhere
    assert process.proc.poll() is None  # still serving the live call
    phone.press("1")  # the live call finishes normally during the drain
    _completed_over_rest(twilio, call.sid)
    assert process.wait(30) == 0
    assert "'finished': 1" in process.err and "'hung_up': 0" in process.err, process.err


def test_sigterm_at_the_deadline_hangs_up_over_rest(cli, fakes) -> None:  # type: ignore[no-untyped-def]
    twilio, _ = fakes
    process, base = _serve(cli, fakes, "examples/ivr_menu.py:flow", "--drain-deadline", "1")
    call, _, phone = twilio.inbound_call(f"{base}/twilio/voice")
    assert phone is not None
    phone.wait_for("playback_start", timeout=20)
    process.signal(signal.SIGTERM)
    _completed_over_rest(twilio, call.sid)  # the carrier leg is ended, not left billing
    assert process.wait(30) == 0
    assert "'hung_up': 1" in process.err, process.err


def test_native_mode_serves_the_simulated_phone(cli) -> None:  # type: ignore[no-untyped-def]
    from voice_runtime.testing import SimulatedPhone

    port = free_port()
    process = cli(["serve", "examples/ivr_menu.py:flow", "--stt", "mock", "--tts", "mock", "--mode", "native", "--host", "127.0.0.1", "--port", str(port)])
    process.wait_for_line(r"^ready: serving media streams", timeout=60)
    phone = SimulatedPhone(f"ws://127.0.0.1:{port}/stream").connect()
    try:
        phone.wait_for("playback_start", timeout=20)
        phone.press("0")
        assert phone.wait_closed(40)  # operator message, goodbye, the flow hangs up: the server closes
    finally:
        phone.close()
    process.signal(signal.SIGTERM)
    assert process.wait(30) == 0
    assert "drain complete" in process.err  # the native mode drains on SIGTERM too


def test_calls_refuses_a_wrong_token(cli, fakes) -> None:  # type: ignore[no-untyped-def]
    process, base = _serve(cli, fakes, "examples/ivr_menu.py:flow")
    wrong = run_cli(["calls", "--server", base, "--token", "not-it"])
    assert wrong.returncode == 2 and "answered 401: invalid bearer token" in wrong.stderr
    empty = run_cli(["calls", "--server", base, "--json"], env={"VOICE_ADMIN_TOKEN": ADMIN_TOKEN})
    assert empty.returncode == 0 and '"count": 0' in empty.stdout
    process.signal(signal.SIGTERM)
    assert process.wait(30) == 0


def test_outbound_calls_through_a_running_serve(cli, fakes) -> None:  # type: ignore[no-untyped-def]
    """``voice-runtime call --server``: the serve process dials (Twilio, then Plivo) and runs its flow."""
    twilio, plivo = fakes
    process, base = _serve(cli, fakes, "examples/reminder.py:flow", "--mock-script", "thanks")
    env = {"VOICE_ADMIN_TOKEN": ADMIN_TOKEN}

    machine = cli(["call", "+15550104444", "examples/reminder.py:flow", "--server", base, "--carrier", "twilio", "--amd"], env=env)
    dialled = twilio.wait_for_call(60)
    assert dialled.to == "+15550104444" and dialled.form.get("MachineDetection") == "Enable"
    assert dialled.stream()[0].startswith(f"ws://127.0.0.1:{base.rsplit(':', 1)[1]}/stream/")
    phone = twilio.answer(dialled.sid)
    twilio.send_amd(dialled.sid, "machine_start")
    assert machine.wait(90) == 6, machine.out + machine.err
    assert 'AGENT   says: "This is Sunny Dental with a reminder' in machine.out and "RESULT  machine" in machine.out
    assert phone.wait_closed(15)

    human = cli(["call", "+14155550111", "--server", base, "--carrier", "plivo", "--amd"], env=env)
    call = plivo.wait_for_call(60)
    plivo_phone = call.answer()
    call.detect_machine(False)
    plivo_phone.wait_for("playback_end", timeout=30)
    from voice_runtime.providers.mock import tone_speech

    plivo_phone.say(tone_speech(1.0), 8000)
    assert human.wait(90) == 0, human.out + human.err
    assert 'HEARD   "thanks"' in human.out and "RESULT  completed" in human.out

    other = run_cli(["call", "+15550105555", "examples/ivr_menu.py:flow", "--server", base, "--carrier", "twilio"], env=env)
    assert other.returncode == 2 and "this server runs examples/reminder.py:flow, not examples/ivr_menu.py:flow" in other.stderr
    process.signal(signal.SIGTERM)
    assert process.wait(30) == 0


def test_workers_share_the_port_and_log_json(cli) -> None:  # type: ignore[no-untyped-def]
    import json

    from voice_runtime.testing import SimulatedPhone

    port = free_port()
    process = cli(["serve", "examples/ivr_menu.py:flow", "--stt", "mock", "--tts", "mock", "--host", "127.0.0.1", "--port", str(port), "--workers", "2", "--log-json"])
    process.wait_for_line(r"^ready: Application startup complete", timeout=90)
    phones = [SimulatedPhone(f"ws://127.0.0.1:{port}/stream").connect() for _ in range(2)]
    try:
        for phone in phones:
            phone.wait_for("playback_start", timeout=30)
            phone.press("1")
        for phone in phones:
            assert phone.wait_closed(40)
    finally:
        for phone in phones:
            phone.close()
    process.signal(signal.SIGTERM)
    assert process.wait(40) == 0
    records = [json.loads(line) for line in process.err.splitlines() if line.strip()]
    assert records and all({"ts", "level", "logger", "message"} <= set(r) for r in records)
    assert sum("Started server process" in r["message"] for r in records) == 2


def test_reload_restarts_when_the_flow_changes(cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    flow_file = tmp_path / "menu.py"
    shutil.copy(REPO_EXAMPLES / "ivr_menu.py", flow_file)
    port = free_port()
    process = cli(["serve", f"{flow_file}:flow", "--stt", "mock", "--tts", "mock", "--host", "127.0.0.1", "--port", str(port), "--reload"])
    process.wait_for_line(r"^ready: Application startup complete", timeout=90)
    flow_file.write_text(flow_file.read_text().replace("Welcome to Sunny Dental.", "Welcome back to Sunny Dental."))
    process.wait_for_line(r"Reloading", timeout=60, stream="stderr")
    process.wait_for_line(r"^ready: Application startup complete", timeout=90, count=2)  # the new server process
    process.signal(signal.SIGTERM)
    assert process.wait(40) == 0
