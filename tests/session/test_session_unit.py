"""VoiceSession without a socket: a real event loop thread and a recording link stand in for the transport."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from voice_runtime import CallHangupError, CallNotAnsweredError, CallTimeoutError, MarkOutcome, VoiceSession
from voice_runtime.errors import LocalProtocolError


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, fn, *args):  # run fn on the loop and wait for it
        done = threading.Event()
        box: list = []

        def call() -> None:
            box.append(fn(*args))
            done.set()

        self.loop.call_soon_threadsafe(call)
        assert done.wait(5)
        return box[0]

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class RecordingLink:
    supports_dtmf_out = False

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.event = threading.Event()

    def _note(self, what: str) -> None:
        self.calls.append(what)
        self.event.set()

    def wake(self) -> None:
        self._note("wake")

    def clear(self) -> None:
        self._note("clear")

    def disconnect(self) -> None:
        self._note("disconnect")

    def send_dtmf(self, digits: str) -> None:
        self._note(f"dtmf:{digits}")


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.stop()


def attached(loop_thread: LoopThread, **kwargs) -> tuple[VoiceSession, RecordingLink]:
    session = VoiceSession(**kwargs)
    link = RecordingLink()
    loop_thread.run(
        lambda: session.attach_stream(loop_thread.loop, link, stream_id="MZ1", call_id="CA1", carrier="twilio", custom_parameters={"from_number": "+1555"})
    )
    return session, link


def test_attach_sets_ids_and_caller_number(loop_thread: LoopThread) -> None:
    session, _ = attached(loop_thread)
    session.wait_for_ws_connect(1)
    assert (session.call_sid, session.stream_sid, session.caller_number, session.carrier) == ("CA1", "MZ1", "+1555", "twilio")


def test_wait_for_ws_connect_times_out_and_fails_fast_on_early_end() -> None:
    with pytest.raises(CallNotAnsweredError):
        VoiceSession().wait_for_ws_connect(0.05)
    session = VoiceSession()
    threading.Timer(0.05, session.signal_disconnected, args=("busy",)).start()
    with pytest.raises(CallNotAnsweredError) as info:
        session.wait_for_ws_connect(10)
    assert info.value.status == "busy"


def test_marks_resolve_played_then_cleared_with_ordering(loop_thread: LoopThread) -> None:
    session, link = attached(loop_thread)
    session.put_outbound_sync(b"\x00" * 800)
    mark = session.send_mark("a")
    audio, m = loop_thread.run(session.take_outbound, 10_000)
    assert (len(audio), m) == (800, None)  # audio before the mark comes out first
    audio, m = loop_thread.run(session.take_outbound, 10_000)
    assert m is mark and audio == b""
    loop_thread.run(session.signal_mark_received, mark.wire_name)
    assert mark.wait(1) is MarkOutcome.PLAYED
    # a mark at the carrier when a clear goes out is CLEARED, and its later echo is ignored
    second = session.send_mark("b")
    loop_thread.run(session.take_outbound, 10_000)
    loop_thread.run(session.clear_sent)
    assert second.wait(1) is MarkOutcome.CLEARED
    loop_thread.run(session.signal_mark_received, second.wire_name)
    assert second.outcome is MarkOutcome.CLEARED
    assert session.stats["mark_echo_after_clear"] == 1


def test_clear_drops_local_audio_and_resolves_queued_marks(loop_thread: LoopThread) -> None:
    session, link = attached(loop_thread)
    session.put_outbound_sync(b"\x00" * 1600)
    mark = session.send_mark("queued")
    link.event.clear()
    session.request_clear_buffer()
    assert mark.wait(1) is MarkOutcome.CLEARED
    assert session.outbound_buffered_seconds == 0
    assert link.event.wait(1) and "clear" in link.calls


def test_hangup_wakes_every_waiter_at_once(loop_thread: LoopThread) -> None:
    session, _ = attached(loop_thread, max_outbound_seconds=0.1)
    session.put_outbound_sync(b"\x00" * 800)  # fills the buffer: the next put blocks
    outcomes: dict[str, object] = {}

    def waiter(name: str, fn) -> threading.Thread:
        def run() -> None:
            try:
                outcomes[name] = fn()
            except Exception as exc:
                outcomes[name] = type(exc)

        t = threading.Thread(target=run)
        t.start()
        return t

    mark = session.send_mark("m")
    threads = [
        waiter("listen", lambda: session.listen(30)),
        waiter("dtmf", lambda: session.wait_for_dtmf(30)),
        waiter("mark", lambda: mark.wait(30)),
        waiter("put", lambda: session.put_outbound_sync(b"\x00" * 800, timeout=30)),
        waiter("amd", lambda: session.wait_for_answered_by(30)),
    ]
    session.signal_disconnected("caller hung up")
    for t in threads:
        t.join(2)
        assert not t.is_alive()
    assert outcomes == {
        "listen": CallHangupError,
        "dtmf": CallHangupError,
        "mark": MarkOutcome.HUNG_UP,
        "put": CallHangupError,
        "amd": CallHangupError,
    }


def test_backpressure_times_out_when_nobody_drains(loop_thread: LoopThread) -> None:
    session, _ = attached(loop_thread, max_outbound_seconds=0.1)
    session.put_outbound_sync(b"\x00" * 800)
    with pytest.raises(CallTimeoutError):
        session.put_outbound_sync(b"\x00" * 160, timeout=0.05)
    assert session.stats["outbound_backpressure_waits"] >= 1


def test_inbound_queue_drops_oldest_when_full(loop_thread: LoopThread) -> None:
    session, _ = attached(loop_thread, inbound_max_frames=3)
    for i in range(5):
        loop_thread.run(session.feed_caller_audio, bytes([i]))
    assert session.stats["inbound_dropped"] == 2
    items = loop_thread.run(lambda: [session.inbound.get_nowait() for _ in range(session.inbound.qsize())])
    assert items == [b"\x02", b"\x03", b"\x04"]  # freshest audio kept


def test_listen_returns_queued_utterances_then_times_out(loop_thread: LoopThread) -> None:
    session, _ = attached(loop_thread, max_pending_utterances=2)
    for text in ("one", "two", "three"):
        session.inject_transcript(text)
    assert session.stats["utterances_dropped"] == 1
    assert [session.listen(1), session.listen(1)] == ["two", "three"]
    with pytest.raises(CallTimeoutError):
        session.listen(0.05)


def test_dtmf_collect_and_unsupported_send(loop_thread: LoopThread) -> None:
    session, _ = attached(loop_thread)
    for digit in "12#9":
        loop_thread.run(session.receive_dtmf, digit)
    assert session.collect_dtmf(timeout=1) == "12"
    assert session.wait_for_dtmf(1) == "9"
    with pytest.raises(LocalProtocolError):  # no DTMF message on this stream; the default would play tones
        session.send_dtmf("1", method="message")
    with pytest.raises(ValueError):
        session.send_dtmf("x")


def test_reset_releases_old_waiters_and_starts_clean(loop_thread: LoopThread) -> None:
    session, _ = attached(loop_thread)
    mark = session.send_mark("old")
    generation = session.generation
    session.reset()
    assert mark.outcome is MarkOutcome.HUNG_UP
    assert not session.is_disconnected and not session.is_connected
    assert session.generation == generation + 1
    session.request_disconnect(generation)  # stale generation: ignored
    assert not session.is_disconnected


def test_event_log_records_and_isolates_broken_listeners(loop_thread: LoopThread) -> None:
    session, _ = attached(loop_thread)
    seen: list[str] = []
    session.add_event_listener(lambda e: seen.append(e.kind))
    session.add_event_listener(lambda e: 1 / 0)
    session.inject_transcript("hello")
    assert "stt_final" in seen
    assert [e.kind for e in session.events][:1] == ["stream_started"]


def test_a_failing_audio_listener_is_logged_and_removed_and_the_others_carry_on(
    loop_thread: LoopThread, caplog: pytest.LogCaptureFixture
) -> None:
    """Listeners are registered unwrapped (no wrapper call per frame): feed_caller_audio itself catches what one
    raises, logs it once and removes that listener; the other listeners and the STT queue still get every chunk."""
    session, _ = attached(loop_thread)
    session.stt = object()  # an STT is attached: the inbound queue is fed next to the listeners
    heard: list[bytes] = []
    calls = [0]

    def flaky(chunk: bytes) -> None:
        calls[0] += 1
        if chunk == b"\x02":
            raise RuntimeError("listener bug")

    session.add_audio_listener(flaky)
    session.add_audio_listener(heard.append)
    with caplog.at_level("ERROR", logger="voice_runtime.session.core"):
        for i in range(1, 5):
            loop_thread.run(session.feed_caller_audio, bytes([i]))
    assert heard == [b"\x01", b"\x02", b"\x03", b"\x04"]
    assert calls[0] == 2  # removed after the chunk it failed on
    assert len([r for r in caplog.records if "failed; removed" in r.getMessage()]) == 1
    queued = loop_thread.run(lambda: [session.inbound.get_nowait() for _ in range(session.inbound.qsize())])
    assert queued == [b"\x01", b"\x02", b"\x03", b"\x04"]


def test_each_registration_of_an_audio_listener_is_removed_once(loop_thread: LoopThread) -> None:
    session, _ = attached(loop_thread)
    heard: list[bytes] = []
    listener = heard.append
    first = session.add_audio_listener(listener)
    session.add_audio_listener(listener)  # the same callable twice: it hears each chunk twice
    loop_thread.run(session.feed_caller_audio, b"\x01")
    first()
    first()  # a second call of the same remover removes nothing more
    loop_thread.run(session.feed_caller_audio, b"\x02")
    assert heard == [b"\x01", b"\x01", b"\x02"]
