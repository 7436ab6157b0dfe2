"""Closing a simulated phone while its loop winds down leaves nothing un-awaited (real sockets).

``close()`` schedules the phone's shutdown on its loop from another thread. If the server has just ended the
call, the loop thread may already be in its final clean-up; a shutdown task created then was dropped by
``loop.close()`` before its first step, and its coroutine surfaced as "coroutine 'SimulatedPhone._shutdown'
was never awaited" in whichever later test the garbage collector ran in.

The window is a few microseconds wide, so the test holds it open: it replaces the phone loop's
``shutdown_asyncgens`` (the last thing the loop runs before ``close()``) with one that holds the loop until
``close()`` has queued its callback, so the loop runs that callback in its very last pass. That is an injected
scheduling point, not a fake: the sockets, the server and the phone are real.
"""

from __future__ import annotations

import gc
import threading
import warnings
from typing import Any

from ..conftest import CallHarness


def test_close_while_the_phone_winds_down_leaves_no_unawaited_coroutine(harness: CallHarness) -> None:
    hang_up = threading.Event()

    def flow(session: Any) -> None:
        hang_up.wait(10)  # the server ends the call once the phone's loop is instrumented

    _, running = harness.serve(flow)
    phone = harness.phone(running)
    loop = phone._loop
    assert loop is not None
    winding, handed_over = threading.Event(), threading.Event()
    closer = threading.Thread(target=phone.close, name="closer")
    real_call_soon_threadsafe, real_shutdown_asyncgens = loop.call_soon_threadsafe, loop.shutdown_asyncgens

    def call_soon_threadsafe(callback: Any, *args: Any, **kwargs: Any) -> Any:
        handle = real_call_soon_threadsafe(callback, *args, **kwargs)
        if threading.current_thread() is closer:
            handed_over.set()  # close()'s callback is in the loop's queue
        return handle

    async def shutdown_asyncgens() -> None:
        winding.set()
        # Hold the loop thread (a blocking wait, on purpose) until close() has queued its callback: the loop
        # then runs that callback in the same pass as the stop of this last run_until_complete, the worst case.
        handed_over.wait(5)
        await real_shutdown_asyncgens()

    loop.call_soon_threadsafe = call_soon_threadsafe  # type: ignore[method-assign]
    loop.shutdown_asyncgens = shutdown_asyncgens  # type: ignore[method-assign]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hang_up.set()
        assert winding.wait(5), "the phone's loop did not wind down after the server ended the call"
        closer.start()
        closer.join(10)
        assert not closer.is_alive(), "close() did not return"
        assert handed_over.is_set(), "close() did not schedule its callback while the loop was winding down"
        assert phone._thread is not None and not phone._thread.is_alive()
        assert phone.closed
        harness.phones.clear()
        del phone, loop
        gc.collect()
    assert [str(w.message) for w in caught if "never awaited" in str(w.message)] == []
