"""Outbound order and liveness on the fast paths: audio sent from the event loop (inline listeners, ``async for``
echoes) may go straight to the wire, and must still never overtake a clear or audio queued before it; the pump
must never park with audio waiting.

The ordering tests run over real sockets in every server mode (picows sends inline, the others through the
pump); the pump test drives ``CallConnection`` over the in-memory wire, with one send held, to reach an
interleaving a socket only hits by chance.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from typing import Any

import pytest

from voice_runtime.lifecycle import CallState
from voice_runtime.server.connection import CallConnection, ConnectionConfig
from voice_runtime.session import VoiceSession
from voice_runtime.testing.memory_wire import MemoryWire, memory_wire_pair

from ..conftest import CallHarness
from .test_connection_memory import TWILIO_CONNECTED, _until, twilio_start




def _on_first_caller_frame(action: Any) -> Any:
    """An ``on_call_started`` hook running ``action(session)`` once, on the loop, at the caller's first frame."""

    def on_started(session: Any) -> None:
        def first(_chunk: bytes) -> None:
            remove()
            action(session)

        remove = session.add_audio_listener(first)

    return on_started


def test_audio_sent_on_the_loop_after_a_clear_reaches_the_carrier_after_the_clear(any_mode: CallHarness) -> None:
    """Loop-side code that clears and then sends (a barge-in handler answering at once) must have its new audio
    *kept*: sent after the clear, not before it (where the clear would silently drop it)."""
    sent = threading.Event()

    def barge_in_and_answer(session: Any) -> None:
        session.send_audio(b"\x11" * 160)  # playing when the caller barges in
        session.request_clear_buffer()
        session.send_audio(b"\x22" * 320)  # the answer
        sent.set()

    _, running = any_mode.serve(on_call_started=_on_first_caller_frame(barge_in_and_answer))
    phone = any_mode.phone(running)
    assert sent.wait(10)
    phone.wait_for("media", timeout=5, predicate=lambda e: e.data["bytes"] == 320)
    order = [(e.kind, e.data.get("bytes")) for e in phone.events if e.kind in ("media", "clear")]
    # The first chunk is sent at once where the wire allows it (picows), else dropped by the clear before the
    # pump took it; either way the answer comes after the clear.
    assert order in ([("media", 160), ("clear", None), ("media", 320)], [("clear", None), ("media", 320)])
    assert phone.agent_received.endswith(b"\x22" * 320)


def test_audio_sent_on_the_loop_waits_behind_audio_already_queued(any_mode: CallHarness) -> None:
    """The loop's ``send_audio`` may skip the queue only when nothing is queued: behind a second of queued
    speech (paced out over that second) it goes last, and every byte arrives once, in order."""
    queued = b"".join(bytes([n]) * 160 for n in range(1, 51))  # 1 s of distinct frames
    sent = threading.Event()

    def queue_then_send(session: Any) -> None:
        assert session.send_audio(queued)
        session.send_audio(b"\xee" * 160)
        sent.set()

    _, running = any_mode.serve(on_call_started=_on_first_caller_frame(queue_then_send))
    phone = any_mode.phone(running)
    assert sent.wait(10)
    phone.wait_for("media", timeout=5, predicate=lambda e: bytes(phone.agent_received).endswith(b"\xee" * 160))
    assert bytes(phone.agent_received) == queued + b"\xee" * 160


class _HeldClearWire:
    """The in-memory wire with the first ``clear`` send held until released: the pump is suspended in it."""

    def __init__(self, wire: MemoryWire) -> None:
        self._wire = wire
        self.clear_sending = asyncio.Event()
        self.release = asyncio.Event()

    async def receive(self) -> str | bytes:
        return await self._wire.receive()

    async def send(self, text: str) -> None:
        if '"clear"' in text and not self.release.is_set():
            self.clear_sending.set()
            await asyncio.wait_for(self.release.wait(), 5)
        await self._wire.send(text)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._wire.close(code, reason)


async def test_audio_queued_while_the_pump_clears_the_bed_is_sent_not_stranded() -> None:
    """When a bed ends, the pump clears the bed still at the carrier; audio queued while that clear is being
    sent woke the pump then (the queue was idle), and no later producer will. It must go out — the pump used to
    drop that wake-up and park with the audio queued, silent until some other event woke it."""
    session = VoiceSession()
    server_wire, carrier = memory_wire_pair()
    wire = _HeldClearWire(server_wire)

    async def session_for(*_: Any) -> VoiceSession:
        return session

    connection = CallConnection(wire, session_for, config=ConnectionConfig(start_timeout=2.0, playout_lead=10.0))
    task = asyncio.ensure_future(connection.run())
    try:
        await carrier.send(TWILIO_CONNECTED)
        await carrier.send(twilio_start())
        await asyncio.wait_for(_until(session, lambda: session.state is CallState.LIVE), 2)
        session.set_background(b"\x55" * 8000, volume=0.5)
        assert json.loads(await carrier.receive())["event"] == "media"  # bed fill is at the carrier
        session.clear_background()  # -> the pump clears that fill, and its send is held
        await asyncio.wait_for(wire.clear_sending.wait(), 2)
        assert session.send_audio(b"\x22" * 160)  # queued (and the pump woken) while the clear is on its way
        wire.release.set()
        assert json.loads(await carrier.receive())["event"] == "clear"
        media = json.loads(await carrier.receive(timeout=2.0))
        assert media["event"] == "media" and base64.b64decode(media["media"]["payload"]) == b"\x22" * 160
    finally:
        carrier.hang_up()
        await asyncio.wait_for(task, 5)


def test_audio_sent_on_the_loop_under_a_bed_is_mixed_with_it(any_mode: CallHarness) -> None:
    """With a bed on, loop-side audio cannot take the straight-to-the-wire path (the pump mixes the bed in):
    what the phone receives after it is the chunk mixed with the bed, never the bare chunk."""
    bed = bytes([0x40 + n % 32 for n in range(8000)])  # a busy μ-law pattern, unlike the chunk
    chunk = b"\x22" * 160
    sent = threading.Event()

    def on_started(session: Any) -> None:
        session.set_background(bed, volume=0.5)

        def first(_chunk: bytes) -> None:
            remove()
            session.send_audio(chunk)
            sent.set()

        remove = session.add_audio_listener(first)

    _, running = any_mode.serve(on_call_started=on_started)
    phone = any_mode.phone(running)
    assert sent.wait(10)
    phone.wait_for("media", timeout=5)
    start = len(phone.agent_received)
    phone.wait_for("media", timeout=5, predicate=lambda e: len(phone.agent_received) >= start + 3200)
    assert chunk not in bytes(phone.agent_received)
