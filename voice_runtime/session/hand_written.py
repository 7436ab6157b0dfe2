"""The 0.1.x transport-side session API, for people who wrote their own transport (part of the session).

0.1.x documented that a transport reads agent audio with ``await session.get_outbound()`` and marks to send
with ``await session.get_pending_mark()``, and that ``session.outbound`` is an ``asyncio.Queue``. Our session
keeps one ordered outbound queue of audio and marks (so a mark can never overtake its audio) drained by the
built-in connection. This module adapts that queue to the old two-queue shape without changing it:

* :class:`HandWrittenTransportLink` is the session's transport link while a hand-written transport drives it
  (attached by the first ``get_outbound``/``get_pending_mark``). On each read it moves items from the head of
  the ordered queue into two small local queues — audio for ``get_outbound``, wire mark names for
  ``get_pending_mark`` — exactly when asked, so the session's back-pressure still bounds memory.
* :class:`OutboundQueueView` is what ``session.outbound`` returns: an ``asyncio.Queue`` whose ``put`` queues
  agent audio into the session (like ``put_outbound_sync``) and whose ``get`` is ``get_outbound``.

A mark handed out by ``get_pending_mark`` counts as sent; the transport echoes it back through
``session.signal_mark_received(name)`` as before. ``request_disconnect()`` and ``request_clear_buffer()``
reach such a transport through :attr:`HandWrittenTransportLink.disconnect_requested` and
:attr:`~HandWrittenTransportLink.clear_requests` (0.1.x transports watched private fields for that).
Everything here runs on the session's event loop.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from voice_runtime import call_events as ev
from voice_runtime.errors import CallHangupError, CallTimeoutError
from voice_runtime.marks import Mark

if TYPE_CHECKING:  # pragma: no cover
    from voice_runtime.session import VoiceSession

__all__ = ["HandWrittenTransportLink", "OutboundQueueView", "get_outbound", "get_pending_mark"]

#: Audio moved per read: 0.4 s (the built-in pump's default batch).
READ_BYTES = 3200


class HandWrittenTransportLink:
    """A :class:`~voice_runtime.session.SessionLink` for transports that pull with ``get_outbound``."""

    supports_dtmf_out = False

    def __init__(self, session: VoiceSession) -> None:
        self._session = session
        self._wakeup = asyncio.Event()
        self._audio: asyncio.Queue[bytes] = asyncio.Queue()
        self._marks: asyncio.Queue[str] = asyncio.Queue()
        self.disconnect_requested = asyncio.Event()
        self.clear_requests: asyncio.Queue[str | None] = asyncio.Queue(maxsize=16)

    # ------------------------------------------------------------------ SessionLink (called on the loop)
    def wake(self) -> None:
        self._wakeup.set()

    def clear(self) -> None:
        while not self._audio.empty():  # audio already handed over locally is cleared too
            self._audio.get_nowait()
        if not self.clear_requests.full():
            self.clear_requests.put_nowait(self._session.stream_sid)
        self._session.clear_sent()

    def disconnect(self) -> None:
        self.disconnect_requested.set()
        self._wakeup.set()

    def send_dtmf(self, digits: str) -> None:  # pragma: no cover - supports_dtmf_out is False
        raise NotImplementedError

    # ------------------------------------------------------------------ reads
    def _move(self, want_mark: bool) -> bool:
        """Move head items into the local queues until one of the wanted kind arrived; True if one did."""
        session = self._session
        while True:
            audio, mark = session.take_outbound(READ_BYTES)
            if mark is not None:
                session.mark_sent(mark)
                self._marks.put_nowait(mark.wire_name)
                if want_mark:
                    return True
            elif audio:
                self._audio.put_nowait(audio)
                if not want_mark:
                    return True
            else:
                return False

    async def _read(self, queue: asyncio.Queue[bytes] | asyncio.Queue[str], want_mark: bool) -> bytes | str:
        while queue.empty():
            if self._session.is_disconnected:
                raise CallHangupError("call ended", call_id=self._session.call_sid)
            self._wakeup.clear()
            if self._move(want_mark):
                break
            await self._wakeup.wait()
        return queue.get_nowait()

    async def get_outbound(self) -> bytes:
        return await self._read(self._audio, want_mark=False)  # type: ignore[return-value]

    async def get_pending_mark(self) -> str:
        return await self._read(self._marks, want_mark=True)  # type: ignore[return-value]

    def audio_buffered(self) -> int:
        return sum(len(chunk) for chunk in self._audio._queue)  # type: ignore[attr-defined,misc]


def link_for(session: VoiceSession) -> HandWrittenTransportLink:
    """The session's hand-written-transport link, attached on first use (on the running loop)."""
    link = session._link
    if isinstance(link, HandWrittenTransportLink):
        return link
    if link is not None:
        raise RuntimeError("this session is driven by the built-in transport; get_outbound() is for hand-written ones")
    loop = asyncio.get_running_loop()
    new = HandWrittenTransportLink(session)
    with session._cond:  # the session's own adapter: it installs itself as the session's transport link
        session._loop = session._loop or loop
        session._link = new
        session._out.pump_idle = True

    def on_event(event: object) -> None:  # a hangup must wake a transport blocked in get_outbound()
        if getattr(event, "kind", None) == ev.CALL_ENDED and not loop.is_closed():
            loop.call_soon_threadsafe(new.wake)

    session.add_event_listener(on_event)
    new.wake()
    return new


async def get_outbound(session: VoiceSession) -> bytes:
    """Next chunk of agent audio (μ-law 8 kHz). Raises :class:`CallHangupError` once the call has ended."""
    return await link_for(session).get_outbound()


async def get_pending_mark(session: VoiceSession) -> str:
    """Next wire mark name to send; echo it back with ``session.signal_mark_received(name)``."""
    return await link_for(session).get_pending_mark()


def _queued(session: VoiceSession) -> list[object]:
    """A snapshot of the session's ordered outbound items (audio chunks and marks)."""
    with session._cond:
        return list(session._out.items)


def _head_is_audio(session: VoiceSession) -> bool:
    items = _queued(session)
    return bool(items) and not isinstance(items[0], Mark)


class OutboundQueueView(asyncio.Queue):  # type: ignore[type-arg]
    """``session.outbound``: an ``asyncio.Queue`` over the session's ordered outbound audio (see module doc)."""

    def __init__(self, session: VoiceSession) -> None:
        super().__init__()
        self._session = session

    def put_nowait(self, item: bytes) -> None:
        try:
            self._session.put_outbound_sync(item, timeout=0)
        except CallTimeoutError:
            raise asyncio.QueueFull from None
        except CallHangupError:
            pass  # 0.1.x: audio queued after the call ended was silently never sent

    async def put(self, item: bytes) -> None:
        self.put_nowait(item)

    def get_nowait(self) -> bytes:
        session = self._session
        link = session._link
        if isinstance(link, HandWrittenTransportLink):
            if link._audio.empty():
                link._move(want_mark=False)
            if not link._audio.empty():
                return link._audio.get_nowait()
            raise asyncio.QueueEmpty
        if session._link is None and _head_is_audio(session):
            audio, _ = session.take_outbound(READ_BYTES)  # head is audio: no mark can be taken here
            return audio
        raise asyncio.QueueEmpty

    async def get(self) -> bytes:
        return await get_outbound(self._session)

    def qsize(self) -> int:
        link = self._session._link
        local = link._audio.qsize() if isinstance(link, HandWrittenTransportLink) else 0
        return local + sum(1 for item in _queued(self._session) if not isinstance(item, Mark))

    def empty(self) -> bool:
        return self.qsize() == 0

    def full(self) -> bool:
        return False
