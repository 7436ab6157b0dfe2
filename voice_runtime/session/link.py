"""The public contract between a call's transport (the event-loop side) and its session.

Two small protocols, one per direction, so that neither side reaches into the other's private state:

* :class:`SessionLink` is what a transport offers the session. The session calls these methods *on the event
  loop* (through ``loop.call_soon_threadsafe``, or directly when it already runs there: a clear requested on the
  loop reaches the transport at once), once per intent, never per frame.
* :class:`TransportSide` lists every session method a transport may call. ``CallConnection`` (the one
  WebSocket loop) uses exactly these; so can a hand-written transport. The prior art's transport-side names
  (``signal_ws_connected``, ``put_inbound``, ``signal_mark_received``, ``signal_disconnected``) keep their
  names and meaning.

Threading: every ``TransportSide`` method except ``put_inbound`` and ``signal_disconnected`` must be called
on the session's event loop (the one given to :meth:`TransportSide.attach_stream`); those two are safe from
any thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from voice_runtime.lifecycle import EndReason
from voice_runtime.marks import Mark

__all__ = ["SendsAudioNow", "SessionLink", "TransportSide"]


class SessionLink(Protocol):
    """What the transport offers the session. Every method is called *on the event loop*.

    One optional method, looked up once per stream with ``getattr`` (a hand-written transport may leave it out):
    :meth:`SendsAudioNow.send_audio_now`, the per-chunk fast path for audio produced on the loop.
    """

    supports_dtmf_out: bool

    def wake(self) -> None:
        """Outbound items are waiting."""

    def clear(self) -> None:
        """Send a clear to the carrier now (local buffers were already emptied)."""

    def disconnect(self) -> None:
        """Hang up / close the stream."""

    def send_dtmf(self, digits: str) -> None:
        """Send DTMF to the far end."""


class SendsAudioNow(Protocol):
    """The optional fast path of a :class:`SessionLink` (``CallConnection`` has it)."""

    def send_audio_now(self, audio: bytes) -> bool:
        """Audio sent on the loop with nothing queued before it: send it to the wire now and return True, or
        return False (pump busy, clear or DTMF pending, a bed to mix, pacing) and the session queues it as usual.
        Called per chunk (an echo or speech-to-speech flow: every 20 ms), so it must be cheap."""


class TransportSide(Protocol):
    """The session methods a transport calls (implemented by :class:`~voice_runtime.session.VoiceSession`)."""

    def attach_stream(
        self,
        loop: asyncio.AbstractEventLoop,
        link: SessionLink,
        *,
        stream_id: str,
        call_id: str,
        carrier: str,
        custom_parameters: dict[str, str] | None = None,
        before_live: Callable[[], None] | None = None,
    ) -> None:
        """The carrier's ``start`` arrived: the call goes LIVE. ``before_live`` runs once the ids are set and
        before any waiter is told the call is live (the STT binding builds the provider there)."""

    def feed_caller_audio(self, ulaw: bytes) -> None:
        """One chunk of caller audio (μ-law 8 kHz) for the STT and raw-audio readers; drop-oldest when full."""

    def take_outbound(self, max_bytes: int) -> tuple[bytes, Mark | None]:
        """The pump's next item: up to ``max_bytes`` of audio, or a mark, or ``(b"", None)`` when idle."""

    def mark_sent(self, mark: Mark) -> None:
        """The mark is on the wire (after all audio before it)."""

    def clear_sent(self) -> None:
        """A ``clear`` is on the wire: marks still at the carrier resolve CLEARED."""

    def set_playout_until(self, when: float) -> None:
        """The transport's estimate (monotonic) of when the carrier's playback buffer runs dry."""

    def signal_mark_received(self, name: str) -> None:
        """The carrier echoed the mark with this wire name."""

    def receive_dtmf(self, digit: str) -> None:
        """The caller pressed a key."""

    def signal_disconnected(self, reason: EndReason | str = EndReason.DISCONNECTED) -> None:
        """The call is over (idempotent; any thread)."""
