"""Raw caller audio for flows: ``session.audio_in()`` (blocking) and ``session.audio_in_async()`` (asyncio).

Speech-to-speech models (OpenAI Realtime, Gemini Live, Ultravox), echo tests, custom VADs and recorders want
the caller's μ-law as it arrives, not transcripts. A reader is a bounded buffer that the event loop fills per
frame and the flow drains in batches:

* **bounded, drop-oldest**: a reader that falls behind loses its oldest audio, counted in
  ``stats["audio_in_dropped"]``, exactly like the STT queue — the loop never blocks on a slow flow;
* **batched wake-ups**: the loop wakes a waiting reader once, and the reader then takes *everything* that
  accumulated; a busy flow thread costs one wake-up per read, not one per 20 ms frame;
* **no per-frame thread hop or future**: pushing a frame is a deque append, plus a notify only when a reader
  is actually waiting.

Readers end (``StopIteration`` / ``StopAsyncIteration``) once the call has ended and their buffer is drained.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING

from voice_runtime.errors import CallTimeoutError

if TYPE_CHECKING:  # pragma: no cover
    from voice_runtime.session.core import VoiceSession

__all__ = ["AudioIn", "AsyncAudioIn"]


class _Reader:
    """What both faces share: the bounded buffer the loop pushes into."""

    def __init__(self, session: VoiceSession, max_chunks: int) -> None:
        self._session = session
        self._chunks: deque[bytes] = deque()
        self._max = max_chunks
        self._unsubscribe: Callable[[], None] = session._add_audio_reader(self)  # type: ignore[arg-type]  # noqa: SLF001 - own package; a reader either way

    def push(self, chunk: bytes) -> None:
        """Loop side, per frame."""
        if len(self._chunks) >= self._max:
            self._chunks.popleft()
            self._session.stats["audio_in_dropped"] += 1
        self._chunks.append(chunk)
        self._notify()

    def ended(self) -> None:
        self._notify()

    def _notify(self) -> None:
        raise NotImplementedError

    def _take_all(self) -> bytes:
        chunks = self._chunks
        if len(chunks) == 1:
            return chunks.popleft()
        data = b"".join(chunks)
        chunks.clear()
        return data

    def close(self) -> None:
        self._unsubscribe()


class AudioIn(_Reader):
    """Blocking iterator of caller audio for a flow thread. ``with session.audio_in() as audio: for chunk in audio``."""

    def __init__(self, session: VoiceSession, *, timeout: float | None, max_chunks: int) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._waiting = False
        self._timeout = timeout
        super().__init__(session, max_chunks)

    def push(self, chunk: bytes) -> None:
        with self._cond:
            super().push(chunk)

    def ended(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _notify(self) -> None:
        if self._waiting:  # notify only a thread that is actually waiting: notify is not free
            self._cond.notify()

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        """All caller audio since the last read (at least one chunk). Raises ``CallTimeoutError`` when none
        arrived within the timeout, ``StopIteration`` once the call ended and everything was read."""
        with self._cond:
            if not self._chunks:
                if self._session.is_disconnected:
                    raise StopIteration
                self._waiting = True
                try:
                    self._cond.wait_for(lambda: self._chunks or self._session.is_disconnected, self._timeout)
                finally:
                    self._waiting = False
                if not self._chunks:
                    if self._session.is_disconnected:
                        raise StopIteration
                    raise CallTimeoutError(f"no caller audio within {self._timeout}s", call_id=self._session.call_sid)
            return self._take_all()

    def __enter__(self) -> AudioIn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncAudioIn(_Reader):
    """Async iterator of caller audio, on the session's event loop: ``async for chunk in session.audio_in_async()``."""

    def __init__(self, session: VoiceSession, *, max_chunks: int) -> None:
        self._waiter: asyncio.Future[None] | None = None
        super().__init__(session, max_chunks)

    def _notify(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def ended(self) -> None:
        loop = self._session.loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._notify)
        except RuntimeError:
            pass

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        while not self._chunks:
            if self._session.is_disconnected:
                raise StopAsyncIteration
            loop = self._session.loop
            self._waiter = (loop or asyncio.get_running_loop()).create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._take_all()

    async def __aenter__(self) -> AsyncAudioIn:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
