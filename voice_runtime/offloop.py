"""Run one blocking call off the event loop, in a thread that ends with it.

``asyncio.to_thread`` uses the loop's default executor: a small shared pool (6 threads on 2 cores) whose
threads outlive the work. That is wrong for the runtime's few blocking calls — a recording's final write, a
provider's close: queued behind each other in a small pool they delay unrelated calls, and their idle
threads show up as leaks in a server that must end every call's threads. One short-lived daemon thread per
call costs ~50 µs and leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["run_off_loop"]


async def run_off_loop(fn: Callable[..., T], *args: Any, name: str = "voice-offloop") -> T:
    """Await ``fn(*args)`` run in its own daemon thread; its exception is raised here."""
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
    return await future
