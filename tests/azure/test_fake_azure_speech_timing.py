"""The Azure SDK fake's service model is honoured (it is what the first-token benchmark's Azure path measures).

Measured on the fake's own events (stamped in the SDK-thread callbacks), never with sleeps: the first
``synthesizing`` chunk is not fired before ``first_chunk_latency``, later chunks not before the generation
speed allows, and the audio for a text is as long as the fake ElevenLabs' (the shared model), so the two
benchmark paths are comparable. The mocking boundary is the SDK, as in the other ``tests/azure`` files.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

pytest.importorskip("azure.cognitiveservices.speech", reason='the Azure providers need the [azure] extra: pip install "voice-runtime[azure]"')

from voice_runtime.providers.azure_sdk import SynthesizerOptions  # noqa: E402
from voice_runtime.providers.azure_tts import AzureTts  # noqa: E402
from voice_runtime.testing.fake_azure_speech import (  # noqa: E402
    ULAW_BYTES_PER_SECOND,
    CancellationReason,
    FakeSpeechSdk,
    FakeSynthesizer,
    SynthesisTiming,
)
from voice_runtime.testing.fake_elevenlabs import FakeElevenLabs  # noqa: E402

TEXT = "Sure, I can help with that."
OPTIONS = SynthesizerOptions(voice="en-US-JennyNeural")


class Recorder:
    """Connected to a synthesizer's signals: stamps every event on the thread that fired it."""

    def __init__(self, synth: FakeSynthesizer) -> None:
        self.chunks: list[tuple[float, int, str]] = []
        self.ended = threading.Event()
        self.terminal: list[Any] = []
        synth.synthesizing.connect(self.on_chunk)
        synth.synthesis_completed.connect(self.on_end)
        synth.synthesis_canceled.connect(self.on_end)

    def on_chunk(self, evt: Any) -> None:
        self.chunks.append((time.monotonic(), len(evt.result.audio_data), threading.current_thread().name))

    def on_end(self, evt: Any) -> None:
        self.terminal.append(evt.result)
        self.ended.set()


def test_first_chunk_not_before_latency_and_chunks_paced_at_the_generation_speed() -> None:
    timing = SynthesisTiming(first_chunk_latency=0.15, realtime_factor=4.0)
    synth = FakeSynthesizer(OPTIONS, timing=timing)
    recorder = Recorder(synth)
    future = synth.speak_text_async(TEXT)
    assert recorder.ended.wait(10.0)
    assert future.get().reason.name == "SynthesizingAudioCompleted"
    requested = synth.requested_at[0]
    first_at = recorder.chunks[0][0]
    assert first_at - requested >= 0.15
    assert synth.first_chunk_at[0] - requested >= 0.15
    assert {name for _, _, name in recorder.chunks} == {"Dummy-synth"}  # a foreign thread, like the SDK's
    assert threading.current_thread().name not in {name for _, _, name in recorder.chunks}
    sent = 0
    for at, size, _ in recorder.chunks:  # the byte at offset n is not out before n / 8000 / 4 s after the first
        assert at - first_at >= sent / ULAW_BYTES_PER_SECOND / 4.0 - 1e-3
        sent += size
    assert sent == len(timing.audio_for(TEXT))


def test_audio_length_follows_the_text_like_the_fake_elevenlabs() -> None:
    timing = SynthesisTiming()
    eleven = FakeElevenLabs("k")  # not started: only its audio model is used
    for text in (TEXT, "Yes.", "Your order number four two seven is ready for pickup at the front counter."):
        azure_audio = timing.audio_for(text)
        eleven_audio, rate = eleven._audio(text, "ulaw_8000")
        assert rate == ULAW_BYTES_PER_SECOND
        assert abs(len(azure_audio) - len(eleven_audio)) < 160  # the Azure fake trims to whole 20 ms frames
    assert len(timing.audio_for("Yes.")) == 2400  # the 0.3 s minimum


def test_stop_during_the_latency_cancels_before_any_audio() -> None:
    synth = FakeSynthesizer(OPTIONS, timing=SynthesisTiming(first_chunk_latency=5.0, realtime_factor=4.0))
    recorder = Recorder(synth)
    synth.speak_text_async(TEXT)
    synth.stop_speaking_async().get()
    assert recorder.ended.wait(2.0)  # far sooner than the 5 s latency: the model waits on the stop event
    assert recorder.chunks == []
    assert recorder.terminal[0].cancellation_details.reason == CancellationReason.CancelledByUser


def test_azure_tts_over_the_timed_fake_yields_first_audio_after_the_latency() -> None:
    timing = SynthesisTiming(first_chunk_latency=0.12, realtime_factor=4.0)
    sdk = FakeSpeechSdk(timing=timing)
    tts = AzureTts(sdk=sdk)
    try:
        started = time.monotonic()
        chunks = tts.synthesize(TEXT, threading.Event())
        first = next(chunks)
        first_at = time.monotonic()
        audio = first + b"".join(chunks)
    finally:
        tts.close()
    synth = sdk.synthesizers[0]
    assert first_at - started >= 0.12
    assert first_at >= synth.first_chunk_at[0] >= synth.requested_at[0] + 0.12
    assert audio == timing.audio_for(TEXT)
    assert tts.stats["completed"] == 1
