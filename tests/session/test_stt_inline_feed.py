"""An STT with ``feed_audio`` takes caller audio inline (``VoiceSession.feed_stt_inline``), not through ``inbound``.

Over the in-memory wire with the real ``CallConnection`` and ``SttBinding``: every frame reaches the provider in
order by the inline path, its queue carries only the end of input, what was queued before the switch is not
lost or reordered, and a feed that raises hands the rest of the call back to the queue.
"""

from __future__ import annotations

import asyncio

import pytest

from voice_runtime.session import VoiceSession

from .test_audio_in import _live_call
from ..server.test_connection_memory import twilio_media


class RecordingStt:
    """A provider that says how each chunk reached it: by ``feed_audio`` or from its queue."""

    def __init__(self, *, inline: bool = True, fail_on: int | None = None, expect: int = 0) -> None:
        self.on_committed = self.on_recognizing = self.on_error = None
        self.via_feed: list[bytes] = []
        self.via_queue: list[bytes | None] = []
        self.ended = asyncio.Event()
        self.heard_all = asyncio.Event()  # set once ``expect`` chunks arrived, by either path
        self._expect = expect
        self._fail_on = fail_on
        self._task: asyncio.Task[None] | None = None
        if not inline:
            self.feed_audio = None  # type: ignore[assignment]  # a provider without the inline path

    def set_speaking(self, speaking: bool) -> None:
        pass

    async def start(self, queue: asyncio.Queue[bytes | None]) -> None:
        self._task = asyncio.ensure_future(self._read(queue))

    async def _read(self, queue: asyncio.Queue[bytes | None]) -> None:
        while True:
            item = await queue.get()
            self.via_queue.append(item)
            if item is None:
                self.ended.set()
                return
            self._count()

    def _count(self) -> None:
        if len(self.via_feed) + len(self.via_queue) - self.ended.is_set() >= self._expect:
            self.heard_all.set()

    def feed_audio(self, ulaw: bytes) -> None:
        self.via_feed.append(ulaw)
        self._count()
        if self._fail_on is not None and len(self.via_feed) == self._fail_on:
            raise RuntimeError("feed broke")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


def _frames(n: int) -> list[bytes]:
    return [bytes([i]) * 160 for i in range(1, n + 1)]


async def _send(carrier, frames: list[bytes], first_seq: int = 2) -> None:  # type: ignore[no-untyped-def]
    for seq, frame in enumerate(frames, start=first_seq):
        await carrier.send(twilio_media(frame, seq))


@pytest.mark.parametrize("inline", [True, False], ids=["feed_audio", "queue_only"])
async def test_every_frame_reaches_the_stt_inline_if_it_can_else_through_its_queue(inline: bool) -> None:
    frames = _frames(20)
    stt = RecordingStt(inline=inline, expect=len(frames))
    session = VoiceSession(stt=stt)
    carrier, task = await _live_call(session)
    await _send(carrier, frames)
    await asyncio.wait_for(stt.heard_all.wait(), 2)
    carrier.hang_up()
    await asyncio.wait_for(task, 5)
    await asyncio.wait_for(stt.ended.wait(), 2)
    if inline:
        assert stt.via_feed == frames
        assert stt.via_queue == [None]  # the reader task woke once, for the end, not per frame
    else:  # a provider without feed_audio
        assert stt.via_queue == [*frames, None]
        assert stt.via_feed == []


async def test_audio_queued_before_the_switch_goes_first_and_in_order() -> None:
    session = VoiceSession()
    session.set_loop(asyncio.get_running_loop())
    session.stt = object()  # an STT is there: frames are queued for it
    frames = _frames(8)
    for frame in frames[:5]:
        session.feed_caller_audio(frame)
    got: list[bytes] = []
    assert session.feed_stt_inline(got.append) is True
    for frame in frames[5:]:
        session.feed_caller_audio(frame)
    assert got == frames
    assert session.inbound.empty()


async def test_no_switch_once_the_input_has_ended() -> None:
    session = VoiceSession()
    session.set_loop(asyncio.get_running_loop())
    session.stt = object()
    session.feed_caller_audio(b"\x01" * 160)
    session.inbound.put_nowait(None)  # the end of input, as the session queues it when the call ends
    got: list[bytes] = []
    assert session.feed_stt_inline(got.append) is False
    assert got == []
    assert list(session.inbound._queue) == [b"\x01" * 160, None]  # left exactly as it was
    session.feed_caller_audio(b"\x02" * 160)
    assert got == []


async def test_a_feed_that_raises_hands_the_rest_of_the_call_back_to_the_queue() -> None:
    frames = _frames(8)
    stt = RecordingStt(fail_on=3, expect=len(frames))
    session = VoiceSession(stt=stt)
    carrier, task = await _live_call(session)
    await _send(carrier, frames)
    await asyncio.wait_for(stt.heard_all.wait(), 2)
    assert stt.via_feed == frames[:3]  # the third raised: it had been handed over
    assert stt.via_queue == frames[3:]  # the rest came through the queue, in order, none lost
    carrier.hang_up()
    await asyncio.wait_for(task, 5)
    await asyncio.wait_for(stt.ended.wait(), 2)
