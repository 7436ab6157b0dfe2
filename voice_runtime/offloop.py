"""Run one blocking call off the event loop, in a thread that ends with it.

``asyncio.to_thread`` uses the loop's default executor: a small shared pool (6 threads on 2 cores) whose
threads outlive the work. That is wrong for the runtime's few blocking calls — a recording's final write, a
provider's close: queued behind each other in a small pool they delay unrelated calls, and their idle
threads show up as leaks in a server that must end every call's threads. One short-lived daemon thread per
call costs ~50 µs and leaves nothing behind.

With a ``timeout`` the call also has a deadline: the awaiting side gets :class:`OffLoopTimeout` and the
thread is abandoned (a daemon: it finishes on its own, its result discarded, and it never holds up loop
shutdown or interpreter exit — e.g. an Azure SDK ``stop`` that blocks for seconds). :func:`call_off_thread`
is the same for a caller that is a plain thread, not a coroutine.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["OffLoopTimeout", "call_off_thread", "run_off_loop"]


class OffLoopTimeout(TimeoutError):
    """A call run off the loop did not return within its deadline (it keeps running on its daemon thread)."""


async def run_off_loop(fn: Callable[..., T], *args: Any, name: str = "voice-offloop", timeout: float | None = None) -> T:
    """Await ``fn(*args)`` run in its own daemon thread; its exception is raised here.

    ``timeout``: raise :class:`OffLoopTimeout` after that many seconds (the thread is abandoned). Cancelling
    the awaiting task abandons it too. The result is delivered only while the loop is open.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def target() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:  # delivered to the awaiting coroutine
            outcome: tuple[bool, Any] = (False, exc)
        else:
            outcome = (True, result)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:  # the loop closed meanwhile: nobody is waiting any more
            pass

    threading.Thread(target=target, name=name, daemon=True).start()
    if timeout is None:
        return await future
    # asyncio.wait, not wait_for: it never cancels ``future`` and cannot mistake a TimeoutError raised by
    # ``fn`` itself for the deadline.
    await asyncio.wait((future,), timeout=timeout)
    if not future.done():
        raise OffLoopTimeout(f"{name} did not return within {timeout:g}s")
    return future.result()


def call_off_thread(fn: Callable[..., T], *args: Any, timeout: float, name: str = "voice-offthread") -> T:
    """The thread-side twin of :func:`run_off_loop`: block the *calling* thread at most ``timeout`` seconds.

    ``fn(*args)`` runs on its own daemon thread; its exception is re-raised here; past the deadline
    :class:`OffLoopTimeout` is raised and the thread abandoned.
    """
    done = threading.Event()
    box: list[tuple[bool, Any]] = []

    def target() -> None:
        try:
            box.append((True, fn(*args)))
        except BaseException as exc:  # re-raised in the caller
            box.append((False, exc))
        done.set()

    threading.Thread(target=target, name=name, daemon=True).start()
    if not done.wait(timeout):
        raise OffLoopTimeout(f"{name} did not return within {timeout:g}s")
    ok, value = box[0]
    if ok:
        return value  # type: ignore[no-any-return]
    raise value
