"""ElevenLabs realtime STT against the loopback fake (real WebSockets), plus one full call through the server.

The fake "recognises" audio made by ``encode_text_as_speech``: a transcript is whole only if every frame of the
utterance reached one server session, in order — so these tests prove continuity, not just "something arrived".
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from voice_runtime import VoiceServer, create_stt
from voice_runtime.errors import ConfigError
from voice_runtime.providers.elevenlabs_stt import ElevenLabsRealtimeStt
from voice_runtime.providers.elevenlabs_stt import _PersistentSttSession as PersistentSttSession
from voice_runtime.testing import SimulatedPhone
from voice_runtime.testing.fake_elevenlabs import FakeElevenLabs, encode_text_as_speech

from .conftest import API_KEY

SILENCE = b"\xff" * 160


@pytest.fixture(autouse=True, params=["picows", "websockets"])
def ws_client(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here on both WebSocket clients (``providers/ws_client.py``): ``ws_client="auto"`` resolves to
    the one under test. picows needs the ``[fast]`` extra."""
    if request.param == "picows":
        pytest.importorskip("picows", reason="the picows client needs the [fast] extra: pip install 'voice-runtime[fast]'")
    from voice_runtime.providers import ws_client as module

    monkeypatch.setattr(module, "default_backend", lambda: request.param)
    return str(request.param)


class Recorder:
    """Collects an STT's callbacks (they run on the event loop) and lets the test await them."""

    def __init__(self, stt: ElevenLabsRealtimeStt) -> None:
        self.committed: list[str] = []
        self.partials: list[str] = []
        self.errors: list[str] = []
        self.speech_started = 0
        self.changed = asyncio.Event()
        stt.on_committed = lambda t: self._add(self.committed, t)
        stt.on_recognizing = lambda t: self._add(self.partials, t)
        stt.on_error = lambda m: self._add(self.errors, m)
        stt.on_speech_started = self._started

    def _add(self, target: list[str], value: str) -> None:
        target.append(value)
        self.changed.set()

    def _started(self) -> None:
        self.speech_started += 1
        self.changed.set()

    async def until(self, predicate: Any, timeout: float = 10.0) -> None:
        async def loop() -> None:
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), timeout)


def frames(audio: bytes) -> list[bytes]:
    return [audio[i : i + 160] for i in range(0, len(audio), 160)]


def utterance(text: str, lead: int = 10, tail: int = 25) -> bytes:
    return SILENCE * lead + encode_text_as_speech(text) + SILENCE * tail


def make_stt(fake: FakeElevenLabs, **kwargs: Any) -> ElevenLabsRealtimeStt:
    kwargs.setdefault("vad_silence_threshold_secs", 0.3)
    kwargs.setdefault("api_key", API_KEY)
    return ElevenLabsRealtimeStt(base_url=fake.http_url.replace(str(fake.http_port), str(fake.ws_port)), **kwargs)


async def feed(queue: asyncio.Queue, audio: bytes, *, on_frame: Any = None) -> None:
    """Feed 20 ms frames faster than real time (yielding to the loop between frames, as a socket would)."""
    for index, frame in enumerate(frames(audio)):
        queue.put_nowait(frame)
        if on_frame is not None:
            await on_frame(index)
        await asyncio.sleep(0.002)


async def fake_wait(fake: FakeElevenLabs, predicate: Any, timeout: float = 10.0) -> None:
    assert await asyncio.to_thread(fake.wait_until, predicate, timeout), "fake never reached the expected state"


async def test_partials_speech_start_and_one_commit_when_both_variants_arrive(fake: FakeElevenLabs) -> None:
    fake.stt_both_committed = True
    stt = make_stt(fake, keyterms=["Acme"], include_timestamps=True)
    rec = Recorder(stt)
    queue: asyncio.Queue = asyncio.Queue()
    await stt.start(queue)
    try:
        await feed(queue, utterance("book a table") + utterance("for two"))
        await rec.until(lambda: len(rec.committed) >= 2)
        await fake_wait(fake, lambda: len(fake.stt_sessions[0].commits) == 2)
        assert rec.committed == ["book a table", "for two"]
        assert rec.speech_started == 2
        assert rec.partials[:3] == ["b", "book a", "book a tabl"]  # every 5th frame of the utterance
        assert stt.stats["duplicate_commits_dropped"] == 2
        query = fake.stt_sessions[0].query
        assert query["audio_format"] == "ulaw_8000" and query["commit_strategy"] == "vad"
        assert query["keyterms"] == "Acme" and query["language_code"] == "en"
        assert fake.stt_sessions[0].api_key == API_KEY
    finally:
        await stt.stop()
    assert rec.errors == []


async def test_stale_partials_and_commit_echoes_are_dropped(fake: FakeElevenLabs) -> None:
    stt = make_stt(fake)
    rec = Recorder(stt)
    queue: asyncio.Queue = asyncio.Queue()
    await stt.start(queue)
    try:
        assert await stt.wait_connected(5)
        await feed(queue, utterance("yes"))
        await rec.until(lambda: rec.committed == ["yes"])
        before = list(rec.partials)
        fake.stt_send({"message_type": "partial_transcript", "text": "yes"})  # echo of the commit
        fake.stt_send({"message_type": "partial_transcript", "text": "maybe"})
        fake.stt_send({"message_type": "partial_transcript", "text": "maybe"})  # stale repeat
        fake.stt_send({"message_type": "committed_transcript", "text": "maybe"})
        await rec.until(lambda: len(rec.committed) == 2)
        assert rec.partials == before + ["maybe"]
        assert rec.speech_started == 2 and rec.committed == ["yes", "maybe"]
    finally:
        await stt.stop()


async def test_socket_killed_mid_utterance_reconnects_and_loses_no_audio(fake: FakeElevenLabs) -> None:
    stt = make_stt(fake)
    rec = Recorder(stt)
    queue: asyncio.Queue = asyncio.Queue()
    audio = utterance("first one") + utterance("please call me back tomorrow morning", tail=30)
    await stt.start(queue)
    killed = False

    async def maybe_kill(_index: int) -> None:
        nonlocal killed
        # Kill once the second utterance is well under way on the first socket.
        if not killed and fake.stt_sessions and len(fake.stt_sessions[0].commits) == 1 and len(fake.stt_sessions[0].partials) >= 3:
            killed = True
            fake.stt_kill()

    try:
        await feed(queue, audio, on_frame=maybe_kill)
        await rec.until(lambda: len(rec.committed) == 2)
        assert killed and fake.stt_sessions[0].killed
        assert rec.committed == ["first one", "please call me back tomorrow morning"]
        assert rec.errors == []
        await fake_wait(fake, lambda: len(fake.stt_sessions[-1].audio) >= 1)
        first, second = fake.stt_sessions[0], fake.stt_sessions[-1]
        await fake_wait(fake, lambda: audio.endswith(bytes(second.audio)) and len(second.audio) > 0)
        a, b = bytes(first.audio), bytes(second.audio)
        start = len(audio) - len(b)
        assert audio[: len(a)] == a  # the first session got a prefix, in order
        assert audio[start:] == b  # the second got one contiguous slice running to the end
        assert 0 < start <= len(a)  # ... that starts no later than where the first stopped: no gap
        # Replayed = the uncommitted tail the first session had, plus anything lost in flight by the kill.
        assert stt.stats["replayed_bytes"] >= len(a) - start
        assert len(fake.stt_sessions) == 2
    finally:
        await stt.stop()


async def test_replay_after_a_long_silence_is_only_a_short_lead_in(fake: FakeElevenLabs) -> None:
    stt = make_stt(fake, idle_replay_ms=1000)
    rec = Recorder(stt)
    queue: asyncio.Queue = asyncio.Queue()
    await stt.start(queue)
    try:
        await feed(queue, SILENCE * 250)  # 5 s of silence: nothing committed, nothing worth replaying
        await fake_wait(fake, lambda: len(fake.stt_sessions[0].audio) == 250 * 160)
        fake.stt_kill()
        await feed(queue, utterance("after the gap"))
        await rec.until(lambda: rec.committed == ["after the gap"])
        # the 1 s lead-in, plus at most one coalesced chunk (100 ms) that was in flight when the socket died
        assert stt.stats["replayed_bytes"] <= 8000 + stt.max_chunk_bytes and stt.buffered_seconds <= 5
    finally:
        await stt.stop()


async def test_plain_close_and_retryable_error_both_reconnect(fake: FakeElevenLabs) -> None:
    stt = make_stt(fake)
    rec = Recorder(stt)
    queue: asyncio.Queue = asyncio.Queue()
    await stt.start(queue)
    try:
        assert await stt.wait_connected(5)
        fake.stt_close(1000, "idle")  # the service's plain close: the prior art never reconnected here
        await fake_wait(fake, lambda: len(fake.stt_sessions) == 2 and not fake.stt_sessions[1].closed.is_set())
        assert await stt.wait_connected(5)
        fake.stt_error("transcriber_error", "internal", close_code=1011)
        await fake_wait(fake, lambda: len(fake.stt_sessions) == 3)
        await feed(queue, utterance("still here"))
        await rec.until(lambda: rec.committed == ["still here"])
        assert rec.errors == [] and stt.stats["reconnects"] == 2
    finally:
        await stt.stop()


async def test_failed_reconnects_are_retried_with_backoff(fake: FakeElevenLabs) -> None:
    stt = make_stt(fake, backoff_initial=0.01, backoff_max=0.05)
    rec = Recorder(stt)
    queue: asyncio.Queue = asyncio.Queue()
    await stt.start(queue)
    try:
        assert await stt.wait_connected(5)
        fake.reject_stt(times=3, status=503)
        fake.stt_kill()
        await fake_wait(fake, lambda: fake.stt_rejected == 3 and len(fake.stt_sessions) == 2)
        await feed(queue, utterance("back again"))
        await rec.until(lambda: rec.committed == ["back again"])
        assert rec.errors == [] and stt.stats["reconnect_attempts"] >= 3
    finally:
        await stt.stop()


async def test_reconnects_exhausted_reports_once(fake: FakeElevenLabs) -> None:
    stt = make_stt(fake, max_reconnect_attempts=2, backoff_initial=0.01, backoff_max=0.02)
    rec = Recorder(stt)
    queue: asyncio.Queue = asyncio.Queue()
    await stt.start(queue)
    try:
        assert await stt.wait_connected(5)
        fake.reject_stt(times=50, status=503)
        fake.stt_kill()
        await rec.until(lambda: bool(rec.errors))
        await feed(queue, SILENCE * 20)  # audio after giving up is drained and discarded, not buffered
        assert len(rec.errors) == 1 and rec.errors[0].startswith("reconnect_exhausted")
        assert stt.buffered_seconds == 0
    finally:
        await stt.stop()
    assert len(rec.errors) == 1 and fake.stt_rejected == 2  # max_reconnect_attempts, then stop


@pytest.mark.parametrize("how", ["bad_key", "quota_mid_call", "handshake_401"])
async def test_fatal_errors_reach_on_error_exactly_once_without_a_reconnect_loop(fake: FakeElevenLabs, how: str) -> None:
    stt = make_stt(fake, api_key="wrong-key" if how == "bad_key" else API_KEY, backoff_initial=0.01)
    rec = Recorder(stt)
    queue: asyncio.Queue = asyncio.Queue()
    if how == "handshake_401":
        fake.reject_stt(times=1, status=401)
    await stt.start(queue)
    try:
        if how == "quota_mid_call":
            assert await stt.wait_connected(5)
            fake.stt_error("quota_exceeded", "Quota exceeded")
        await rec.until(lambda: bool(rec.errors))
        await feed(queue, utterance("hello"))  # more audio must not revive it
    finally:
        await stt.stop()
    expected = {"bad_key": "auth_error", "quota_mid_call": "quota_exceeded", "handshake_401": "handshake_rejected"}[how]
    assert len(rec.errors) == 1 and rec.errors[0].startswith(expected)
    assert len(fake.stt_sessions) == (0 if how == "handshake_401" else 1)
    assert rec.committed == [] and stt.stats["reconnects"] == 0


async def test_stop_leaves_no_task_behind_and_is_idempotent(fake: FakeElevenLabs) -> None:
    stt = make_stt(fake, keepalive_interval=0.05)
    queue: asyncio.Queue = asyncio.Queue()
    await stt.start(queue)
    assert await stt.wait_connected(5)
    await fake_wait(fake, lambda: fake.stt_sessions[0].empty_chunks >= 1)  # keepalive: an empty chunk
    await stt.stop()
    await stt.stop()
    await fake_wait(fake, lambda: fake.stt_sessions[0].closed.is_set())
    leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    assert leftovers == []
    assert fake.stt_sessions[0].close_code == 1000


async def test_end_of_input_closes_cleanly_without_reconnecting(fake: FakeElevenLabs) -> None:
    stt = make_stt(fake)
    rec = Recorder(stt)
    queue: asyncio.Queue = asyncio.Queue()
    await stt.start(queue)
    await feed(queue, utterance("goodbye"))
    await rec.until(lambda: rec.committed == ["goodbye"])
    queue.put_nowait(None)
    await fake_wait(fake, lambda: fake.stt_sessions[0].closed.is_set())
    await stt.stop()
    assert len(fake.stt_sessions) == 1 and rec.errors == []


async def test_echo_window_and_barge_in_rules(fake: FakeElevenLabs) -> None:
    stt = make_stt(fake, echo_discard_seconds=30.0)
    rec = Recorder(stt)
    queue: asyncio.Queue = asyncio.Queue()
    await stt.start(queue)
    try:
        stt.set_speaking(True)  # caller talks over the agent: barge-in signal, utterance kept
        await feed(queue, utterance("stop"))
        await rec.until(lambda: rec.committed == ["stop"])
        assert rec.speech_started == 1
        stt.set_speaking(False)  # inside the echo window: the tail of our own voice, discarded
        await feed(queue, utterance("echo"))
        await fake_wait(fake, lambda: "echo" in fake.stt_sessions[0].commits)
        stt.echo_discard_seconds = 0.0
        stt.set_speaking(True)
        stt.set_speaking(False)
        await feed(queue, utterance("real"))
        await rec.until(lambda: rec.committed == ["stop", "real"])
        assert rec.speech_started == 2 and stt.stats["echo_discarded"] == 1 and "echo" not in rec.partials
    finally:
        await stt.stop()


async def test_no_barge_in_mode_discards_speech_while_speaking(fake: FakeElevenLabs) -> None:
    stt = make_stt(fake, barge_in=False, echo_discard_seconds=0.0)
    rec = Recorder(stt)
    queue: asyncio.Queue = asyncio.Queue()
    await stt.start(queue)
    try:
        stt.set_speaking(True)
        await feed(queue, utterance("ignored"))
        await fake_wait(fake, lambda: "ignored" in fake.stt_sessions[0].commits)
        stt.set_speaking(False)
        await feed(queue, utterance("heard"))
        await rec.until(lambda: rec.committed == ["heard"])
        assert rec.speech_started == 1
    finally:
        await stt.stop()


async def test_manual_commit_strategy(fake: FakeElevenLabs) -> None:
    stt = make_stt(fake, commit_strategy="manual")
    rec = Recorder(stt)
    queue: asyncio.Queue = asyncio.Queue()
    await stt.start(queue)
    try:
        await feed(queue, SILENCE * 5 + encode_text_as_speech("manual"))
        stt.commit()
        await rec.until(lambda: rec.committed == ["manual"])
        assert fake.stt_sessions[0].commits_requested == 1 and stt.buffered_seconds == 0
    finally:
        await stt.stop()


@pytest.mark.parametrize("min_chunk_ms, chunks", [(1000, 1), (20, 2)])
async def test_frames_shorter_than_min_chunk_go_out_as_one_message(fake: FakeElevenLabs, min_chunk_ms: int, chunks: int) -> None:
    """Two 20 ms frames a few ms apart: with ``min_chunk_ms`` above 40 they are one message (sent at the first
    frame's deadline, not held for more audio), with ``min_chunk_ms=20`` one message each, as before."""
    stt = make_stt(fake, min_chunk_ms=min_chunk_ms)
    queue: asyncio.Queue = asyncio.Queue()
    await stt.start(queue)
    try:
        assert await stt.wait_connected(5)
        session = fake.stt_sessions[0]
        queue.put_nowait(b"\x01" * 160)
        if min_chunk_ms == 20:
            await fake_wait(fake, lambda: len(session.audio) == 160)
        else:
            await asyncio.sleep(0.005)
        queue.put_nowait(b"\x02" * 160)
        await fake_wait(fake, lambda: len(session.audio) == 320)
        assert bytes(session.audio) == b"\x01" * 160 + b"\x02" * 160
        assert session.chunks - session.empty_chunks == chunks == stt.stats["chunks_sent"]
    finally:
        await stt.stop()


def test_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ELEVENLABS_API_KEY", raising=False)
    keyless = ElevenLabsRealtimeStt()  # 0.1.x: constructs without credentials ...
    with pytest.raises(ConfigError, match="ELEVENLABS_API_KEY"):
        keyless.check_credentials()  # ... and says so at first use
    monkeypatch.setenv("ELEVENLABS_API_KEY", "k")
    monkeypatch.setenv("STT_LANGUAGE_CODE", "fi")
    stt = create_stt("elevenlabs")
    assert isinstance(stt, ElevenLabsRealtimeStt) and type(stt) is PersistentSttSession and type(stt).__name__ == "PersistentSttSession"
    assert stt.language_code == "fi" and stt.url().startswith("wss://api.elevenlabs.io/v1/speech-to-text/realtime?")
    with pytest.raises(ConfigError):
        ElevenLabsRealtimeStt(vad_silence_threshold_secs=10)
    with pytest.raises(ConfigError):
        ElevenLabsRealtimeStt(keyterms=["x" * 21])
    with pytest.raises(ConfigError):
        ElevenLabsRealtimeStt(commit_strategy="sometimes")


def test_call_end_to_end_socket_kill_mid_utterance_still_hears_it_whole(fake: FakeElevenLabs) -> None:
    """VoiceServer + SimulatedPhone + this STT: the flow's listen() gets the whole sentence despite a kill."""
    said = "i would like to move my appointment"
    heard: dict[str, Any] = {}
    done = threading.Event()

    def flow(session: Any) -> None:
        try:
            heard["text"] = session.listen(timeout=20)
        except Exception as exc:  # surfaced below
            heard["error"] = exc
        finally:
            done.set()

    server = VoiceServer(stt_factory=lambda: make_stt(fake), inbound_flow=flow)
    with server.start() as running:
        phone = SimulatedPhone(running.ws_url + "/stream").connect()
        try:
            assert fake.wait_until(lambda: len(fake.stt_sessions) == 1, 5)
            phone.say(encode_text_as_speech(said))
            assert fake.wait_until(lambda: len(fake.stt_sessions[0].partials) >= 4, 10)
            fake.stt_kill()
            assert done.wait(20)
        finally:
            phone.close()
    assert heard.get("text") == said, heard
    assert len(fake.stt_sessions) == 2
