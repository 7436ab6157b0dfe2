"""``SttTee``: one caller audio stream, two STT providers (e.g. a primary and a shadow for comparison).

Why bounded per-provider queues: the two providers consume at their own pace. If the secondary stalls, its
queue drops its *oldest* frames (counted in ``secondary_dropped``) and the primary is never slowed. The
primary gets the same policy; a stalled primary is a real problem, so its drops are logged loudly.

Inline, where the providers allow it: once started, the tee has a ``feed_audio`` (the session's inline path,
``VoiceSession.feed_stt_inline``) when the primary has one. Each chunk then goes straight to every provider that
takes audio inline, and into the bounded queue of one that does not; the fan-out task only carries the end of
input. A secondary whose ``feed_audio`` raises is dropped, as one that fails to start.

The callbacks (``on_committed``, ``on_recognizing``, ``on_error``, ``on_speech_started``, ``on_speech_ended``) read and write the
*primary*; the secondary keeps its own callbacks (set them on ``tee.secondary``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from voice_runtime.bounded import put_drop_oldest

log = logging.getLogger(__name__)


def _proxy(name: str) -> property:
    def get(self: SttTee) -> Any:
        return getattr(self.primary, name, None)

    def set_(self: SttTee, value: Any) -> None:
        setattr(self.primary, name, value)

    return property(get, set_, doc=f"The primary provider's ``{name}``.")


class SttTee:
    on_committed = _proxy("on_committed")
    on_recognizing = _proxy("on_recognizing")
    on_error = _proxy("on_error")
    on_speech_started = _proxy("on_speech_started")
    on_speech_ended = _proxy("on_speech_ended")

    def __init__(self, primary: Any, secondary: Any, *, max_frames: int = 500) -> None:
        self.primary = primary
        self.secondary = secondary
        self.max_frames = max_frames
        self.primary_dropped = 0
        self.secondary_dropped = 0
        self.secondary_failed = False
        self._task: asyncio.Task[None] | None = None
        self._primary_feed: Callable[[bytes], None] | None = None  # the providers' inline paths, fixed at start
        self._secondary_feed: Callable[[bytes], None] | None = None
        self._secondary_queue: asyncio.Queue[bytes | None] | None = None
        #: The inline path (``VoiceSession.feed_stt_inline``), offered by start when the primary has one.
        self.feed_audio: Callable[[bytes], None] | None = None

    def set_speaking(self, speaking: bool) -> None:
        self.primary.set_speaking(speaking)
        try:
            self.secondary.set_speaking(speaking)
        except Exception:
            log.exception("secondary STT set_speaking failed")

    async def start(self, inbound_queue: asyncio.Queue[bytes | None]) -> None:
        pq: asyncio.Queue[bytes | None] = asyncio.Queue(self.max_frames)
        sq: asyncio.Queue[bytes | None] = asyncio.Queue(self.max_frames)
        await self.primary.start(pq)
        try:
            await self.secondary.start(sq)
        except Exception:
            self.secondary_failed = True
            log.exception("secondary STT failed to start; continuing with the primary only")
        # Nothing awaits from here to the return, so the fan-out task has not run: both provider queues are
        # still empty when the session switches to feed_audio (it does so as soon as start returns), and
        # audio waiting in inbound_queue then goes to feed_audio first, in order.
        self._task = asyncio.create_task(self._fan_out(inbound_queue, pq, sq), name="stt_tee_fanout")
        primary_feed = getattr(self.primary, "feed_audio", None)
        if callable(primary_feed):
            secondary_feed = getattr(self.secondary, "feed_audio", None)
            self._primary_feed = primary_feed
            self._secondary_feed = secondary_feed if callable(secondary_feed) else None
            self._secondary_queue = sq
            self.feed_audio = self._feed_inline

    def _feed_inline(self, frame: bytes) -> None:
        """One chunk for both providers, inline: each that takes audio inline gets it now, the other its queue."""
        assert self._primary_feed is not None and self._secondary_queue is not None
        self._primary_feed(frame)  # raises to the session, which hands the rest of the call back to the queue
        if self.secondary_failed:
            return
        secondary_feed = self._secondary_feed
        if secondary_feed is None:
            self._put_secondary(self._secondary_queue, frame)
            return
        try:
            secondary_feed(frame)
        except Exception:
            self.secondary_failed = True
            log.exception("secondary STT feed_audio failed; continuing with the primary only")

    def _put_secondary(self, sq: asyncio.Queue[bytes | None], frame: bytes | None) -> None:
        """Into the secondary's bounded queue: a stalled secondary drops its oldest, never slows the primary."""
        if put_drop_oldest(sq, frame):
            self.secondary_dropped += 1
            if self.secondary_dropped in (1, 501) or self.secondary_dropped % 5000 == 0:
                log.warning("Secondary STT queue overflow: %d frames dropped", self.secondary_dropped)

    async def _fan_out(
        self, source: asyncio.Queue[bytes | None], pq: asyncio.Queue[bytes | None], sq: asyncio.Queue[bytes | None]
    ) -> None:
        while True:
            frame = await source.get()
            if put_drop_oldest(pq, frame):
                self.primary_dropped += 1
                if self.primary_dropped in (1, 501) or self.primary_dropped % 5000 == 0:
                    log.warning("primary STT is not keeping up: %d frames dropped", self.primary_dropped)
            if not self.secondary_failed:
                self._put_secondary(sq, frame)
            if frame is None:
                return

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for provider in (self.primary, self.secondary):
            try:
                await provider.stop()
            except Exception:
                log.exception("STT stop failed in tee")
