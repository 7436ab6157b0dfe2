"""SttTee: one stream, two providers; a stalled or broken secondary never hurts the primary."""

from __future__ import annotations

import asyncio
import threading

from voice_runtime import SttTee, create_stt
from voice_runtime.providers.mock import MockStt, tone_speech
from voice_runtime.audio import pcm16_to_ulaw, split_frames

from ..conftest import CallHarness, FlowResult


class StalledStt(MockStt):
    """Accepts a queue but never reads it (a provider stuck on a dead socket)."""

    async def start(self, inbound_queue: asyncio.Queue) -> None:
        self.queue = inbound_queue


class BrokenStt(MockStt):
    async def start(self, inbound_queue: asyncio.Queue) -> None:
        raise ConnectionError("provider refused the connection")


async def test_stalled_secondary_drops_its_oldest_frames_only() -> None:
    primary, secondary = MockStt(vad=False), StalledStt(vad=False)
    tee = SttTee(primary, secondary, max_frames=10)
    source: asyncio.Queue = asyncio.Queue()
    await tee.start(source)
    for i in range(50):
        source.put_nowait(bytes([i]) * 160)
        await asyncio.sleep(0)  # frames arrive over time (a yield, not a wait): the primary keeps up
    source.put_nowait(None)
    await asyncio.wait_for(tee._task, 5)  # fan-out finished: every frame was routed
    await asyncio.wait_for(primary._task, 5)
    assert primary.frames_received == 50
    assert secondary.queue.qsize() == 10 and tee.secondary_dropped == 41  # 50 frames + sentinel into 10 slots
    await tee.stop()


async def test_broken_secondary_is_logged_and_primary_keeps_working() -> None:
    primary = MockStt(vad=False)
    tee = SttTee(primary, BrokenStt())
    source: asyncio.Queue = asyncio.Queue()
    await tee.start(source)
    assert tee.secondary_failed
    source.put_nowait(b"\xff" * 160)
    source.put_nowait(None)
    await asyncio.wait_for(tee._task, 5)
    await asyncio.wait_for(primary._task, 5)
    assert primary.frames_received == 1
    await tee.stop()


def test_callbacks_read_and_write_the_primary() -> None:
    primary, secondary = MockStt(), MockStt()
    tee = SttTee(primary, secondary)
    marker = lambda text: None  # noqa: E731
    tee.on_committed = marker
    assert primary.on_committed is marker and secondary.on_committed is None


def test_server_wraps_primary_and_secondary_and_calls_on_stt_ready(harness: CallHarness, flow_result: FlowResult) -> None:
    secondaries: list[MockStt] = []
    ready: list[object] = []
    secondary_heard = threading.Event()

    def make_secondary() -> MockStt:
        stt = create_stt("mock", script=["shadow transcript"])
        stt.on_committed = lambda _text: secondary_heard.set()
        secondaries.append(stt)
        return stt

    def body(session) -> None:
        flow_result.values["heard"] = session.listen(timeout=10)
        flow_result.values["stt"] = session.stt

    _, running = harness.serve(
        flow_result.run(body),
        script=["primary transcript"],
        session_defaults={"stt_secondary_factory": make_secondary, "on_stt_ready": ready.append},
    )
    phone = harness.phone(running)
    frames = split_frames(pcm16_to_ulaw(tone_speech(0.8)))
    phone.say(b"".join(frames))
    values = flow_result.wait()
    assert values["heard"] == "primary transcript"
    assert isinstance(values["stt"], SttTee) and ready == [values["stt"]]
    assert secondary_heard.wait(5)  # the secondary got the same audio and ran its own VAD


class SecondaryFeedBreaks(MockStt):
    """Takes audio inline, and its inline feed raises on the second chunk."""

    def _take_frame(self, frame: bytes) -> None:
        if self.frames_received == 1:
            raise RuntimeError("secondary broke")
        super()._take_frame(frame)


async def test_inline_both_providers_get_every_chunk_and_the_fan_out_only_the_end() -> None:
    primary, secondary = MockStt(vad=False), MockStt(vad=False)
    tee = SttTee(primary, secondary)
    source: asyncio.Queue = asyncio.Queue()
    await tee.start(source)
    assert tee.feed_audio is not None
    heard: dict[str, list[bytes]] = {"primary": [], "secondary": []}
    primary.on_frame, secondary.on_frame = heard["primary"].append, heard["secondary"].append
    frames = [bytes([i]) * 160 for i in range(1, 21)]
    for frame in frames:
        tee.feed_audio(frame)  # what the session does per chunk once it has switched
    assert heard == {"primary": frames, "secondary": frames}  # at once, in order: no task had to run
    source.put_nowait(None)
    await asyncio.wait_for(tee._task, 5)
    await asyncio.wait_for(primary._task, 5)
    assert primary.frames_received == secondary.frames_received == 20  # the end added nothing
    await tee.stop()


async def test_inline_primary_with_a_stalled_secondary_keeps_the_secondary_bounded_on_its_queue() -> None:
    primary, secondary = MockStt(vad=False), StalledStt(vad=False)
    tee = SttTee(primary, secondary, max_frames=10)
    await tee.start(asyncio.Queue())
    assert tee.feed_audio is not None and secondary.feed_audio is None
    for i in range(50):
        tee.feed_audio(bytes([i]) * 160)
    assert primary.frames_received == 50
    assert secondary.queue.qsize() == 10 and tee.secondary_dropped == 40
    assert [secondary.queue.get_nowait()[0] for _ in range(10)] == list(range(40, 50))  # the newest kept
    await tee.stop()


async def test_a_secondary_whose_inline_feed_raises_is_dropped_and_the_primary_keeps_working() -> None:
    primary, secondary = MockStt(vad=False), SecondaryFeedBreaks(vad=False)
    tee = SttTee(primary, secondary)
    await tee.start(asyncio.Queue())
    for i in range(5):
        tee.feed_audio(bytes([i + 1]) * 160)
    assert tee.secondary_failed
    assert (primary.frames_received, secondary.frames_received) == (5, 1)
    await tee.stop()


async def test_the_session_feeds_a_tee_inline_on_a_live_call() -> None:
    from voice_runtime.session import VoiceSession

    from ..session.test_audio_in import _live_call
    from ..server.test_connection_memory import twilio_media

    primary, secondary = MockStt(vad=False), MockStt(vad=False)
    heard_all = asyncio.Event()
    secondary.on_frame = lambda _frame: secondary.frames_received >= 10 and heard_all.set()  # after its count
    session = VoiceSession(stt=SttTee(primary, secondary))
    carrier, task = await _live_call(session)
    for seq in range(2, 12):
        await carrier.send(twilio_media(bytes([seq]) * 160, seq))
    await asyncio.wait_for(heard_all.wait(), 2)
    assert primary.frames_received == 10
    assert session.inbound.empty() and session._stt_feed is not None  # inline: nothing went through the queue
    carrier.hang_up()
    await asyncio.wait_for(task, 5)
