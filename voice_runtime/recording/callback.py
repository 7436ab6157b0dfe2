"""A sink that hands the recording to your code: the finished file, its chunks as they are committed, or both.

Typical use is uploading to object storage (see ``examples/recording_upload_s3.py``)::

    server = VoiceServer(recorder_factory=callback_recorder_factory(on_file=upload, directory="/var/spool/calls"))

Where each callback runs, and why: ``on_chunk`` on the process's recording writer thread, never on the
event loop (a slow consumer cannot stall calls, but it does delay every recording's writes, and a queue that
fills is dropped and counted: keep it quick or hand the chunk to your own thread); ``on_file`` in
``close()``, which the server calls off the event loop when the call is over, so a blocking upload is fine.
A callback that raises is logged and counted (``callback_errors``); the call never notices.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from voice_runtime.recording.base import Recorder, RecorderFactory, RecordingChunk, RecordingFile
from voice_runtime.recording.wav import WavRecorder, recording_path

if TYPE_CHECKING:
    from voice_runtime.session import VoiceSession

__all__ = ["CallbackRecorder", "callback_recorder_factory"]

log = logging.getLogger(__name__)

FileCallback = Callable[[RecordingFile], None]
ChunkCallback = Callable[[RecordingChunk], None]


class CallbackRecorder:
    """Records like the default sink and delivers the result to ``on_file`` and/or ``on_chunk``.

    ``path=None`` with only ``on_chunk`` keeps no local file at all. ``keep_file=False`` deletes the
    local file once ``on_file`` returned without raising (a failed upload keeps it for a retry).
    """

    def __init__(
        self,
        path: str | Path | None,
        *,
        call_id: str | None = None,
        on_file: FileCallback | None = None,
        on_chunk: ChunkCallback | None = None,
        keep_file: bool = True,
        stereo: bool = True,
    ) -> None:
        if on_file is None and on_chunk is None:
            raise ValueError("CallbackRecorder needs on_file, on_chunk or both")
        if on_file is not None and path is None:
            raise ValueError("on_file needs a path to write the file to")
        self.call_id = call_id
        self.on_file = on_file
        self.on_chunk = on_chunk
        self.keep_file = keep_file
        self.callback_errors = 0
        self._chunks = 0
        self._frames = 0
        self._lock = threading.Lock()
        self._delivered = False
        self._wav = WavRecorder(path, stereo=stereo, on_frames=self._frames_committed if on_chunk else None, name=f"recorder-{call_id}")
        self.path = self._wav.path
        self.started_at = self._wav.started_at

    def write_caller(self, ulaw: bytes, at: float | None = None) -> None:
        self._wav.write_caller(ulaw, at)

    def write_agent(self, ulaw: bytes, at: float | None = None) -> None:
        self._wav.write_agent(ulaw, at)

    def truncate_agent(self, at: float) -> None:
        self._wav.truncate_agent(at)

    def _frames_committed(self, pcm: bytes) -> None:  # writer thread
        self._deliver_chunk(pcm, final=False)

    def _deliver_chunk(self, pcm: bytes, *, final: bool) -> None:
        assert self.on_chunk is not None
        chunk = RecordingChunk(self.call_id, self._chunks, self._frames, pcm, self._wav.sample_rate, self._wav.channels, final)
        self._chunks += 1
        self._frames += len(pcm) // (2 * self._wav.channels)
        try:
            self.on_chunk(chunk)
        except Exception:
            self.callback_errors += 1
            log.exception("recording on_chunk callback failed (call %s)", self.call_id)

    def close(self) -> Path | None:
        path = self._wav.close()
        with self._lock:
            if self._delivered:
                return path
            self._delivered = True
        if self.on_chunk is not None:
            self._deliver_chunk(b"", final=True)
        if self.on_file is not None and path is not None:
            info = RecordingFile(
                path, self.call_id, self._wav.started_at, self._wav.started_wall, self._wav.seconds, self._wav.sample_rate, self._wav.channels
            )
            try:
                self.on_file(info)
            except Exception:
                self.callback_errors += 1
                log.exception("recording on_file callback failed (call %s); keeping %s", self.call_id, path)
                return path
            if not self.keep_file:
                try:
                    os.unlink(path)
                except OSError:
                    log.exception("could not delete %s after delivering it", path)
                return None
        return path


def callback_recorder_factory(
    *,
    on_file: FileCallback | None = None,
    on_chunk: ChunkCallback | None = None,
    directory: str | Path | None = None,
    keep_file: bool = True,
) -> RecorderFactory:
    """A ``recorder_factory`` giving every call a :class:`CallbackRecorder` (files in ``directory``)."""
    if on_file is not None and directory is None:
        raise ValueError("on_file needs a directory for the local file")

    made: list[bool] = []

    def factory(session: VoiceSession) -> Recorder | None:
        path = None
        if directory is not None:
            if not made:  # once per server, not per call (this runs on the event loop)
                Path(directory).mkdir(parents=True, exist_ok=True)
                made.append(True)
            path = recording_path(directory, session.call_sid)
        return CallbackRecorder(path, call_id=session.call_sid, on_file=on_file, on_chunk=on_chunk, keep_file=keep_file)

    return factory
