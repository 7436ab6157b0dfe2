"""Run the examples offline: a real VoiceServer on 127.0.0.1 with the mock providers, a SimulatedPhone as
the caller, and (where a carrier is part of the story) the loopback fake Twilio / fake Plivo.

Nothing here is needed in production; it is what lets ``python -m examples.<name>`` and the test suite run
every example end to end without credentials or network.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from voice_runtime import VoiceServer, VoiceSession, create_stt, create_tts
from voice_runtime.server import RunningServer
from voice_runtime.testing import SimulatedPhone


@dataclass
class FlowRun:
    """What one offline call's flow did: its session, its return value or error, and when it finished."""

    session: VoiceSession | None = None
    value: Any = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def wait(self, timeout: float = 30.0) -> Any:
        if not self.done.wait(timeout):
            raise TimeoutError("the example's flow did not finish in time")
        if self.error is not None:
            raise self.error
        return self.value

    @property
    def said(self) -> list[str]:
        """Every text the agent spoke, in order (from the call's events)."""
        assert self.session is not None
        return [e.data["text"] for e in self.session.events if e.kind == "tts_start"]


def recording(flow: Callable[[VoiceSession], Any], run: FlowRun) -> Callable[[VoiceSession], Any]:
    def wrapped(session: VoiceSession) -> Any:
        run.session = session
        try:
            run.value = flow(session)
        except BaseException as exc:
            run.error = exc
        finally:
            run.done.set()

    return wrapped


@contextlib.contextmanager
def offline_server(script: list[str] | None = None, **server_kwargs: Any) -> Iterator[tuple[VoiceServer, RunningServer]]:
    """A VoiceServer with mock providers (scripted STT words, tone TTS) running on a loopback port."""
    server_kwargs.setdefault("stt_factory", lambda: create_stt("mock", script=list(script or [])))
    server_kwargs.setdefault("tts_factory", lambda: create_tts("mock"))
    server = VoiceServer(**server_kwargs)
    running = server.start()
    server.public_url = running.http_url
    try:
        yield server, running
    finally:
        running.stop()


def inbound_call(server: VoiceServer, running: RunningServer, flow: Callable[[VoiceSession], Any], **phone_kwargs: Any) -> tuple[FlowRun, SimulatedPhone]:
    """Point the server's inbound flow at ``flow`` and dial it with a SimulatedPhone."""
    run = FlowRun()
    server.inbound_flow = recording(flow, run)
    phone = SimulatedPhone(running.ws_url + "/stream", **phone_kwargs).connect()
    return run, phone


def next_mark(phone: SimulatedPhone, previous: Any = None, timeout: float = 15.0) -> Any:
    """Wait until the phone has *heard* the next prompt (its mark echoed) after ``previous``."""
    return phone.wait_for("mark_echoed", timeout, after=0.0 if previous is None else previous.at + 1e-6)


def run_warm_transfer_demo() -> dict[str, Any]:
    """Warm transfer on both carriers against the fake Twilio and fake Plivo; returns what each carrier got."""
    from examples.warm_transfer import warm_transfer
    from voice_runtime.testing.fake_plivo import FakePlivo
    from voice_runtime.testing.fake_twilio import FakeTwilio
    from voice_runtime.transports.plivo_control import PlivoCallControl
    from voice_runtime.transports.twilio_control import TwilioCallControl

    out: dict[str, Any] = {}
    with FakeTwilio() as fake, offline_server() as (server, running):
        control = TwilioCallControl(server, credentials=fake.credentials(), http_client=fake.http_client())
        answered = threading.Thread(target=lambda: fake.answer(fake.wait_for_call(10).sid), daemon=True)
        answered.start()
        with control.call("+15551234567", answer_timeout=10) as session:
            out["twilio"] = warm_transfer(session, control, "+15559990000", line="Connecting you to billing now.")
        out["twilio_twiml"] = fake.requests_for("POST", f"/Calls/{session.call_sid}.json")[0].form_dict["Twiml"]
    with FakePlivo() as plivo, offline_server() as (server, running):
        control = PlivoCallControl(
            server, auth_id=plivo.auth_id, auth_token=plivo.auth_token, api_base_url=plivo.base_url, from_number="+14155550000"
        )
        answered = threading.Thread(target=lambda: plivo.wait_for_call(10).answer(), daemon=True)
        answered.start()
        with control.call("+14155551234", answer_timeout=10) as session:
            out["plivo"] = warm_transfer(session, control, "+14155557777", line="Connecting you to billing now.")
        call = plivo.wait_for_call()
        call.transferred.wait(10)
        out["plivo_xml"] = call.transfers[0] if call.transfers else ""
    for carrier in ("twilio", "plivo"):
        print(f"{carrier}: transferred={out[carrier]} -> {out[carrier + ('_twiml' if carrier == 'twilio' else '_xml')]}")
    return out
