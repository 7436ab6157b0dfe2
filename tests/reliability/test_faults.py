"""Fault injection on the carrier socket: drop it at every phase of a call, abruptly and cleanly, on every dialect.

For each phase the flow is parked in the blocking call that phase is about (``speak(wait=True)``,
``send_mark_and_wait``, ``listen``, the wait after a ``clear``), every one with a 30 s timeout. Then the
carrier side goes away, either **abruptly** (``transport.abort()``: no ``stop``, no close frame — a network
failure) or **cleanly** (the carrier's ``stop`` then a close frame). Every case asserts:

* the blocking call returns or raises long before its timeout;
* the session reports the end exactly once (one ``CALL_ENDED`` event, one ``on_disconnected`` call);
* the recording is flushed (``recording_saved`` and a WAV on disk);
* no thread and no asyncio task on the server loop is left behind.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from voice_runtime import CallHangupError, CallTimeoutError, MarkOutcome
from voice_runtime.testing import SimulatedPhone
from voice_runtime.testing.carriers import carrier_codec

from ..conftest import CallHarness, FlowResult
from .conftest import CARRIERS, CallProbe, LeakCheck

LONG = "This is a long sentence that keeps the agent talking for several seconds, long enough to be cut off."
PHASES = ["speak", "mark_wait", "listen", "clear"]
MODES = ["drop", "hangup"]


def _kill(phone: SimulatedPhone, mode: str) -> None:
    """Fault the socket from the test thread."""
    if mode == "drop":
        phone.drop()
    else:
        phone.hangup()


def _kill_on_phone_thread(phone: SimulatedPhone, mode: str) -> None:
    """Fault the socket from inside the phone's loop (used from a listener, at an exact moment)."""
    if mode == "drop":
        assert phone._ws is not None
        phone._ws.transport.abort()
    else:
        asyncio.ensure_future(phone._hangup())


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("phase", PHASES)
def test_socket_fault_releases_every_waiter_once_and_leaks_nothing(
    harness: CallHarness, flow_result: FlowResult, tmp_path: Path, carrier: str, mode: str, phase: str
) -> None:
    probe = CallProbe()
    entered = threading.Event()

    def body(session: Any) -> None:
        probe.attach(session)
        started = time.monotonic()
        try:
            if phase == "speak":
                entered.set()
                result = session.speak(LONG, wait=True, timeout=30)
                flow_result.values["outcome"] = "hangup" if result.call_disconnected else result
            elif phase == "mark_wait":
                session.put_outbound_sync(b"\x7f" * 40000)  # 5 s of audio ahead of the mark
                entered.set()
                flow_result.values["outcome"] = session.send_mark_and_wait("long", timeout=30)
            elif phase == "listen":
                entered.set()
                flow_result.values["outcome"] = session.listen(timeout=30)
            else:  # clear: the socket dies the moment the carrier sees the clear
                result = session.speak(LONG)
                entered.set()
                flow_result.values["cleared"] = result.wait(30)
                flow_result.values["outcome"] = session.send_mark_and_wait("after_clear", timeout=30)
        except CallHangupError:
            flow_result.values["outcome"] = "hangup"
        flow_result.values["elapsed"] = time.monotonic() - started

    server, running = harness.serve(flow_result.run(body), recordings_dir=tmp_path)
    leaks = LeakCheck(running)
    phone = SimulatedPhone(running.ws_url + "/stream", carrier=carrier)
    if phase == "clear":
        phone.add_listener(lambda event: event.kind == "clear" and _kill_on_phone_thread(phone, mode))
    phone.connect()
    try:
        assert entered.wait(5)
        if phase in ("speak", "clear"):
            phone.wait_for("playback_start", timeout=5)  # really mid-sentence
        elif phase == "mark_wait":
            phone.wait_for("media", timeout=5)
        if phase == "clear":
            session = next(iter(server.connections)).session
            assert session is not None
            session.request_clear_buffer()
            assert phone.wait_closed(5)
        else:
            _kill(phone, mode)
        values = flow_result.wait(10)
    finally:
        phone.close()

    assert values["outcome"] in ("hangup", MarkOutcome.HUNG_UP), values
    assert values["elapsed"] < 10, f"blocking call took {values['elapsed']:.1f}s to notice the end (timeout 30 s)"
    if phase == "clear":
        assert values["cleared"] in (MarkOutcome.CLEARED, MarkOutcome.HUNG_UP)
    probe.assert_ended_once()
    (recording,) = probe.recordings  # unique, time-stamped name that carries the call id
    assert Path(recording).exists() and Path(recording).parent == tmp_path and phone.codec.call_id in recording
    leaks.assert_clean()
    assert not server.connections


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize("mode", MODES)
def test_socket_fault_before_start_creates_no_session_and_leaks_nothing(harness: CallHarness, carrier: str, mode: str) -> None:
    """The carrier connects but dies before ``start``: no session, no flow thread, nothing left running."""
    flows: list[Any] = []
    server, running = harness.serve(flows.append)
    leaks = LeakCheck(running)
    codec = carrier_codec(carrier)
    opening = codec.opening()
    codec.opening = lambda: [m for m in opening if '"connected"' in m]  # type: ignore[method-assign]
    phone = SimulatedPhone(running.ws_url + "/stream", codec=codec, send_silence=False)
    phone.connect()
    try:
        _kill(phone, mode)
    finally:
        phone.close()
    leaks.assert_clean()
    assert flows == [] and not server.flow_threads
    assert not server.connections


@pytest.mark.parametrize("carrier", CARRIERS)
def test_carrier_drop_racing_the_flows_own_hangup_ends_the_call_once(
    harness: CallHarness, flow_result: FlowResult, tmp_path: Path, carrier: str
) -> None:
    """Both ends hang up at the same moment: still exactly one end, one recording, no leak."""
    probe = CallProbe()
    go = threading.Event()

    def body(session: Any) -> None:
        probe.attach(session)
        session.speak(LONG)
        go.wait(5)
        flow_result.values["ended"] = session.hangup(timeout=10)

    server, running = harness.serve(flow_result.run(body), recordings_dir=tmp_path)
    leaks = LeakCheck(running)
    phone = harness.phone(running, carrier=carrier)
    phone.wait_for("playback_start", timeout=5)
    go.set()
    phone.drop()
    assert flow_result.wait(10)["ended"] is True
    probe.assert_ended_once()
    phone.close()
    leaks.assert_clean()


@pytest.mark.parametrize("carrier", CARRIERS)
def test_carrier_that_never_sends_start_is_closed_at_the_start_timeout(harness: CallHarness, carrier: str) -> None:
    """A socket that opens and then says nothing must not hold a slot forever."""
    from voice_runtime.server import ConnectionConfig

    server, running = harness.serve(None, connection_config=ConnectionConfig(start_timeout=0.5))
    leaks = LeakCheck(running)
    codec = carrier_codec(carrier)
    codec.opening = lambda: []  # type: ignore[method-assign]
    phone = SimulatedPhone(running.ws_url + "/stream", codec=codec, send_silence=False)
    phone.connect()
    assert phone.wait_closed(5)
    assert phone.close_code == 1008
    phone.close()
    leaks.assert_clean()


def test_listen_with_a_silent_stt_times_out_cleanly(harness: CallHarness, flow_result: FlowResult) -> None:
    """The positive control for the phases above: with the call up, the same waits end by their timeout."""

    def body(session: Any) -> None:
        started = time.monotonic()
        try:
            session.listen(timeout=0.5)
        except CallTimeoutError:
            flow_result.values["timeout"] = time.monotonic() - started

    _, running = harness.serve(flow_result.run(body))
    harness.phone(running)
    assert 0.4 <= flow_result.wait(5)["timeout"] < 5
