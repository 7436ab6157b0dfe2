"""The thread starter: threads handed to it all start, a failing start does not stop the rest, and
it leaves no thread behind once idle (why it exists: ``voice_runtime/thread_starter.py``)."""

from __future__ import annotations

import threading

from voice_runtime.thread_starter import ThreadStarter


def test_threads_handed_to_the_starter_all_run_and_the_starter_exits_when_idle() -> None:
    starter = ThreadStarter(idle=0.05)
    done = [threading.Event() for _ in range(20)]
    for event in done:
        starter.start(threading.Thread(target=event.set, daemon=True))
    assert all(event.wait(10) for event in done)
    runner = starter._starter
    if runner is not None:
        runner.join(10)  # idle for 0.05 s: it exits, and the next start() makes a new one
    assert starter._starter is None
    assert starter.started == 20  # counted after each start() returns: read once the starter has exited
    again = threading.Event()
    starter.start(threading.Thread(target=again.set, daemon=True))
    assert again.wait(10)


def test_a_thread_that_cannot_start_is_logged_and_the_next_still_starts(caplog: object) -> None:
    starter = ThreadStarter(idle=0.05)
    ran = threading.Event()
    twice = threading.Thread(target=lambda: None, daemon=True)
    twice.start()
    twice.join(10)
    starter.start(twice)  # a thread can be started only once: RuntimeError in the starter, logged
    starter.start(threading.Thread(target=ran.set, daemon=True))
    assert ran.wait(10)
    runner = starter._starter
    if runner is not None:
        runner.join(10)  # the count moves after start() returns, which may be after the thread ran
    assert starter.started == 1
