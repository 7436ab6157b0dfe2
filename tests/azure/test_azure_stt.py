"""AzureStt against SDK-shaped fakes that fire callbacks from real foreign threads.

Mocking boundary: only the Azure Speech SDK objects are faked (see ``voice_runtime/testing/fake_azure_speech.py`` for why: a
proprietary native binary with an internal protocol). The event loop, the provider's writer/teardown
threads, its queues and the thread hops are all real; events are fired from real ``threading.Thread``s.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest

pytest.importorskip("azure.cognitiveservices.speech", reason='the Azure providers need the [azure] extra: pip install "voice-runtime[azure]"')

from voice_runtime.testing.fake_azure_speech import (  # noqa: E402
    CancellationErrorCode,
    CancellationReason,
    FakeSpeechSdk,
    canceled_event,
    fire_from_thread,
    plain_event,
    recognized_event,
    recognizing_event,
)
from voice_runtime.errors import ProviderError  # noqa: E402
from voice_runtime.providers.azure_stt import AzureStt  # noqa: E402
from voice_runtime.providers.azure_stt import _AzurePersistentStt as AzurePersistentStt  # noqa: E402


class Recorder:
    """Collects provider callbacks with the thread they ran on; lets the test await them."""

    def __init__(self, stt: AzureStt) -> None:
        self.calls: list[tuple[str, Any, int]] = []
        self._event = asyncio.Event()
        stt.on_committed = lambda text: self._add("committed", text)
        stt.on_recognizing = lambda text: self._add("recognizing", text)
        stt.on_error = lambda message: self._add("error", message)
        stt.on_speech_started = lambda: self._add("speech_started", None)

    def _add(self, kind: str, value: Any) -> None:
        self.calls.append((kind, value, threading.get_ident()))
        self._event.set()

    def of(self, kind: str) -> list[Any]:
        return [value for k, value, _ in self.calls if k == kind]

    async def wait(self, kind: str, count: int = 1, timeout: float = 5.0) -> list[Any]:
        async def until() -> None:
            while len(self.of(kind)) < count:
                self._event.clear()
                await self._event.wait()

        await asyncio.wait_for(until(), timeout)
        return self.of(kind)


async def roundtrip() -> None:
    """Let everything already handed to the loop with call_soon_threadsafe run."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.call_soon(done.set_result, None)
    await done
    await asyncio.sleep(0)


async def in_thread(fn: Any, *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


async def live(fake: FakeSpeechSdk, queue: asyncio.Queue[bytes | None], index: int) -> Any:
    """Wait until recognizer ``index`` is the provider's live one (audio reaches its stream)."""
    reco = await in_thread(fake.wait_recognizer, index)
    queue.put_nowait(b"\x7f" * 160)
    assert await in_thread(fake.streams[index].wait_bytes, 160)
    return reco


def make(fake: FakeSpeechSdk, **kwargs: Any) -> AzureStt:
    kwargs.setdefault("backoff_base_s", 0.02)
    kwargs.setdefault("backoff_jitter", 0.0)
    return AzureStt(sdk=fake, **kwargs)


async def test_factory_names_resolve_to_the_provider():
    from voice_runtime import create_stt
    from voice_runtime.stt import get_stt_class

    assert get_stt_class("azure") is AzurePersistentStt and issubclass(AzurePersistentStt, AzureStt)
    stt = create_stt("azure", sdk=FakeSpeechSdk(), language_code="fi-FI", silence_timeout_ms=600)
    assert stt.options.language == "fi-FI" and stt.options.segmentation_silence_timeout_ms == 600


async def test_recognized_from_a_foreign_thread_lands_on_the_loop_thread():
    fake = FakeSpeechSdk()
    stt = make(fake)
    rec = Recorder(stt)
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    await stt.start(queue)
    try:
        reco = (await in_thread(fake.wait_recognizer, 0))
        loop_thread = threading.get_ident()
        assert reco.start_thread != threading.current_thread().name  # start().get() ran off the loop
        assert fake.create_threads and threading.current_thread().name not in fake.create_threads

        fired = [
            fire_from_thread(reco.speech_start_detected, plain_event(), wait=False),
        ]
        await rec.wait("speech_started")
        fired.append(fire_from_thread(reco.recognizing, recognizing_event("hello"), wait=False))
        await rec.wait("recognizing")
        fired.append(fire_from_thread(reco.recognized, recognized_event("Hello there."), wait=False))
        assert await rec.wait("committed") == ["Hello there."]

        assert all(t.ident != loop_thread for t in fired)
        assert {ident for _, _, ident in rec.calls} == {loop_thread}
        # speech_start_detected and the first partial of the same utterance give ONE barge-in signal
        assert rec.of("speech_started") == [None]

        # next utterance: no speech_start_detected event; its first partial is the barge-in signal
        fire_from_thread(reco.recognizing, recognizing_event("and"))
        fire_from_thread(reco.recognized, recognized_event("And then."))
        await rec.wait("committed", 2)
        assert rec.of("speech_started") == [None, None]
        # NoMatch and empty text are not utterances
        fire_from_thread(reco.recognized, recognized_event("", no_match=True))
        await roundtrip()
        assert rec.of("committed") == ["Hello there.", "And then."]
        assert stt.stats["no_match"] == 1
    finally:
        await stt.stop()


async def test_audio_is_written_in_order_off_the_loop_and_end_of_stream_closes_the_push_stream():
    fake = FakeSpeechSdk()
    stt = make(fake)
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    await stt.start(queue)
    frames = [bytes([i]) * 160 for i in range(50)]
    for frame in frames:
        queue.put_nowait(frame)
    queue.put_nowait(None)
    stream = fake.streams[0]
    assert await in_thread(stream.wait_bytes, len(frames) * 160)
    assert await in_thread(stream.closed.wait, 5.0)
    assert bytes(stream.data) == b"".join(frames)
    assert stream.write_threads == {"azure-stt-writer"}
    await stt.stop()


async def test_handler_exception_is_logged_and_counted_not_lost(caplog):
    fake = FakeSpeechSdk()
    stt = make(fake)
    rec = Recorder(stt)
    boom_calls: list[str] = []

    def boom(text: str) -> None:
        boom_calls.append(text)
        raise ValueError("flow handler bug")

    stt.on_committed = boom
    await stt.start(asyncio.Queue())
    try:
        reco = (await in_thread(fake.wait_recognizer, 0))
        with caplog.at_level(logging.ERROR, logger="voice_runtime.providers.azure_stt"):
            fire_from_thread(reco.recognized, recognized_event("first"))
            await roundtrip()
        assert boom_calls == ["first"]
        assert stt.stats["handler_errors"] == 1
        assert any("on_committed handler failed" in r.getMessage() and r.exc_info for r in caplog.records)
        assert reco.recognized.swallowed == []  # nothing escaped into the SDK's silent swallow

        # The provider keeps working after a handler failure.
        fire_from_thread(reco.recognizing, recognizing_event("still"))
        assert await rec.wait("recognizing") == ["still"]

        # An event the callback cannot read is logged on the SDK thread instead of vanishing.
        with caplog.at_level(logging.ERROR, logger="voice_runtime.providers.azure_stt"):
            fire_from_thread(reco.recognized, object())
        assert stt.stats["event_read_errors"] == 1
        assert any("could not read a recognized event" in r.getMessage() for r in caplog.records)
    finally:
        await stt.stop()


@pytest.mark.parametrize(
    "code", [CancellationErrorCode.AuthenticationFailure, CancellationErrorCode.Forbidden, CancellationErrorCode.TooManyRequests]
)
async def test_fatal_cancel_reports_once_and_never_restarts(code):
    fake = FakeSpeechSdk()
    stt = make(fake)
    rec = Recorder(stt)
    await stt.start(asyncio.Queue())
    try:
        reco = (await in_thread(fake.wait_recognizer, 0))
        details = "WebSocket upgrade failed: Authentication error (401)."
        fire_from_thread(reco.canceled, canceled_event(code, details))
        fire_from_thread(reco.canceled, canceled_event(code, details))  # the SDK may repeat itself
        errors = await rec.wait("error")
        await roundtrip()
        assert len(rec.of("error")) == 1
        assert code.name in errors[0] and "401" in errors[0]
        assert stt.restart_delays == [] and stt._restart_task is None
        assert await in_thread(reco.stop_called.wait, 5.0)  # the dead recognizer is released...
        assert reco.stop_thread != threading.current_thread().name  # ...off the loop
        assert len(fake.recognizers) == 1
    finally:
        await stt.stop()
    assert len(fake.recognizers) == 1


async def test_transient_cancel_restarts_with_backoff_and_replays_buffered_audio_in_order():
    fake = FakeSpeechSdk()
    fake.create_gate[1] = threading.Event()  # hold the replacement recognizer until audio has piled up
    stt = make(fake, backoff_base_s=0.02, max_restarts=4)
    rec = Recorder(stt)
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    await stt.start(queue)
    try:
        first = [bytes([i]) * 160 for i in range(1, 4)]
        during = [bytes([i]) * 160 for i in range(10, 30)]
        after = [bytes([i]) * 160 for i in range(40, 45)]
        reco0 = (await in_thread(fake.wait_recognizer, 0))
        for frame in first:
            queue.put_nowait(frame)
        assert await in_thread(fake.streams[0].wait_bytes, 3 * 160)

        fire_from_thread(reco0.canceled, canceled_event(CancellationErrorCode.ConnectionFailure, "WS_OPEN_ERROR"))
        fake.create_entered.setdefault(1, threading.Event())
        assert await in_thread(fake.create_entered[1].wait, 5.0)  # the restart is building recognizer #1
        for frame in during:
            queue.put_nowait(frame)
        while not queue.empty():  # let the feeder move them into the provider's buffer
            await asyncio.sleep(0)
        fake.create_gate[1].set()
        reco1 = (await in_thread(fake.wait_recognizer, 1))
        for frame in after:
            queue.put_nowait(frame)
        stream1 = fake.streams[1]
        assert await in_thread(stream1.wait_bytes, (len(during) + len(after)) * 160)

        assert bytes(fake.streams[0].data) == b"".join(first)  # nothing written to the dead stream
        assert bytes(stream1.data) == b"".join(during + after)  # buffered audio replayed, in order
        assert stt.stats["audio_dropped_bytes"] == 0
        assert await in_thread(reco0.stop_called.wait, 5.0)
        assert reco0.stop_thread != threading.current_thread().name

        # A second transient failure of an unproven recognizer backs off twice as long.
        fire_from_thread(reco1.canceled, canceled_event(CancellationErrorCode.ServiceTimeout))
        await in_thread(fake.wait_recognizer, 2)
        queue.put_nowait(b"\x55" * 160)
        assert await in_thread(fake.streams[2].wait_bytes, 160)  # recognizer #2 is live
        assert stt.restart_delays == [pytest.approx(0.02), pytest.approx(0.04)]
        assert stt.stats["recognizers_started"] == 3
        # Results keep flowing from the new recognizer; no error was reported.
        fire_from_thread(fake.recognizers[2].recognized, recognized_event("back again"))
        assert await rec.wait("committed") == ["back again"]
        assert rec.of("error") == []
    finally:
        await stt.stop()


async def test_restarts_are_bounded_then_one_error():
    fake = FakeSpeechSdk()

    def configure(index: int, recognizer: Any) -> None:
        if index >= 1:
            recognizer.start_error = RuntimeError("SPXERR_CONNECTION_FAILURE")

    fake.configure_recognizer = configure
    stt = make(fake, backoff_base_s=0.01, max_restarts=3)
    rec = Recorder(stt)
    await stt.start(asyncio.Queue())
    try:
        fire_from_thread((await in_thread(fake.wait_recognizer, 0)).canceled, canceled_event(CancellationErrorCode.ServiceUnavailable))
        errors = await rec.wait("error")
        await roundtrip()
        assert len(errors) == 1 and "restart_exhausted" in errors[0]
        assert stt.restart_delays == [pytest.approx(0.01), pytest.approx(0.02), pytest.approx(0.04)]
        assert len(fake.recognizers) == 4
    finally:
        await stt.stop()


async def test_healthy_recognizer_resets_the_backoff():
    fake = FakeSpeechSdk()
    stt = make(fake, backoff_base_s=0.01, max_restarts=2)
    rec = Recorder(stt)
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    await stt.start(queue)
    try:
        for index in range(4):  # more failures than max_restarts, but each recognizer worked in between
            reco = await live(fake, queue, index)
            fire_from_thread(reco.recognized, recognized_event(f"turn {index}"))
            await rec.wait("committed", index + 1)
            fire_from_thread(reco.canceled, canceled_event(CancellationErrorCode.ServiceError, "1011"))
        (await in_thread(fake.wait_recognizer, 4))
        assert stt.restart_delays == [pytest.approx(0.01)] * 4
        assert rec.of("error") == []
    finally:
        await stt.stop()


async def test_push_stream_write_failure_restarts_instead_of_killing_the_feeder():
    fake = FakeSpeechSdk()
    stt = make(fake)
    rec = Recorder(stt)
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    await stt.start(queue)
    try:
        (await in_thread(fake.wait_recognizer, 0))
        fake.streams[0].fail_writes = True
        frames = [bytes([i]) * 160 for i in range(1, 21)]
        for frame in frames:
            queue.put_nowait(frame)
        reco1 = (await in_thread(fake.wait_recognizer, 1))
        assert await in_thread(fake.streams[1].wait_bytes, len(frames) * 160)
        assert bytes(fake.streams[1].data) == b"".join(frames)  # the failed write's audio was kept
        assert stt.stats["write_errors"] >= 1
        assert stt._feeder is not None and not stt._feeder.done()
        queue.put_nowait(b"\x7f" * 160)
        assert await in_thread(fake.streams[1].wait_bytes, (len(frames) + 1) * 160)
        assert rec.of("error") == []
        assert reco1.started.is_set()
    finally:
        await stt.stop()


async def test_cancel_at_end_of_stream_is_not_an_error():
    fake = FakeSpeechSdk()
    stt = make(fake)
    rec = Recorder(stt)
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    await stt.start(queue)
    reco = (await in_thread(fake.wait_recognizer, 0))
    queue.put_nowait(b"\xff" * 160)
    queue.put_nowait(None)
    assert await in_thread(fake.streams[0].closed.wait, 5.0)
    fire_from_thread(reco.recognized, recognized_event("last words"))
    fire_from_thread(reco.canceled, canceled_event(CancellationErrorCode.NoError, reason=CancellationReason.EndOfStream))
    assert await rec.wait("committed") == ["last words"]
    await roundtrip()
    assert rec.of("error") == [] and stt.restart_delays == []
    await stt.stop()


async def test_stop_never_blocks_the_loop_while_the_sdk_stop_blocks():
    fake = FakeSpeechSdk()
    stt = make(fake, stop_timeout=5.0)
    await stt.start(asyncio.Queue())
    reco = (await in_thread(fake.wait_recognizer, 0))
    reco.stop_block_s = 2.0  # the SDK's stop commonly blocks for seconds

    beats: list[float] = []

    async def heartbeat() -> None:
        while True:
            beats.append(time.monotonic())
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(heartbeat())
    try:
        await asyncio.sleep(0)
        started = time.monotonic()
        await asyncio.gather(stt.stop(), stt.stop())  # concurrent and repeated stops are one stop
        ended = time.monotonic()
    finally:
        ticker.cancel()
        await asyncio.gather(ticker, return_exceptions=True)
    assert reco.stop_finished.is_set()  # stop awaited the (bounded) SDK stop...
    assert reco.stop_thread != threading.current_thread().name  # ...which ran off the loop
    during = [b for b in beats if started <= b <= ended]
    # Correctness, not speed: a loop blocked by the 2 s SDK call would show no beats at all in that window.
    assert len(during) >= 20, len(during)
    assert max(b - a for a, b in zip(during, during[1:])) < 1.0
    await stt.stop()  # idempotent after completion too


async def test_stop_gives_up_on_a_hung_sdk_stop_after_its_deadline():
    fake = FakeSpeechSdk()
    stt = make(fake, stop_timeout=0.2)
    rec = Recorder(stt)
    await stt.start(asyncio.Queue())
    reco = (await in_thread(fake.wait_recognizer, 0))
    reco.stop_block_s = 30.0
    recognized_cb = reco.recognized.callbacks[0]
    try:
        await asyncio.wait_for(stt.stop(), 5.0)
        assert stt.stats["teardown_timeouts"] == 1
        assert reco.stop_called.is_set() and not reco.stop_finished.is_set()
        # Once stop has returned, late events from the abandoned recognizer are dropped.
        thread = threading.Thread(target=recognized_cb, args=(recognized_event("too late"),))
        thread.start()
        thread.join(5.0)
        await roundtrip()
        assert rec.of("committed") == [] and stt.stats["events_after_stop"] == 1
    finally:
        reco.release_stop()


def test_events_after_the_loop_closed_are_dropped_not_raised():
    fake = FakeSpeechSdk()
    stt = make(fake)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(stt.start(asyncio.Queue()))
        reco = fake.wait_recognizer(0)
        recognized_cb = reco.recognized.callbacks[0]
        loop.run_until_complete(stt.stop())
    finally:
        loop.close()
    errors: list[BaseException] = []

    def fire() -> None:
        try:
            recognized_cb(recognized_event("after close"))
        except BaseException as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    thread = threading.Thread(target=fire)
    thread.start()
    thread.join(5.0)
    assert errors == [] and stt.stats["events_after_loop_closed"] == 1


async def test_echo_discard_is_opt_in():
    fake = FakeSpeechSdk()
    stt = make(fake, echo_discard=True, echo_window_s=30.0)
    rec = Recorder(stt)
    await stt.start(asyncio.Queue())
    try:
        reco = (await in_thread(fake.wait_recognizer, 0))
        stt.set_speaking(True)
        fire_from_thread(reco.recognized, recognized_event("echo of the agent"))
        await roundtrip()
        stt.set_speaking(False)  # inside the echo window now
        fire_from_thread(reco.recognized, recognized_event("tail echo"))
        await roundtrip()
        stt.echo_window_s = 0.0
        stt.set_speaking(True)
        stt.set_speaking(False)
        fire_from_thread(reco.recognized, recognized_event("the caller"))
        assert await rec.wait("committed") == ["the caller"]
        assert stt.stats["finals_discarded_echo"] == 2
    finally:
        await stt.stop()

    default = make(FakeSpeechSdk())  # default: barge-in needs what the caller says over the agent
    rec2 = Recorder(default)
    await default.start(asyncio.Queue())
    try:
        default.set_speaking(True)
        fire_from_thread((await in_thread(default.sdk.wait_recognizer, 0)).recognized, recognized_event("stop, stop"))  # type: ignore[attr-defined]
        assert await rec2.wait("committed") == ["stop, stop"]
    finally:
        await default.stop()


async def test_unbuildable_recognizer_raises_a_non_retryable_provider_error():
    class BadSdk(FakeSpeechSdk):
        def create_recognizer(self, push_stream: Any, options: Any) -> Any:
            raise ValueError("invalid language")

    stt = make(BadSdk())
    with pytest.raises(ProviderError) as info:
        await stt.start(asyncio.Queue())
    assert info.value.retryable is False and "invalid language" in str(info.value)
    await stt.stop()


async def test_transient_failure_to_start_is_retried_in_the_background():
    fake = FakeSpeechSdk()
    fake.configure_recognizer = lambda index, r: setattr(r, "start_error", RuntimeError("timeout")) if index == 0 else None
    stt = make(fake, backoff_base_s=0.01)
    rec = Recorder(stt)
    await stt.start(asyncio.Queue())  # returns; recovery continues in the background
    try:
        reco1 = (await in_thread(fake.wait_recognizer, 1))
        fire_from_thread(reco1.recognized, recognized_event("recovered"))
        assert await rec.wait("committed") == ["recovered"]
        assert rec.of("error") == []
    finally:
        await stt.stop()
