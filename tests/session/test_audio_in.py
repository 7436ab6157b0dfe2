"""Raw caller audio for flows (``audio_in``, ``audio_in_async``) and the cheap raw send, over the in-memory wire."""

from __future__ import annotations

import asyncio
import base64
import json
import threading

from voice_runtime.providers.mock import MockStt
from voice_runtime.server.connection import CallConnection, ConnectionConfig
from voice_runtime.session import VoiceSession
from voice_runtime.testing.memory_wire import memory_wire_pair

from ..server.test_connection_memory import TWILIO_CONNECTED, twilio_media, twilio_start


async def _live_call(session: VoiceSession):  # type: ignore[no-untyped-def]
    wire, carrier = memory_wire_pair()

    async def session_for(started, dialect):  # type: ignore[no-untyped-def]
        return session

    connection = CallConnection(wire, session_for, config=ConnectionConfig(playout_lead=10.0))
    task = asyncio.ensure_future(connection.run())
    live = asyncio.Event()
    loop = asyncio.get_running_loop()
    remove = session.add_event_listener(lambda e: e.kind == "stream_started" and loop.call_soon_threadsafe(live.set))
    await carrier.send(TWILIO_CONNECTED)
    await carrier.send(twilio_start())
    await asyncio.wait_for(live.wait(), 2)
    remove()
    return carrier, task


async def test_async_reader_gets_every_frame_in_order_and_ends_with_the_call() -> None:
    session = VoiceSession()
    carrier, task = await _live_call(session)
    reader = session.audio_in_async()
    frames = [bytes([i]) * 160 for i in range(1, 11)]
    for seq, frame in enumerate(frames, start=2):
        await carrier.send(twilio_media(frame, seq))
    got = b""
    async for chunk in reader:
        got += chunk
        if len(got) >= 1600:
            break
    assert got == b"".join(frames)
    carrier.hang_up()
    await asyncio.wait_for(task, 5)
    assert [chunk async for chunk in reader] == []  # ended, nothing left
    assert list(session.inbound._queue) == [None]  # no STT: only the end-of-stream sentinel, no frames


async def test_blocking_reader_batches_drops_oldest_when_behind_and_counts_it() -> None:
    session = VoiceSession()
    carrier, task = await _live_call(session)
    reader = session.audio_in(timeout=2, max_chunks=4)
    for seq in range(2, 12):  # ten frames while nobody reads: only the newest four are kept
        await carrier.send(twilio_media(bytes([seq]) * 160, seq))
    await carrier.send(json.dumps({"event": "stop", "sequenceNumber": "12", "streamSid": "MZ1", "stop": {}}))
    await asyncio.wait_for(task, 5)
    chunks = await asyncio.to_thread(list, reader)  # one batch with all that was kept, then the end
    assert chunks == [b"".join(bytes([seq]) * 160 for seq in range(8, 12))]
    assert session.stats["audio_in_dropped"] == 6


async def test_raw_audio_and_the_stt_both_get_every_frame() -> None:
    stt = MockStt(script=[])
    heard_by_stt: asyncio.Queue[bytes] = asyncio.Queue()
    stt.on_frame = heard_by_stt.put_nowait  # runs on the loop, in the STT's consumer task
    session = VoiceSession(stt=stt)
    carrier, task = await _live_call(session)
    reader = session.audio_in_async()
    await carrier.send(twilio_media(b"\x11" * 160, 2))
    assert await asyncio.wait_for(reader.__anext__(), 2) == b"\x11" * 160
    assert await asyncio.wait_for(heard_by_stt.get(), 2) == b"\x11" * 160
    carrier.hang_up()
    await asyncio.wait_for(task, 5)


async def test_send_audio_on_the_loop_never_blocks_and_reaches_the_wire() -> None:
    session = VoiceSession(max_outbound_seconds=0.05)  # 400 bytes
    carrier, task = await _live_call(session)
    assert session.send_audio(b"\x7f" * 400) is True
    assert session.send_audio(b"\x7f" * 400) is False and session.stats["outbound_overflow"] == 1
    sent = json.loads(await carrier.receive())
    assert sent["event"] == "media" and base64.b64decode(sent["media"]["payload"]) == b"\x7f" * 400
    done = threading.Event()
    # From a flow thread the same call is put_outbound_sync (back-pressure), and reaches the wire too.
    await asyncio.to_thread(lambda: (session.send_audio(b"\x01" * 160), done.set()))
    assert done.is_set()
    assert base64.b64decode(json.loads(await carrier.receive())["media"]["payload"]) == b"\x01" * 160
    carrier.hang_up()
    await asyncio.wait_for(task, 5)
