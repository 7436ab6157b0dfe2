"""Which providers offer ``feed_audio`` (the inline path) after ``start``, and which keep reading their queue.

A subclass with its own queue reader must keep getting every frame through the queue: the slow-consumer
reliability tests rely on exactly such subclasses of ``MockStt``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from voice_runtime.providers.elevenlabs_stt import ElevenLabsRealtimeStt
from voice_runtime.providers.mock import MockStt


class CountsEachQueuedFrame(MockStt):
    def __init__(self) -> None:
        super().__init__(vad=False)
        self.seen = 0

    async def _consume(self, queue: Any) -> None:
        while await queue.get() is not None:
            self.seen += 1


class StartsItsOwnWay(MockStt):
    async def start(self, inbound_queue: Any) -> None:
        self.started.set()


async def test_mock_offers_feed_audio_once_started_and_counts_what_it_is_fed() -> None:
    stt = MockStt(vad=False)
    assert stt.feed_audio is None  # not before start: nothing would be set up to take it
    await stt.start(asyncio.Queue())
    assert stt.feed_audio is not None
    stt.feed_audio(b"\x7f" * 160)
    assert (stt.frames_received, stt.bytes_received) == (1, 160)
    await stt.stop()
    stt.feed_audio(b"\x7f" * 160)  # after stop: ignored, not counted
    assert stt.frames_received == 1


async def test_subclasses_that_read_the_queue_themselves_are_not_fed_inline() -> None:
    for stt in (CountsEachQueuedFrame(), StartsItsOwnWay(vad=False)):
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        await stt.start(queue)
        assert stt.feed_audio is None, type(stt).__name__
        await stt.stop()


async def test_elevenlabs_offers_feed_audio_once_started_and_buffers_it_for_the_sender() -> None:
    # No server: the supervisor's first connect fails and backs off; the inline path only buffers.
    stt = ElevenLabsRealtimeStt(api_key="k", base_url="ws://127.0.0.1:9", max_reconnect_attempts=0)
    assert stt.feed_audio is None
    await stt.start(asyncio.Queue())
    try:
        assert stt.feed_audio is not None
        stt.feed_audio(b"\x01" * 160)
        stt.feed_audio(b"\x02" * 160)
        assert stt.stats["audio_in_bytes"] == 320
    finally:
        await stt.stop()
