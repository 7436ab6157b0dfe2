"""0.1.x hand-written transports: get_outbound / get_pending_mark / session.outbound on a real event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from voice_runtime import MarkOutcome, VoiceSession
from voice_runtime.errors import CallHangupError


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def on(loop: asyncio.AbstractEventLoop, coro: object, timeout: float = 5.0) -> object:
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)  # type: ignore[arg-type]


def test_audio_and_marks_reach_a_hand_written_transport_in_order(loop: asyncio.AbstractEventLoop) -> None:
    session = VoiceSession()
    session.set_loop(loop)
    session.signal_ws_connected("MZ1")
    outcome: list[MarkOutcome] = []
    waiter = threading.Thread(target=lambda: outcome.append(session.send_mark_and_wait("after", timeout=5)))
    session.put_outbound_sync(b"\x01" * 320)
    waiter.start()
    assert on(loop, session.get_outbound()) == b"\x01" * 320
    name = on(loop, session.get_pending_mark())
    assert isinstance(name, str) and name.startswith("after__") and len(name) == len("after__") + 8
    session.signal_mark_received(name)
    waiter.join(5)
    assert outcome == [MarkOutcome.PLAYED]


def test_outbound_is_an_asyncio_queue_view(loop: asyncio.AbstractEventLoop) -> None:
    session = VoiceSession()
    assert isinstance(session.outbound, asyncio.Queue)
    session.outbound.put_nowait(b"\x02" * 160)
    assert session.outbound.qsize() == 1 and not session.outbound.empty()
    session.set_loop(loop)
    assert on(loop, session.outbound.get()) == b"\x02" * 160
    assert session.outbound.empty()


def test_a_hangup_wakes_a_transport_blocked_in_get_outbound(loop: asyncio.AbstractEventLoop) -> None:
    session = VoiceSession()
    session.set_loop(loop)
    session.signal_ws_connected("MZ2")
    future = asyncio.run_coroutine_threadsafe(session.get_outbound(), loop)
    with pytest.raises(TimeoutError):
        future.result(0.2)  # nothing queued: it waits (on an event, not a poll)
    session.signal_disconnected("carrier_stop")
    with pytest.raises(CallHangupError):
        future.result(5)


def test_request_disconnect_and_clear_reach_the_hand_written_link(loop: asyncio.AbstractEventLoop) -> None:
    from voice_runtime.session.hand_written import link_for

    session = VoiceSession()
    session.set_loop(loop)
    session.signal_ws_connected("MZ3")

    async def attach() -> object:
        return link_for(session)

    link = on(loop, attach())
    session.put_outbound_sync(b"\x03" * 160)
    session.request_clear_buffer()
    assert on(loop, link.clear_requests.get()) == "MZ3"  # type: ignore[attr-defined]
    session.request_disconnect()
    on(loop, link.disconnect_requested.wait())  # type: ignore[attr-defined]
