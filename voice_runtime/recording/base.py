"""The recorder protocol: what the call loop writes a call's audio to.

The connection owns no file and knows no sink. It calls ``write_caller`` for every caller frame (``at`` is
when the frame was spoken, or ``None`` for "now"), ``write_agent`` for every outbound batch at the moment it
will *play* (agent audio leaves seconds ahead of being heard), ``truncate_agent`` when a barge-in ``clear``
throws queued agent audio away, and ``close`` once, off the event loop, when the call is over. Writes run
on the event loop, so a recorder must never block in them: file and network I/O belong to its own thread
or to ``close``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from voice_runtime.session import VoiceSession

__all__ = ["Recorder", "RecorderFactory", "RecordingFile", "RecordingChunk"]


@runtime_checkable
class Recorder(Protocol):
    """One call's audio sink (see the module docstring for when each method is called)."""

    def write_caller(self, ulaw: bytes, at: float | None = None) -> None: ...

    def write_agent(self, ulaw: bytes, at: float | None = None) -> None: ...

    def truncate_agent(self, at: float) -> None: ...

    def close(self) -> Path | None: ...


RecorderFactory = Callable[["VoiceSession"], "Recorder | None"]
"""``fn(session) -> Recorder | None``, called when a call's stream starts; ``None`` opts the call out."""


@dataclass(frozen=True, slots=True)
class RecordingFile:
    """A finished recording handed to a callback sink."""

    path: Path
    call_id: str | None
    started_at: float  # time.monotonic() of sample 0 (the clock of the call's events)
    started_wall: float  # time.time() of sample 0
    seconds: float
    sample_rate: int
    channels: int  # 2: left caller, right agent


@dataclass(frozen=True, slots=True)
class RecordingChunk:
    """A piece of a recording as it is committed (16-bit little-endian PCM, interleaved when stereo)."""

    call_id: str | None
    index: int
    first_frame: int  # position of this chunk's first frame in the whole recording
    pcm: bytes
    sample_rate: int
    channels: int
    final: bool = False  # the last chunk of the call (may be empty)

