"""The FastAPI mode's direct channel (``server/uvicorn_ws.py``): once a call is live, frames are pushed to the
connection as uvicorn parses them and audio is written inline, with no ASGI hop per 20 ms frame.

Real uvicorn, real sockets on loopback, a :class:`~voice_runtime.testing.SimulatedPhone`. What must hold:

* a FastAPI-mode call runs on the direct wire, and speech, marks and DTMF all work on it;
* what ASGI queued before the connection took over reaches it first and in order, and later messages are
  pushed without pausing the socket per message (on the real protocol class, deterministically);
* a uvicorn that runs without our protocol offers no channel, and the call runs on plain ASGI as before.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from voice_runtime import MarkOutcome
from voice_runtime.server import runners
from voice_runtime.server.wire import StarletteWire, UvicornDirectWire

from ..conftest import CallHarness

DIGITS = "0123456789*#" * 2


def _connection_of(server: Any, session: Any) -> Any:
    return next(c for c in list(server.connections) if c.session is session)


def _call(harness: CallHarness, **serve_kwargs: Any) -> dict[str, Any]:
    """One call: 24 digits pressed at once after ``start``, then 10 marks and a spoken line; what the flow saw."""
    result: dict[str, Any] = {}
    done = threading.Event()

    def flow(session: Any) -> None:
        try:
            result["wire"] = _connection_of(server, session).wire
            result["digits"] = "".join(session.wait_for_dtmf(20) for _ in DIGITS)
            result["marks"] = [session.send_mark_and_wait(f"m{i}", timeout=20) for i in range(10)]
            session.speak("hello there")
            result["said"] = session.send_mark_and_wait("after-say", timeout=20)
        finally:
            done.set()

    server, running = harness.serve(flow, **serve_kwargs)
    phone = harness.phone(running)
    phone.press(DIGITS)
    assert done.wait(40), result
    result["received"] = len(phone.received_ulaw())  # the spoken line's audio, as the phone got it
    return result


@pytest.mark.timeout(60)
def test_a_fastapi_call_runs_on_the_direct_wire_with_speech_marks_and_dtmf(harness: CallHarness) -> None:
    result = _call(harness)
    assert isinstance(result["wire"], UvicornDirectWire)
    assert result["digits"] == DIGITS
    assert result["marks"] == [MarkOutcome.PLAYED] * 10 and result["said"] is MarkOutcome.PLAYED
    assert result["received"] >= 800  # "hello there" from the mock TTS: well over 0.1 s of μ-law


@pytest.mark.timeout(60)
def test_without_our_uvicorn_protocol_the_call_runs_on_plain_asgi(harness: CallHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    hardened = runners.hardened_uvicorn_options

    def plain(server: Any) -> dict[str, Any]:
        return {**hardened(server), "ws": "websockets-sansio"}  # uvicorn's own protocol: no direct channel

    monkeypatch.setattr(runners, "hardened_uvicorn_options", plain)
    result = _call(harness)
    assert type(result["wire"]) is StarletteWire
    assert result["digits"] == DIGITS
    assert result["marks"] == [MarkOutcome.PLAYED] * 10 and result["said"] is MarkOutcome.PLAYED
    assert result["received"] >= 800


class _Transport:
    """What the protocol's push path touches of an asyncio transport: the reading switch."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")

    def is_closing(self) -> bool:
        return False


async def test_the_channel_hands_over_what_asgi_queued_in_order_then_pushes_without_pausing_the_socket() -> None:
    """Deterministic, on the real protocol class: messages uvicorn queued before the connection took over
    (the opening's tail, audio that came while the session was built) go first, in order; later ones are
    pushed as parsed with no pause/resume of the socket per message; a disconnect reaches ``ended(None)`` once."""
    import asyncio
    from collections import Counter

    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from voice_runtime.server.uvicorn_ws import fair_websocket_protocol

    async def app(scope: Any, receive: Any, send: Any) -> None:  # never run here
        raise AssertionError

    protocol = fair_websocket_protocol(Counter())(Config(app), ServerState(), {}, _loop=asyncio.get_running_loop())
    transport = _Transport()
    protocol.transport = transport  # type: ignore[assignment]
    for message in ({"type": "websocket.receive", "text": "one"}, {"type": "websocket.receive", "bytes": b"\x00"},
                    {"type": "websocket.receive", "text": "two"}):
        protocol.queue.put_nowait(message)  # type: ignore[arg-type]
    protocol.read_paused = True  # uvicorn paused reading after queueing them
    got: list[str | bytes] = []
    closed: list[object] = []
    protocol.vr_push_to(got.append, closed.append)
    assert got == ["one", b"\x00", "two"] and transport.calls == ["resume"] and not protocol.read_paused

    protocol.frames, protocol.curr_msg_data_type = [b"three"], "text"
    protocol.send_receive_event_to_app()  # what uvicorn calls for each parsed message
    protocol.frames, protocol.curr_msg_data_type = [b"\xff\xfe"], "text"  # not UTF-8: handed on as bytes
    protocol.send_receive_event_to_app()
    assert got[3:] == ["three", b"\xff\xfe"] and transport.calls == ["resume"] and protocol.queue.empty()

    protocol.queue.put_nowait({"type": "websocket.disconnect", "code": 1005})  # as connection_lost does
    protocol.queue.put_nowait({"type": "websocket.disconnect", "code": 1005})
    assert closed == [None]  # ended(None): the socket closed, once
    assert (await protocol.receive())["type"] == "websocket.disconnect"  # ASGI still sees it too
