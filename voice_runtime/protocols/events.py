"""Typed events a carrier dialect decodes from the wire.

They are deliberately carrier-neutral: the transport loop and the session never look at Twilio- or
Plivo-specific JSON, only at these. Names are past tense because each describes something that already
happened on the far side of the socket.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple


@dataclass(frozen=True, slots=True)
class MediaFormat:
    """The audio format the carrier negotiated for this stream (both directions)."""

    encoding: str = "audio/x-mulaw"
    sample_rate: int = 8000
    channels: int = 1

    @property
    def is_mulaw_8k(self) -> bool:
        return self.encoding == "audio/x-mulaw" and self.sample_rate == 8000


@dataclass(frozen=True, slots=True)
class Connected:
    """The carrier opened the stream (Twilio's ``connected``); no call data yet."""

    protocol: str = ""
    version: str = ""


@dataclass(frozen=True, slots=True)
class StreamStarted:
    """The stream is live: ids, negotiated format and the custom parameters we asked the carrier to pass."""

    stream_id: str
    call_id: str
    account_id: str = ""
    media_format: MediaFormat = field(default_factory=MediaFormat)
    custom_parameters: dict[str, str] = field(default_factory=dict)
    tracks: tuple[str, ...] = ("inbound",)


class MediaReceived(NamedTuple):
    """One chunk of caller audio, still in the stream's negotiated encoding.

    A named tuple, not a frozen dataclass like the other events: a dialect makes one for every 20 ms frame of
    every call, and a tuple is built in C (``tuple.__new__(MediaReceived, fields)`` on the hot paths), where a
    frozen dataclass's ``__init__`` runs four ``object.__setattr__`` calls in Python. Its fields read the same,
    and it is as immutable.
    """

    payload: bytes
    sequence: int | None = None
    chunk: int | None = None
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class MarkEchoed:
    """The carrier reports a mark/checkpoint we sent (Twilio ``mark``; Plivo ``playedStream``)."""

    name: str


@dataclass(frozen=True, slots=True)
class AudioCleared:
    """The carrier confirms a clear (Plivo ``clearedAudio``; Twilio has no such message)."""


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    """The caller pressed a key."""

    digit: str


@dataclass(frozen=True, slots=True)
class StreamStopped:
    """The carrier says the stream ended. The socket closing is the authoritative end either way."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class UnknownEvent:
    """A well-formed message of a type we do not handle; counted and ignored."""

    event: str
    raw: Any = None


CarrierEvent = (
    Connected
    | StreamStarted
    | MediaReceived
    | MarkEchoed
    | AudioCleared
    | DtmfReceived
    | StreamStopped
    | UnknownEvent
)
