"""The fast server modes (websockets-native ``server/ws_native.py``, picows ``server/ws_picows.py``) behave
exactly like the FastAPI mode. Every test runs against both.

Real loopback sockets: the simulated phone (Twilio and Plivo dialects) calls a ``VoiceServer`` served by
``start_native``; the same flows, routes, token rules and upgrade validators as the default mode. No timing
assertions: these check correctness only (speed is measured by ``benchmarks/``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from voice_runtime import MarkOutcome
from voice_runtime.providers.mock import tone_speech
from voice_runtime.server.ws_native import start_native
from voice_runtime.testing.phone import PhoneRejected

from ..conftest import CallHarness, FlowResult


def _start_picows(server: Any) -> Any:
    pytest.importorskip("picows", reason="the picows mode needs the [fast] extra: pip install 'voice-runtime[fast]'")
    from voice_runtime.server.ws_picows import start_picows

    return start_picows(server)


@pytest.fixture(params=["native", "picows"])
def native(request: pytest.FixtureRequest) -> Iterator[CallHarness]:
    """The shared call harness, serving with a fast mode instead of uvicorn."""
    h = CallHarness(start=start_native if request.param == "native" else _start_picows)
    try:
        yield h
    finally:
        h.close()


@pytest.mark.parametrize("carrier", ["twilio", "plivo"])
def test_call_speak_mark_listen_end_to_end(native: CallHarness, carrier: str) -> None:
    out = FlowResult()

    def body(session: Any) -> None:
        result = session.speak("Hello from the native server mode.", wait=True, timeout=10)
        out.values["heard"] = result.heard
        out.values["said"] = session.listen(timeout=10)
        out.values["carrier"] = session.carrier

    _, handle = native.serve(out.run(body), script=["yes please"])
    phone = native.phone(handle, carrier=carrier)
    phone.wait_for("mark_echoed", timeout=10)
    phone.say(tone_speech(0.5))
    values = out.wait()
    assert values == {"heard": True, "said": "yes please", "carrier": carrier}
    assert len(phone.heard_ulaw().replace(b"\xff", b"")) > 4000  # the agent's audio really was played
    assert phone.violations == []


def test_clear_resolves_marks_cleared_and_the_call_goes_on(native: CallHarness) -> None:
    out = FlowResult()
    playing = threading.Event()

    def body(session: Any) -> None:
        result = session.speak("This sentence is long enough to be interrupted halfway through, surely.")
        playing.wait(5)
        session.request_clear_buffer()
        out.values["outcome"] = result.wait(5)
        out.values["after"] = session.send_mark_and_wait("after_clear", timeout=5)

    _, handle = native.serve(out.run(body))
    phone = native.phone(handle)
    phone.wait_for("playback_start", timeout=5)
    playing.set()
    values = out.wait()
    phone.wait_for("clear", timeout=5)
    assert values == {"outcome": MarkOutcome.CLEARED, "after": MarkOutcome.PLAYED}
    assert phone.violations == []


def test_dialled_call_stream_is_routed_by_single_use_token(native: CallHarness) -> None:
    server, handle = native.serve()
    session = server.new_session()
    token = server.expect_stream(session)
    phone = native.phone(handle, path=f"/stream/{token}")
    session.wait_for_ws_connect(timeout=5)
    assert session.send_mark_and_wait("routed", timeout=5) is MarkOutcome.PLAYED
    with pytest.raises(PhoneRejected) as used:
        native.phone(handle, path=f"/stream/{token}")  # tokens are single use
    assert used.value.status == 403
    session.request_disconnect()
    assert phone.wait_closed(5)


def test_unknown_token_and_unknown_path_are_refused_before_the_handshake(native: CallHarness) -> None:
    _, handle = native.serve()
    with pytest.raises(PhoneRejected) as bad_token:
        native.phone(handle, path="/stream/not-a-token")
    assert bad_token.value.status == 403
    with pytest.raises(PhoneRejected) as bad_path:
        native.phone(handle, path="/elsewhere")
    assert bad_path.value.status == 404


def test_upgrade_validators_run_before_the_handshake(native: CallHarness) -> None:
    out = FlowResult()
    server, handle = native.serve(out.run(lambda s: out.values.update(started=True)))
    seen: list[dict[str, Any]] = []

    async def validator(websocket: Any) -> bool | None:
        seen.append({"sig": websocket.headers.get("X-Test-Signature"), "url": str(websocket.url), "path": websocket.scope["path"]})
        signature = websocket.headers.get("x-test-signature")
        return None if signature is None else signature == "good"

    server.add_upgrade_validator("test", validator)
    with pytest.raises(PhoneRejected) as wrong:
        native.phone(handle, headers={"X-Test-Signature": "bad"})
    assert wrong.value.status == 403
    with pytest.raises(PhoneRejected) as unsigned:  # a validator is registered: unsigned is refused
        native.phone(handle)
    assert unsigned.value.status == 403
    native.phone(handle, headers={"X-Test-Signature": "good"})
    assert out.wait()["started"] is True
    assert seen[0]["sig"] == "bad" and seen[0]["path"] == "/stream" and seen[0]["url"].endswith("/stream")


def test_draining_server_refuses_new_streams(native: CallHarness) -> None:
    server, handle = native.serve()
    server.accepting = False
    with pytest.raises(PhoneRejected) as refused:
        native.phone(handle)
    assert refused.value.status == 403


def test_stop_ends_live_calls_and_wakes_their_flows(native: CallHarness) -> None:
    out = FlowResult()
    listening = threading.Event()

    def body(session: Any) -> None:
        listening.set()
        try:
            session.listen(timeout=30)
        except Exception as exc:  # CallHangupError expected
            out.values["error"] = type(exc).__name__

    _, handle = native.serve(out.run(body))
    phone = native.phone(handle)
    assert listening.wait(5)
    handle.stop()
    assert out.wait()["error"] == "CallHangupError"
    assert phone.wait_closed(5)


@pytest.mark.parametrize("mode", ["native", "picows"])
def test_a_burst_of_connections_waits_in_the_backlog_while_the_loop_is_busy(mode: str) -> None:
    """250 callers connect at once while the server's loop is stuck: the kernel must finish all their TCP
    handshakes and queue them for ``accept``. asyncio's default backlog (100) queued 101 and dropped the other
    SYNs, so those callers waited for a retransmit (1 s, 3 s, …) or timed out."""
    import select
    import socket
    import time

    from voice_runtime import VoiceServer, create_stt, create_tts

    server = VoiceServer(stt_factory=lambda: create_stt("mock"), tts_factory=lambda: create_tts("mock"))
    running = start_native(server) if mode == "native" else _start_picows(server)
    stuck, release = threading.Event(), threading.Event()

    def busy() -> None:  # on the server's loop: no accept() runs until released
        stuck.set()
        release.wait(30)

    sockets: list[socket.socket] = []
    try:
        assert running.loop is not None
        running.loop.call_soon_threadsafe(busy)
        assert stuck.wait(10)
        for _ in range(250):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex((running.host, running.port))
            sockets.append(s)
        waiting = set(sockets)
        deadline = time.monotonic() + 0.9  # inside the first SYN retransmit (1 s): only queued handshakes finish
        while waiting and time.monotonic() < deadline:
            _, writable, _ = select.select([], list(waiting), [], max(0.0, deadline - time.monotonic()))
            waiting -= set(writable)
        assert not waiting, f"{len(waiting)} of 250 connects not established while the loop was busy"
        assert all(s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0 for s in sockets)
    finally:
        release.set()
        for s in sockets:
            s.close()
        running.stop()
