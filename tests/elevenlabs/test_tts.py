"""ElevenLabs TTS against the loopback fake: real HTTP streaming, real calls through the real server and phone."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from voice_runtime import VoiceServer, create_tts
from voice_runtime.errors import ConfigError, ProviderError
from voice_runtime.providers.elevenlabs_stt import ElevenLabsRealtimeStt
from voice_runtime.providers.elevenlabs_tts import DEFAULT_MODEL_ID, ElevenLabsTts
from voice_runtime.providers.elevenlabs_tts import _ElevenLabsTTS as ElevenLabsTTS
from voice_runtime.testing import SimulatedPhone
from voice_runtime.testing.fake_elevenlabs import FakeElevenLabs, encode_text_as_speech

from .conftest import API_KEY

LONG = " ".join(f"This is sentence number {n} of a long announcement that the caller will interrupt." for n in range(1, 6))


def _tts(fake: FakeElevenLabs, **kwargs: Any) -> ElevenLabsTts:
    return ElevenLabsTts(api_key=API_KEY, base_url=fake.http_url, ws_base_url=fake.ws_url, **kwargs)


def _call(fake: FakeElevenLabs, flow: Any, *, stt: bool = False, **tts_kwargs: Any):
    stt_factory = (lambda: ElevenLabsRealtimeStt(api_key=API_KEY, base_url=fake.ws_url, vad_silence_threshold_secs=0.3)) if stt else None
    server = VoiceServer(tts_factory=lambda: _tts(fake, **tts_kwargs), stt_factory=stt_factory, inbound_flow=flow)
    return server.start()


class Flow:
    """Runs a flow body on the server's flow thread and hands results to the test thread."""

    def __init__(self, body: Any) -> None:
        self.body, self.values, self.done, self.error = body, {}, threading.Event(), None

    def __call__(self, session: Any) -> None:
        try:
            self.body(session, self.values)
        except BaseException as exc:  # surfaced in wait()
            self.error = exc
        finally:
            self.done.set()

    def wait(self, timeout: float = 20.0) -> dict[str, Any]:
        assert self.done.wait(timeout), "flow did not finish"
        if self.error is not None:
            raise self.error
        return self.values


@pytest.mark.parametrize("fake", [{"tts_realtime_factor": 2.0}], indirect=True)
def test_first_audio_streams_to_the_phone_before_synthesis_ends_and_bytes_pass_through(fake: FakeElevenLabs) -> None:
    text = "Hello, thanks for calling. This reply is long enough to take a couple of seconds to say."

    def body(session: Any, values: dict[str, Any]) -> None:
        first = session.speak(text, wait=True, timeout=20)
        second = session.speak("And a second sentence.", wait=True, timeout=20)
        values.update(first=first, second=second)

    flow = Flow(body)
    with _call(fake, flow) as running:
        phone = SimulatedPhone(running.ws_url + "/stream").connect()
        try:
            values = flow.wait()
            first_media = phone.wait_for("media", timeout=5)
        finally:
            phone.close()
    first_req, second_req = fake.tts_requests
    # Streaming, not buffering: the phone's socket carried audio while the fake was still sending.
    assert first_media.at < first_req.started_at + (first_req.bytes_sent / 8000) / 2.0
    assert first_req.first_byte_at is not None and first_media.at >= first_req.first_byte_at
    assert values["first"].heard and values["first"].error is None and values["first"].first_audio_latency is not None
    # Passthrough: the μ-law bytes the service produced are exactly what the phone played.
    expected, _ = fake._audio(text, "ulaw_8000")
    assert expected in phone.heard_ulaw()
    assert first_req.query["output_format"] == "ulaw_8000"
    assert first_req.body == {"text": text, "model_id": DEFAULT_MODEL_ID}
    # One pooled connection: the second utterance reused the first one's TCP connection.
    assert first_req.client == second_req.client
    assert phone.violations == []


@pytest.mark.parametrize(
    ("status", "error", "times"),
    [
        (401, {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}, 1),
        (429, {"detail": {"status": "quota_exceeded", "message": "You have exceeded your quota"}}, 1),
        (500, {"detail": {"status": "internal_error", "message": "boom"}}, 2),  # retried once, fails twice
    ],
)
def test_error_status_reports_once_and_plays_nothing(fake: FakeElevenLabs, status: int, error: dict, times: int) -> None:
    fake.fail_tts(status, error, times=times)
    errors: list[str] = []

    def body(session: Any, values: dict[str, Any]) -> None:
        session.tts.on_error = errors.append
        values["result"] = session.speak("Hello there.", wait=True, timeout=5)
        values["dict"] = session.tts.speak("Hello there.", session)  # prior-art shape, now succeeds

    flow = Flow(body)
    with _call(fake, flow) as running:
        phone = SimulatedPhone(running.ws_url + "/stream").connect()
        try:
            values = flow.wait()
        finally:
            phone.close()
    result = values["result"]
    assert len(errors) == 1 and f"HTTP {status}" in errors[0]
    assert result.error and f"HTTP {status}" in result.error and result.audio_seconds == 0.0
    failed = [r for r in fake.tts_requests if r.status != 200]
    assert len(failed) == times
    # Nothing from the failed request was played: the only audio is the second, successful utterance.
    expected, _ = fake._audio("Hello there.", "ulaw_8000")
    assert len(phone.heard_ulaw().replace(b"\xff", b"")) <= len(expected)
    assert values["dict"]["last_spoken"] == "Hello there." and "error" not in values["dict"]


def test_error_classification(fake: FakeElevenLabs) -> None:
    tts = _tts(fake, max_retries=0)
    try:
        fake.fail_tts(429, {"detail": {"status": "too_many_concurrent_requests", "message": "busy"}})
        with pytest.raises(ProviderError) as busy:
            list(tts.synthesize("Hi.", threading.Event()))
        assert busy.value.retryable and busy.value.provider == "elevenlabs"
        fake.fail_tts(401)
        with pytest.raises(ProviderError) as auth:
            list(tts.synthesize("Hi.", threading.Event()))
        assert not auth.value.retryable and API_KEY not in str(auth.value)
        closed = ElevenLabsTts(api_key=API_KEY, base_url="http://127.0.0.1:9", max_retries=0)
        with pytest.raises(ProviderError) as network:
            list(closed.synthesize("Hi.", threading.Event()))
        assert network.value.retryable
        assert list(tts.synthesize("   ", threading.Event())) == []
    finally:
        tts.close()


@pytest.mark.parametrize("fake", [{"tts_realtime_factor": 1.0}], indirect=True)
def test_stop_event_closes_the_http_stream_promptly(fake: FakeElevenLabs) -> None:
    tts = _tts(fake)
    stop = threading.Event()
    received = 0
    try:
        for chunk in tts.synthesize(LONG, stop):
            received += len(chunk)
            if received >= 1600:
                stop.set()
        record = fake.tts_requests[-1]
        assert fake.wait_until(record.ended.is_set, 5)
        assert record.client_gone and not record.completed
        assert record.bytes_sent < len(fake._audio(LONG, "ulaw_8000")[0]) // 2
    finally:
        tts.close()


@pytest.mark.parametrize("fake", [{"tts_realtime_factor": 1.0}], indirect=True)
def test_caller_barge_in_stops_synthesis_and_playback(fake: FakeElevenLabs) -> None:
    """Full path: the caller speaks over the agent → Scribe partial → on_speech_started → stop + clear."""
    started = threading.Event()

    def body(session: Any, values: dict[str, Any]) -> None:
        started.set()
        values["result"] = session.speak(LONG, wait=True, timeout=20)
        values["heard"] = session.listen(timeout=10)

    flow = Flow(body)
    with _call(fake, flow, stt=True) as running:
        phone = SimulatedPhone(running.ws_url + "/stream").connect()
        try:
            assert started.wait(5)
            phone.wait_for("playback_start", timeout=10)
            phone.say(encode_text_as_speech("wait a moment"))
            values = flow.wait()
            clear = phone.wait_for("clear", timeout=5)
        finally:
            phone.close()
    record = fake.tts_requests[0]
    assert fake.wait_until(record.ended.is_set, 5)
    assert values["result"].interrupted and record.client_gone and not record.completed
    assert values["heard"] == "wait a moment"
    assert clear is not None


@pytest.mark.parametrize("fake", [{"stream_input_timeout": 0.6, "tts_realtime_factor": None}], indirect=True)
def test_token_stream_survives_a_slow_llm_with_keepalives(fake: FakeElevenLabs) -> None:
    tts = _tts(fake, keepalive_interval=0.2)
    pause = threading.Event()

    def tokens() -> Any:
        yield from ["Hello", " there", ". ", "Let me", " check"]
        pause.wait(1.2)  # a slow LLM: longer than the service's inactivity timeout
        yield from [" that", " for you", "."]

    try:
        audio = b"".join(tts.synthesize_stream(tokens(), threading.Event()))
        record = fake.tts_requests[-1]
        assert fake.wait_until(record.ended.is_set, 5)
        assert record.completed and record.keepalives >= 1 and record.flushes >= 1
        assert "".join(record.texts).split() == "Hello there. Let me check that for you.".split()
        assert record.body["text"] == " " and record.query["output_format"] == "ulaw_8000"
        assert len(audio) == record.bytes_sent > 0
    finally:
        tts.close()


@pytest.mark.parametrize("fake", [{"tts_realtime_factor": 1.0}], indirect=True)
def test_token_stream_barge_in_closes_cleanly(fake: FakeElevenLabs) -> None:
    tts = _tts(fake)
    stop = threading.Event()
    got = 0
    try:
        for chunk in tts.synthesize_stream(iter([LONG]), stop):
            got += len(chunk)
            if got >= 800:
                stop.set()
        record = fake.tts_requests[-1]
        assert fake.wait_until(record.ended.is_set, 5)
        assert record.client_gone and record.close_code == 1000
    finally:
        tts.close()


@pytest.mark.parametrize("fake", [{"tts_realtime_factor": 4.0}], indirect=True)
def test_speak_stream_in_a_call(fake: FakeElevenLabs) -> None:
    def body(session: Any, values: dict[str, Any]) -> None:
        values["result"] = session.tts.speak_stream(iter(["Your appointment ", "is at ", "ten."]), session)

    flow = Flow(body)
    with _call(fake, flow) as running:
        phone = SimulatedPhone(running.ws_url + "/stream").connect()
        try:
            values = flow.wait()
        finally:
            phone.close()
    assert values["result"]["last_spoken"] == "Your appointment is at ten."
    assert values["result"]["interrupted"] is False and "error" not in values["result"]
    assert len(phone.heard_ulaw().replace(b"\xff", b"")) > 0


def test_configuration_is_read_per_instance(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ELEVENLABS_API_KEY", raising=False)
    keyless = ElevenLabsTts()  # 0.1.x: constructs without credentials ...
    with pytest.raises(ConfigError, match="ELEVENLABS_API_KEY"):
        keyless.check_credentials()  # ... and says so at first use
    monkeypatch.setenv("ELEVENLABS_API_KEY", "k1")
    monkeypatch.setenv("ELEVENLABS_VOICE_ID", "voice-from-env")
    monkeypatch.setenv("ELEVENLABS_VOICE_SETTINGS", '{"stability": 0.4, "speed": 1.1}')
    tts = create_tts("elevenlabs")
    assert isinstance(tts, ElevenLabsTts) and type(tts) is ElevenLabsTTS and type(tts).__name__ == "ElevenLabsTTS"
    assert (tts.api_key, tts.voice_id, tts.model_id) == ("k1", "voice-from-env", "eleven_flash_v2_5")
    assert tts.voice_settings == {"stability": 0.4, "speed": 1.1}
    assert ElevenLabsTts(voice_id="arg", model_id="eleven_turbo_v2_5").voice_id == "arg"
    monkeypatch.setenv("ELEVENLABS_VOICE_SETTINGS", "not json")
    with pytest.raises(ConfigError):
        ElevenLabsTts()


class _WatchedTts:
    """The real ElevenLabsTts; at each piece its stream yields, how much of the call's speech was already queued."""

    def __init__(self, inner: ElevenLabsTts) -> None:
        self.inner, self.session, self.bytes, self.queued_at_pull = inner, None, 0, [0.0]

    def synthesize(self, text: str, stop: Any = None) -> Any:
        for piece in self.inner.synthesize(text, stop):
            self.bytes += len(piece)
            self.queued_at_pull.append(self.session.outbound_buffered_seconds)  # type: ignore[attr-defined]
            yield piece

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("fake", [{"tts_realtime_factor": 4.0}], indirect=True)
def test_speech_streamed_faster_than_real_time_is_read_only_so_far_ahead_of_the_carrier(fake: FakeElevenLabs) -> None:
    """The fake streams at 4x real time, as the load benchmark's does. By default the speech worker stops reading
    once ``speech_read_ahead_seconds`` (1 s) is queued and reads on at half of it, so the provider's audio waits
    in the socket, not in the call's memory; with None it reads as fast as the fake sends (most of a 7 s
    utterance queued). Either way the phone hears every byte the service produced, to the end."""
    text = " ".join(LONG.split(". ")[:3])
    watched: list[_WatchedTts] = []

    def factory() -> _WatchedTts:
        watched.append(_WatchedTts(_tts(fake)))
        return watched[-1]

    def body(session: Any, values: dict[str, Any]) -> None:
        session.speech_read_ahead_seconds = setting["read_ahead"]
        watched[-1].session = session
        values["result"] = session.speak(text, wait=True, timeout=60)
        values["waits"] = session.stats["speech_read_ahead_waits"]

    most_queued, waits = {}, {}
    for read_ahead in (1.0, None):
        setting = {"read_ahead": read_ahead}
        flow = Flow(body)
        server = VoiceServer(tts_factory=factory, inbound_flow=flow)
        with server.start() as running:
            phone = SimulatedPhone(running.ws_url + "/stream").connect()
            try:
                values = flow.wait(60)
            finally:
                phone.close()
        expected, _ = fake._audio(text, "ulaw_8000")
        assert values["result"].heard and values["result"].error is None
        assert watched[-1].bytes == len(expected) and expected in phone.heard_ulaw()
        most_queued[read_ahead], waits[read_ahead] = max(watched[-1].queued_at_pull), values["waits"]
    assert len(expected) / 8000 > 5  # long enough for the read-ahead to matter
    assert waits[1.0] > 0 and waits[None] == 0
    assert most_queued[1.0] <= 1.0 + 0.1  # one piece of the fake's (20 ms) past the limit at most, with slack
    assert most_queued[None] > 3.0
