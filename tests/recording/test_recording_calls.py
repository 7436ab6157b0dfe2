"""Recording on real simulated calls: unique files, pause, mixer taps, the callback sink and an S3 upload.

The S3 stand-in is a real HTTP server on loopback that stores PUT bodies (the boundary we cannot run here is
the storage service itself; the example's client code runs unchanged).
"""

from __future__ import annotations

import http.server
import importlib.util
import threading
import wave
from pathlib import Path
from typing import Any

import numpy as np

from voice_runtime import call_events as ev
from voice_runtime.audio import pcm16_to_ulaw
from voice_runtime.providers.mock import tone_speech
from voice_runtime.recording import CallbackRecorder, RecordingChunk, RecordingFile, call_audio_of, callback_recorder_factory

from ..conftest import CallHarness, FlowResult

ROOT = Path(__file__).resolve().parents[2]


def _saved_paths(sessions: list[Any]) -> list[Path]:
    return [Path(e.data["path"]) for s in sessions for e in s.events if e.kind == ev.RECORDING_SAVED]


def _wait_saved(session: Any, timeout: float = 10.0) -> Path:
    done = threading.Event()
    found: list[Path] = []

    def on_event(event: Any) -> None:
        if event.kind == ev.RECORDING_SAVED:
            found.append(Path(event.data["path"]))
            done.set()

    session.add_event_listener(on_event)
    if not done.is_set():
        found.extend(_saved_paths([session]))
        if found:
            done.set()
    assert done.wait(timeout), "recording was not saved"
    return found[0]


def _channels(path: Path) -> np.ndarray:
    with wave.open(str(path)) as wav:
        assert wav.getnchannels() == 2 and wav.getframerate() == 8000
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)


def _loud_seconds(samples: np.ndarray) -> float:
    frames = np.abs(samples[: len(samples) // 160 * 160].astype(np.int32)).reshape(-1, 160).mean(axis=1)
    return float((frames > 300).sum()) * 0.02


def test_calls_with_the_same_call_id_get_distinct_time_stamped_files(harness: CallHarness, tmp_path: Path) -> None:
    sessions: list[Any] = []
    lock = threading.Lock()

    def flow(session: Any) -> None:
        with lock:
            sessions.append(session)
        session.speak("Recording check.", wait=True)
        session.hangup(timeout=5)

    # Two servers recording into one folder (one server refuses a second session for a CallSid it has seen:
    # replay safety), both calls with the same call id: the old "<call_sid>.wav" made the second overwrite.
    for _ in range(2):
        _, running = harness.serve(flow, recordings_dir=tmp_path)
        phone = harness.phone(running, call_id="CA" + "7" * 32)
        assert phone.wait_closed(10)
    paths = [_wait_saved(s) for s in sessions]
    assert len(set(paths)) == 2 and all(p.exists() for p in paths)
    for path in paths:
        assert path.parent == tmp_path and ("CA" + "7" * 32) in path.name
        assert path.name[:8].isdigit() and path.name[8] == "T"  # starts with the UTC time
        assert _loud_seconds(_channels(path)[:, 1]) > 0.3  # the agent's speech is on the right channel


def test_pause_recording_masks_the_caller_for_every_tap(harness: CallHarness, flow_result: FlowResult, tmp_path: Path) -> None:
    secret = pcm16_to_ulaw(tone_speech(1.2, frequency=300.0))
    public = pcm16_to_ulaw(tone_speech(0.6, frequency=300.0))
    paused, resumed, said = threading.Event(), threading.Event(), threading.Event()
    mixer_audio = bytearray()

    class Mixer:  # a prior-art style mixer: set_mixer, then write_caller / write_agent
        def write_caller(self, chunk: bytes, at: float | None = None) -> None:
            mixer_audio.extend(chunk)

        def write_agent(self, chunk: bytes, at: float | None = None) -> None:
            pass

    def body(session: Any) -> None:
        session.set_mixer(Mixer())
        session.pause_recording()
        paused.set()
        assert said.wait(10)
        session.resume_recording()
        resumed.set()
        flow_result.values["path"] = _wait_saved(session, 20)

    _, running = harness.serve(flow_result.run(body), recordings_dir=tmp_path)
    phone = harness.phone(running)
    assert paused.wait(5)
    phone.say(secret).wait_finished(10)
    said.set()
    assert resumed.wait(5)
    phone.say(public).wait_finished(10)
    phone.hangup()
    values = flow_result.wait()
    caller = _channels(values["path"])[:, 0]
    loud = _loud_seconds(caller)
    assert 0.4 <= loud <= 0.7, loud  # only the 0.6 s said after resume_recording() is there
    mixer_pcm = np.frombuffer(bytes(mixer_audio), dtype=np.uint8)
    from voice_runtime.audio import ulaw_to_pcm16

    assert 0.4 <= _loud_seconds(ulaw_to_pcm16(mixer_pcm.tobytes())) <= 0.7  # the mixer got the same silence


def test_set_mixer_taps_receive_both_sides_in_order_with_timestamps(harness: CallHarness, flow_result: FlowResult) -> None:
    caller_line = pcm16_to_ulaw(tone_speech(0.8, frequency=250.0))
    seen: list[tuple[str, bytes, float | None]] = []
    lock = threading.Lock()
    spoke = threading.Event()

    class Mixer:
        def write_caller(self, chunk: bytes, at: float | None = None) -> None:
            with lock:
                seen.append(("caller", chunk, at))

        def write_agent(self, chunk: bytes, at: float | None = None) -> None:
            with lock:
                seen.append(("agent", chunk, at))

    def body(session: Any) -> None:
        session.set_mixer(Mixer())  # no recordings_dir: taps work without any sink
        result = session.speak("Tell me something.", wait=True)
        flow_result.values["agent_seconds"] = result.audio_seconds
        spoke.set()
        session.listen(timeout=10)

    _, running = harness.serve(flow_result.run(body), script=["something"])
    phone = harness.phone(running)
    assert spoke.wait(10)
    phone.say(caller_line).wait_finished(10)
    values = flow_result.wait()
    with lock:
        caller = [(c, at) for side, c, at in seen if side == "caller"]
        agent = [(c, at) for side, c, at in seen if side == "agent"]
    agent_bytes = sum(len(c) for c, _ in agent)
    assert abs(agent_bytes / 8000 - values["agent_seconds"]) < 0.05  # every agent byte, once
    agent_times = [at for _, at in agent]
    assert all(at is not None for at in agent_times) and agent_times == sorted(agent_times)  # type: ignore[type-var]
    caller_bytes = b"".join(c for c, _ in caller)
    assert caller_line in caller_bytes  # the caller's words arrive whole and in order
    caller_times = [at for _, at in caller if at is not None]
    assert caller_times == sorted(caller_times) and len(caller_times) == len(caller)  # Twilio frames carry timestamps


def test_call_audio_is_written_only_while_something_takes_the_audio(harness: CallHarness, flow_result: FlowResult) -> None:
    """No sink, mixer or listener: the loop skips the per-frame write. A mixer or a live listener set mid-call
    gets the audio from then on (agent speech byte for byte), and once both are gone the writes stop again."""
    writes: dict[str, int] = {"write_caller": 0, "write_agent": 0}
    mixer_agent, listener_agent = bytearray(), bytearray()

    class Mixer:
        def write_caller(self, chunk: bytes, at: float | None = None) -> None:
            pass

        def write_agent(self, chunk: bytes, at: float | None = None) -> None:
            mixer_agent.extend(chunk)

    class Listener(Mixer):
        def write_agent(self, chunk: bytes, at: float | None = None) -> None:
            listener_agent.extend(chunk)

        def truncate_agent(self, at: float) -> None:
            pass

        def close(self) -> None:
            pass

    def body(session: Any) -> None:
        audio = call_audio_of(session)
        assert audio is not None
        for side in writes:  # count the loop's writes (instance attributes shadow the methods)
            def counted(chunk: bytes, at: float | None = None, _write: Any = getattr(audio, side), _side: str = side) -> None:
                writes[_side] += 1
                _write(chunk, at)
            setattr(audio, side, counted)
        values = flow_result.values
        values["idle_speech"] = session.speak("Nobody is taking this audio.", wait=True).audio_seconds
        values["idle"] = dict(writes)
        session.set_mixer(Mixer())
        values["mixed_speech"] = session.speak("A mixer takes this.", wait=True).audio_seconds
        session.set_mixer(None)
        values["after_mixer"] = dict(writes)
        session.speak("Nobody again.", wait=True)
        values["idle_again"] = dict(writes)
        remove = audio.add_listener(Listener())
        values["listened_speech"] = session.speak("A listener takes this.", wait=True).audio_seconds
        remove()
        values["after_listener"] = dict(writes)
        session.speak("Nobody at the end.", wait=True)
        values["end"] = dict(writes)
        session.hangup(timeout=5)

    _, running = harness.serve(flow_result.run(body))
    phone = harness.phone(running)
    values = flow_result.wait()
    assert phone.wait_closed(10)
    assert values["idle_speech"] > 0.5 and values["idle"] == {"write_caller": 0, "write_agent": 0}
    # The mixer got all its speech, once; the caller's frames (the phone sends them all along) were written too.
    assert abs(len(mixer_agent) / 8000 - values["mixed_speech"]) < 0.05
    assert values["after_mixer"]["write_caller"] > 10 and values["after_mixer"]["write_agent"] > 0  # agent: per batch
    # A write already under way when the mixer went away may still land: at most one frame each way.
    assert all(values["idle_again"][k] - values["after_mixer"][k] <= 1 for k in writes)
    assert abs(len(listener_agent) / 8000 - values["listened_speech"]) < 0.05
    assert all(values["end"][k] - values["after_listener"][k] <= 1 for k in writes)


class _FakeS3(http.server.ThreadingHTTPServer):
    """Stores PUT /bucket/key bodies with their headers; answers 200 like S3 does."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, dict[str, str]]] = {}
        self.stored = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PUT(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers["Content-Length"])
                outer.objects[self.path] = (self.rfile.read(length), {k.lower(): v for k, v in self.headers.items()})
                self.send_response(200)
                self.send_header("ETag", '"fake"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                outer.stored.set()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


def _load_example() -> Any:
    spec = importlib.util.spec_from_file_location("recording_upload_s3", ROOT / "examples" / "recording_upload_s3.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_callback_sink_uploads_the_finished_file_with_the_s3_example(harness: CallHarness, flow_result: FlowResult, tmp_path: Path) -> None:
    s3 = _FakeS3()
    threading.Thread(target=s3.serve_forever, name="fake-s3", daemon=True).start()
    chunks: list[RecordingChunk] = []
    files: list[RecordingFile] = []
    upload = _load_example().s3_uploader(f"http://127.0.0.1:{s3.server_address[1]}", "recordings", prefix="calls/")

    def on_file(recording: RecordingFile) -> None:
        files.append(recording)
        upload(recording)

    try:
        make_recorder = callback_recorder_factory(on_file=on_file, on_chunk=chunks.append, directory=tmp_path, keep_file=False)
        closed = threading.Event()  # set once close() has returned: the upload is done and the file deleted

        def factory(session: Any) -> Any:
            recorder = make_recorder(session)
            assert isinstance(recorder, CallbackRecorder)
            close = recorder.close

            def close_and_tell() -> Path | None:
                try:
                    return close()
                finally:
                    closed.set()

            recorder.close = close_and_tell  # type: ignore[method-assign]
            return recorder

        def body(session: Any) -> None:
            session.speak("This call is being uploaded.", wait=True)
            session.hangup(timeout=5)

        _, running = harness.serve(flow_result.run(body), recorder_factory=factory)
        phone = harness.phone(running)
        flow_result.wait()
        assert phone.wait_closed(10)
        assert s3.stored.wait(10)
        assert closed.wait(10)  # S3 answers before the recorder deletes the file: wait for close() itself
    finally:
        s3.shutdown()
        s3.server_close()
    (key, (body, headers)), = s3.objects.items()
    assert key.startswith("/recordings/calls/") and key.endswith(".wav")
    assert headers["x-amz-meta-call-id"] == phone.codec.call_id and headers["content-type"] == "audio/wav"
    assert body[:4] == b"RIFF" and body[8:12] == b"WAVE"
    assert files and not files[0].path.exists()  # keep_file=False: deleted once uploaded
    # The chunks streamed during the call are exactly the file's audio, in order, ending with a final one.
    assert chunks[-1].final and [c.index for c in chunks] == list(range(len(chunks)))
    pcm = b"".join(c.pcm for c in chunks)
    assert len(body) - 44 == len(pcm) and body.endswith(pcm)
    assert files[0].seconds == len(pcm) / 4 / 8000 > 0.5
