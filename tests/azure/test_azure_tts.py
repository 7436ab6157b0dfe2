"""AzureTts against an SDK-shaped fake synthesizer that fires its events from a real foreign thread.

Mocking boundary: only the Azure Speech SDK's synthesizer is faked (see ``voice_runtime/testing/fake_azure_speech.py``: a
proprietary native binary with an internal protocol). The thread hand-off, the bounded queue, the locking,
``VoiceSession.speak`` and its error reporting are real.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

pytest.importorskip("azure.cognitiveservices.speech", reason='the Azure providers need the [azure] extra: pip install "voice-runtime[azure]"')

from voice_runtime.testing.fake_azure_speech import CancellationErrorCode, FakeSpeechSdk, FakeSynthesizer, fake_speech_audio  # noqa: E402
from voice_runtime import VoiceSession  # noqa: E402
from voice_runtime.errors import ProviderError  # noqa: E402
from voice_runtime.providers.azure_tts import AzureTts  # noqa: E402
from voice_runtime.providers.azure_tts import _AzureTTS as AzureTTS  # noqa: E402  (the 0.1.x name)


def make(synth_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> tuple[AzureTts, FakeSpeechSdk]:
    fake = FakeSpeechSdk()
    fake.synth_factory = lambda options: FakeSynthesizer(options, **(synth_kwargs or {}))
    return AzureTts(sdk=fake, **kwargs), fake


def test_factory_name_and_voice():
    from voice_runtime import create_tts
    from voice_runtime.tts import get_tts_class

    assert get_tts_class("azure") is AzureTTS and issubclass(AzureTTS, AzureTts) and AzureTTS.__name__ == "AzureTTS"
    tts = create_tts("azure", sdk=FakeSpeechSdk(), voice_name="fi-FI-NooraNeural")
    assert tts.options.voice == "fi-FI-NooraNeural"


def test_first_chunk_arrives_before_synthesis_completes():
    tts, fake = make({"gate_after": 1})
    stop = threading.Event()
    chunks = tts.synthesize("Hello, thanks for calling.", stop)
    first = next(chunks)
    synth = fake.synthesizers[0]
    assert first == synth.audio[:800]
    assert not synth.completed.is_set()  # still synthesizing: the first chunk was streamed
    synth.release()
    rest = list(chunks)
    assert first + b"".join(rest) == synth.audio
    assert synth.callback_threads and threading.current_thread().name not in synth.callback_threads
    assert synth.stop_calls == 0 and tts.stats["completed"] == 1


def test_synthesizer_is_reused_and_utterances_are_serialized():
    tts, fake = make({"chunk_interval": 0.005})
    results: list[bytes] = []
    errors: list[BaseException] = []

    def speak(text: str) -> None:
        try:
            results.append(b"".join(tts.synthesize(text, threading.Event())))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=speak, args=(f"sentence {n}",)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20.0)
    assert errors == []
    assert len(fake.synthesizers) == 1  # one long-lived synthesizer
    synth = fake.synthesizers[0]
    assert synth.max_active == 1  # never two syntheses at once on it
    assert sorted(synth.texts) == ["sentence 0", "sentence 1", "sentence 2"]
    assert results == [synth.audio] * 3  # no chunk leaked between utterances


def test_stop_event_stops_synthesis_at_the_service():
    tts, fake = make({"audio": fake_speech_audio(5.0), "chunk_interval": 0.01})
    stop = threading.Event()
    got: list[bytes] = []
    for chunk in tts.synthesize("A long announcement that the caller interrupts.", stop):
        got.append(chunk)
        if len(got) == 3:
            stop.set()  # barge-in
    synth = fake.synthesizers[0]
    assert synth.stop_calls == 1
    assert synth.stop_threads and synth.stop_threads[0] != threading.current_thread().name
    assert len(got) == 3
    assert synth.chunks_sent < len(synth.audio) // 800  # the service stopped producing, not just us listening
    assert tts.stats["stops"] == 1 and tts.last_stop_seconds is not None
    # The synthesizer stays usable for the next utterance.
    assert b"".join(tts.synthesize("Sorry, go ahead.", threading.Event())) == synth.audio


def test_abandoned_generator_also_stops_synthesis():
    tts, fake = make({"audio": fake_speech_audio(5.0), "chunk_interval": 0.01})
    chunks = tts.synthesize("Something long.", threading.Event())
    next(chunks)
    chunks.close()  # the consumer went away (e.g. the call hung up)
    assert fake.synthesizers[0].stop_calls == 1
    assert b"".join(tts.synthesize("Next.", threading.Event()))  # the lock was released


@pytest.mark.parametrize(
    ("code", "retryable"),
    [(CancellationErrorCode.AuthenticationFailure, False), (CancellationErrorCode.ConnectionFailure, True)],
)
def test_canceled_result_raises_provider_error(code, retryable):
    tts, _fake = make({"audio": b"", "cancel_with": (code, "WebSocket upgrade failed")})
    with pytest.raises(ProviderError) as info:
        list(tts.synthesize("Hello.", threading.Event()))
    assert info.value.provider == "azure" and info.value.retryable is retryable
    assert code.name in str(info.value) and "WebSocket upgrade failed" in str(info.value)


def test_canceled_synthesis_reaches_on_error_once_through_the_session():
    tts, _fake = make({"audio": b"", "cancel_with": (CancellationErrorCode.AuthenticationFailure, "401")})
    errors: list[str] = []
    tts.on_error = errors.append
    session = VoiceSession(tts=tts)
    result = session.speak("Hello.")  # returns at once: the speech worker synthesizes it
    assert result.wait_synthesized(10)
    assert result.error is not None and "AuthenticationFailure" in result.error
    assert errors == [result.error]
    assert result.as_dict()["error"] == result.error


def test_no_audio_in_time_is_a_retryable_error_and_stops_the_request():
    tts, fake = make({"silent": True}, first_chunk_timeout=0.2)
    with pytest.raises(ProviderError) as info:
        list(tts.synthesize("Hello?", threading.Event()))
    assert info.value.retryable is True and "first audio" in str(info.value)
    assert fake.synthesizers[0].stop_calls == 1


def test_callback_failure_on_the_sdk_thread_is_logged(caplog):
    tts, fake = make()
    synth_ready = tts._ensure_synthesizer()
    with caplog.at_level(logging.ERROR, logger="voice_runtime.providers.azure_tts"):
        tts._current = object()  # type: ignore[assignment]  # an utterance object the callback cannot use
        thread = threading.Thread(target=synth_ready.synthesizing.fire, args=(object(),))
        thread.start()
        thread.join(5.0)
        tts._current = None
    assert tts.stats["callback_errors"] == 1
    assert synth_ready.synthesizing.swallowed == []  # nothing escaped into the SDK
    assert any("callback failed" in r.getMessage() for r in caplog.records)
    assert b"".join(tts.synthesize("Fine.", threading.Event())) == fake.synthesizers[0].audio


def test_warm_up_pre_connects_and_reconnects_after_a_stop():
    tts, fake = make({"audio": fake_speech_audio(3.0), "chunk_interval": 0.01}, pre_connect=True)
    tts.warm_up()
    assert len(fake.connections) == 1 and fake.connections[0].opened_for is fake.synthesizers[0]
    stop = threading.Event()
    for _chunk in tts.synthesize("Interrupted.", stop):
        stop.set()
    assert len(fake.connections) == 2  # stop_speaking closes the connection; pre_connect reopens it
    tts.close()
    with pytest.raises(ProviderError):
        list(tts.synthesize("After close.", threading.Event()))


def test_empty_text_never_touches_the_sdk():
    tts, fake = make()
    assert list(tts.synthesize("   ", threading.Event())) == []
    assert fake.synthesizers == []
