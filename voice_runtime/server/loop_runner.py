"""Running a media-streams-only server on its own asyncio loop: the shared runner of the fast server modes.

The websockets-native mode (:mod:`~voice_runtime.server.ws_native`) and the picows mode
(:mod:`~voice_runtime.server.ws_picows`) differ only in how they listen and speak WebSocket. Everything
around that is the same and lives here: uvloop when installed, a background-thread runner for tests and
benchmarks, a foreground runner that drains on SIGTERM/SIGINT exactly as the FastAPI mode does, and
``workers`` forked processes sharing one port with ``SO_REUSEPORT``.

A mode supplies ``listen(server, host, port, sock, reuse_port) -> listener`` where the listener has
``sockets``, ``close()`` and ``await wait_closed()`` (an ``asyncio.Server`` or a ``websockets`` server).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from voice_runtime.metrics.prometheus import mark_worker_dead
from voice_runtime.server.app import VoiceServer
from voice_runtime.server.drain import DrainReport, drain
from voice_runtime.server.runners import RunningServer

log = logging.getLogger(__name__)

__all__ = ["Listen", "start_in_thread", "serve_forever"]

Listen = Callable[[VoiceServer, str, int, "socket.socket | None", bool], Awaitable[Any]]


def _loop_factory(loop: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """``auto``: uvloop when installed (as uvicorn does), else asyncio."""
    if loop in ("auto", "uvloop"):
        try:
            import uvloop

            return uvloop.new_event_loop
        except ImportError:
            if loop == "uvloop":
                raise
    return asyncio.new_event_loop


class _NativeHandle:
    """What :class:`RunningServer` drives: setting ``should_exit`` closes the server on its loop."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_event: asyncio.Event | None = None

    @property
    def should_exit(self) -> bool:
        return self.stop_event is not None and self.stop_event.is_set()

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        if value and self.loop is not None and self.stop_event is not None:
            try:
                self.loop.call_soon_threadsafe(self.stop_event.set)
            except RuntimeError:  # loop already closed
                pass


def start_in_thread(
    listen: Listen,
    server: VoiceServer,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    reuse_port: bool = False,
    sock: socket.socket | None = None,
    loop: str = "auto",
    startup_timeout: float = 10.0,
) -> RunningServer:
    """Serve ``server``'s media streams with ``listen`` from a background thread (tests, benchmarks).

    Returns once listening; ``handle.stop()`` closes the listener and joins the thread.
    """
    server.check_config_at_start()
    handle = _NativeHandle()
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        handle.loop = asyncio.get_running_loop()
        handle.stop_event = asyncio.Event()
        try:
            ws_server = await listen(server, host, port, sock, reuse_port)
        except BaseException as exc:
            state["error"] = exc
            ready.set()
            return
        state["address"] = next(iter(ws_server.sockets)).getsockname()[:2]
        ready.set()
        await handle.stop_event.wait()
        ws_server.close()  # stop listening; then end every live call the same way in every mode
        await server.close_all(1001)
        await ws_server.wait_closed()

    def run() -> None:
        with asyncio.Runner(loop_factory=_loop_factory(loop)) as runner:
            runner.run(main())

    thread = threading.Thread(target=run, name="voice-server-media", daemon=True)
    thread.start()
    if not ready.wait(startup_timeout):
        raise RuntimeError("media server failed to start in time")
    if "error" in state:
        raise RuntimeError(f"media server failed to start: {state['error']}") from state["error"]
    bound_host, bound_port = state["address"]
    return RunningServer(bound_host, bound_port, handle, thread, handle.loop, server)


def serve_forever(
    listen: Listen,
    server: VoiceServer,
    host: str = "0.0.0.0",
    port: int = 8080,
    *,
    workers: int = 1,
    loop: str = "auto",
    drain_deadline: float = 30.0,
) -> None:
    """Serve media streams in the foreground until SIGINT/SIGTERM.

    ``workers > 1`` forks that many processes that all listen on ``port`` with ``SO_REUSEPORT`` (Linux spreads
    new connections across them). Each call lives entirely in one process — its socket, session and flow
    thread — so processes share nothing; a dialled call's stream token, issued in the process that dialled,
    must reach that same process, so with workers use inbound streams, or one port per worker for dialled
    calls (docs/server-modes.md). POSIX only.
    """
    server.check_config_at_start()  # once, in the parent: a bad key stops the start, not every worker
    if workers <= 1:
        _run_foreground(listen, server, host, port, reuse_port=False, loop=loop, drain_deadline=drain_deadline)
        return
    children: list[int] = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # worker
            try:
                _run_foreground(listen, server, host, port, reuse_port=True, loop=loop, drain_deadline=drain_deadline)
            finally:
                os._exit(0)
        children.append(pid)

    def forward(signum: int, _frame: Any) -> None:
        for child in children:
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:
        while True:
            try:
                os.waitpid(child, 0)
                mark_worker_dead(child)  # its live gauges leave the multiprocess /metrics
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                break


def _run_foreground(
    listen: Listen,
    server: VoiceServer, host: str, port: int, *, reuse_port: bool, loop: str, drain_deadline: float = 30.0
) -> DrainReport | None:
    """Serve until SIGINT/SIGTERM, then drain like the FastAPI mode: refuse new calls, let live ones finish
    up to ``drain_deadline``, hang up the rest, and only then close the listening socket."""
    report: dict[str, DrainReport] = {}

    async def main() -> None:
        stop = asyncio.Event()
        running_loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                running_loop.add_signal_handler(signum, stop.set)
            except (NotImplementedError, RuntimeError):  # not the main thread / not POSIX
                pass
        ws_server = await listen(server, host, port, None, reuse_port)
        log.info("serving media streams on ws://%s:%s%s/stream (pid %s)", host, port, server.path_prefix, os.getpid())
        await stop.wait()
        log.info("signal received: draining calls (deadline %.1fs)", drain_deadline)
        report["drain"] = await drain(server, drain_deadline)
        ws_server.close()
        await ws_server.wait_closed()

    with asyncio.Runner(loop_factory=_loop_factory(loop)) as runner:
        runner.run(main())
    return report.get("drain")
