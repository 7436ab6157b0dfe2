"""The push contract (``server/push.py``): a wire hands each message to ``deliver`` and ends delivery itself.

The per-message wrapper the connection used to give the wire is gone (the wire calls ``partial(context.run,
_dispatch)`` directly), so what it did is the wire's now, and must hold on both wires that push (picows and
uvicorn's direct channel): a non-None result or a raised exception ends delivery, ``ended`` is called once
with it, nothing after it is delivered, and a disconnect ends with ``ended(None)``. Deterministic, on the real
classes. Then end to end, in every server mode: a bug in message handling ends that call only, with
``pump_failed``, and the server takes the next call.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any

import pytest

from voice_runtime import EndReason

from ..conftest import CallHarness


class _Frame:
    """What ``PicowsWire.on_ws_frame`` reads of a picows frame."""

    def __init__(self, payload: bytes) -> None:
        from picows import WSMsgType

        self.msg_type, self.fin, self._payload = WSMsgType.TEXT, True, payload

    def get_payload_as_bytes(self) -> bytes:
        return self._payload


class _PicowsDriver:
    def __init__(self) -> None:
        pytest.importorskip("picows", reason="the picows mode needs the [fast] extra: pip install 'voice-runtime[fast]'")
        from voice_runtime.server.ws_picows import PicowsWire

        self.wire = PicowsWire(None, None)  # type: ignore[arg-type]  # neither is used before on_ws_connected

    def arrive(self, text: str) -> None:
        self.wire.on_ws_frame(None, _Frame(text.encode()))  # type: ignore[arg-type]

    def push_to(self, deliver: Any, ended: Any) -> None:
        self.wire.push_to(deliver, ended)

    def disconnect(self) -> None:
        self.wire.on_ws_disconnected(None)  # type: ignore[arg-type]


class _Transport:
    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class _UvicornDriver:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        from uvicorn.config import Config
        from uvicorn.server import ServerState

        from voice_runtime.server.uvicorn_ws import fair_websocket_protocol

        async def app(scope: Any, receive: Any, send: Any) -> None:  # never run here
            raise AssertionError

        self.protocol = fair_websocket_protocol(Counter())(Config(app), ServerState(), {}, _loop=loop)
        self.protocol.transport = _Transport()  # type: ignore[assignment]
        self.pushing = False

    def arrive(self, text: str) -> None:
        if self.pushing:
            self.protocol.frames, self.protocol.curr_msg_data_type = [text.encode()], "text"
            self.protocol.send_receive_event_to_app()  # what uvicorn calls for each parsed message
        else:
            self.protocol.queue.put_nowait({"type": "websocket.receive", "text": text})  # type: ignore[arg-type]

    def push_to(self, deliver: Any, ended: Any) -> None:
        self.protocol.vr_push_to(deliver, ended)
        self.pushing = True

    def disconnect(self) -> None:
        self.protocol.queue.put_nowait({"type": "websocket.disconnect", "code": 1005})  # as connection_lost does


def _driver(kind: str) -> Any:
    return _PicowsDriver() if kind == "picows" else _UvicornDriver(asyncio.get_running_loop())


@pytest.mark.parametrize("kind", ["picows", "uvicorn"])
@pytest.mark.parametrize("stop_while_queued", [True, False])
async def test_a_result_ends_delivery_and_is_passed_to_ended_once(kind: str, stop_while_queued: bool) -> None:
    driver = _driver(kind)
    delivered: list[str | bytes] = []
    ended: list[object] = []

    def deliver(message: str | bytes) -> object:
        delivered.append(message)
        return EndReason.CARRIER_STOP if message == "stop" else None

    driver.arrive("one")
    if stop_while_queued:
        driver.arrive("stop")
        driver.arrive("after, queued")
    driver.push_to(deliver, ended.append)
    driver.arrive("two" if stop_while_queued else "stop")
    driver.arrive("after, pushed")
    driver.disconnect()
    assert delivered == ["one", "stop"]
    assert ended == [EndReason.CARRIER_STOP]


@pytest.mark.parametrize("kind", ["picows", "uvicorn"])
async def test_a_raising_deliver_ends_with_its_exception_and_nothing_more_is_delivered(kind: str) -> None:
    driver = _driver(kind)
    delivered: list[str | bytes] = []
    ended: list[object] = []

    def deliver(message: str | bytes) -> object:
        delivered.append(message)
        if message == "boom":
            raise RuntimeError("a bug in dispatch")
        return None

    driver.push_to(deliver, ended.append)
    for text in ("one", "boom", "two"):
        driver.arrive(text)  # the wire's callback survives: nothing propagates out of it
    driver.disconnect()
    assert delivered == ["one", "boom"]
    assert len(ended) == 1 and isinstance(ended[0], RuntimeError)


@pytest.mark.parametrize("kind", ["picows", "uvicorn"])
async def test_a_disconnect_ends_with_none_once_even_before_push_to(kind: str) -> None:
    driver = _driver(kind)
    ended: list[object] = []
    driver.arrive("one")
    driver.disconnect()
    delivered: list[str | bytes] = []
    driver.push_to(lambda m: delivered.append(m), ended.append)
    driver.disconnect()
    assert ended == [None]
    assert delivered == ["one"]  # what came before the close is still handled, in order


@pytest.mark.timeout(60)
def test_a_bug_in_message_handling_ends_that_call_only_in_every_mode(
    any_mode: CallHarness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The connection's handling raises on one DTMF message: that call ends with ``pump_failed`` and the error
    is logged; the server is unharmed and the next call runs its flow."""
    from voice_runtime.protocols import TwilioDialect

    parse = TwilioDialect.parse

    def buggy_parse(self: TwilioDialect, text: str | bytes) -> Any:
        if b'"dtmf"' in (text if isinstance(text, bytes) else text.encode()):
            raise RuntimeError("a bug in message handling")
        return parse(self, text)

    monkeypatch.setattr(TwilioDialect, "parse", buggy_parse)
    first_ended = threading.Event()
    second_flow = threading.Event()
    reasons: list[Any] = []

    def flow(session: Any) -> None:
        if first_ended.is_set():  # the second call
            second_flow.set()
            return
        session.wait_until_disconnected(20)
        reasons.append(session.end_reason)
        first_ended.set()

    server, running = any_mode.serve(flow)
    with caplog.at_level("ERROR", logger="voice_runtime.server.connection"):
        first = any_mode.phone(running)
        first.press("5")
        assert first_ended.wait(20), "the first call did not end"
    assert reasons == [EndReason.PUMP_FAILED]
    assert any("carrier message handling failed" in r.getMessage() and r.exc_info for r in caplog.records)
    assert first.wait_closed(20)
    second = any_mode.phone(running)
    assert second_flow.wait(20)
    second.hangup()
