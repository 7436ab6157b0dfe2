"""Recording sinks and audio taps (see ``docs/observability.md``, "Recording").

* :class:`Recorder` / :data:`RecorderFactory`: the protocol the call loop writes to.
* :class:`WavRecorder` / :func:`wav_recorder_factory`: the default, a stereo WAV per call with a unique,
  time-stamped name, written off the event loop.
* :class:`CallbackRecorder` / :func:`callback_recorder_factory`: hands the finished file or its chunks to
  your function (upload to S3-compatible storage: ``examples/recording_upload_s3.py``).
* :class:`CallAudio`: the per-call fan-out behind it all (sink, ``session.set_mixer`` taps, live listeners),
  which applies ``session.pause_recording()`` / ``resume_recording()`` to every one of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from voice_runtime.recording.base import Recorder, RecorderFactory, RecordingChunk, RecordingFile
from voice_runtime.recording.call_audio import CallAudio, call_audio_of
from voice_runtime.recording.callback import CallbackRecorder, callback_recorder_factory
from voice_runtime.recording.pause import PauseWindows
from voice_runtime.recording.wav import WavRecorder, recording_path

if TYPE_CHECKING:
    from voice_runtime.session import VoiceSession

__all__ = [
    "Recorder",
    "RecorderFactory",
    "RecordingFile",
    "RecordingChunk",
    "WavRecorder",
    "wav_recorder_factory",
    "recording_path",
    "CallbackRecorder",
    "callback_recorder_factory",
    "CallAudio",
    "call_audio_of",
    "PauseWindows",
]


def wav_recorder_factory(directory: str | Path, *, stereo: bool = True) -> RecorderFactory:
    """The default ``recorder_factory``: ``directory/<UTC time>-<call id>-<tag>.wav`` per call."""
    directory = Path(directory)
    made: list[bool] = []

    def factory(session: VoiceSession) -> Recorder | None:
        if not made:  # once per server, not per call
            directory.mkdir(parents=True, exist_ok=True)
            made.append(True)
        return WavRecorder(recording_path(directory, session.call_sid), stereo=stereo, name=f"recorder-{session.call_sid}")

    return factory
