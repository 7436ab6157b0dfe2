"""Running a :class:`~voice_runtime.server.app.VoiceServer` with uvicorn (the FastAPI mode).

``start_fastapi`` serves from a background thread (tests, the demo, embedding) and returns a
:class:`RunningServer`; ``serve_fastapi`` serves in the foreground and drains on SIGTERM/SIGINT through
:class:`GracefulServer`. The websockets-native mode has its own runners in :mod:`voice_runtime.server.ws_native`
with the same drain. These live apart from ``app.py`` so that the server and its drain never import each
other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn

from voice_runtime.server.drain import DrainReport, drain
from voice_runtime.server.limits import quiet_accept_errors
from voice_runtime.server.stream_policy import warn_if_unsigned
from voice_runtime.server.uvicorn_guard import guarded_protocol
from voice_runtime.server.uvicorn_ws import fair_websocket_protocol

if TYPE_CHECKING:  # pragma: no cover
    from voice_runtime.server.app import VoiceServer

log = logging.getLogger(__name__)

__all__ = ["DRAIN_UNCLEAN_EXIT", "RunningServer", "GracefulServer", "start_fastapi", "serve_fastapi", "running"]

#: The process exit status of a drain that left something behind (a failed REST hangup, a flow still running).
DRAIN_UNCLEAN_EXIT = 3


@dataclass
class RunningServer:
    """A server running in a background thread (tests, demo). ``stop()`` ends it and joins the thread."""

    host: str
    port: int
    _server: Any
    _thread: threading.Thread
    loop: asyncio.AbstractEventLoop | None = None  # the loop the calls run on (run drains and probes there)
    voice_server: Any = None  # the VoiceServer it runs (stop() waits for its end-of-call hooks)

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        from voice_runtime.metrics.jsonl import flush_call_logs

        self._server.should_exit = True
        self._thread.join(timeout)
        if self.voice_server is not None:
            self.voice_server.end_hooks.drain(timeout)  # the ended calls' on_call_report / on_call_ended have run
        flush_call_logs(timeout)  # the ended calls' logs are complete on disk once stop() returns

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_fastapi(server: VoiceServer, host: str = "127.0.0.1", port: int = 0, *, log_level: str = "warning") -> RunningServer:
    """Run uvicorn in a background thread. Returns once it is listening."""
    server.check_config_at_start()
    warn_if_unsigned(server)
    config = uvicorn.Config(
        server.app,
        host=host,
        port=port,
        log_level=log_level,
        lifespan="off",
        ws_max_size=server.connection_config.hard_max_inbound_message,
        ws_ping_interval=None,
        **hardened_uvicorn_options(server),
    )
    uv = uvicorn.Server(config)
    uv.install_signal_handlers = lambda: None  # type: ignore[attr-defined]  # older uvicorn installs them
    thread = threading.Thread(target=uv.run, name="voice-server", daemon=True)
    thread.start()
    poll = threading.Event()
    deadline = 10.0
    while not uv.started and thread.is_alive() and deadline > 0:
        poll.wait(0.01)  # uvicorn exposes no "started" event to wait on
        deadline -= 0.01
    if not uv.started:
        raise RuntimeError("voice server failed to start")
    listener = uv.servers[0]
    bound_host, bound_port = listener.sockets[0].getsockname()[:2]
    return RunningServer(bound_host, bound_port, uv, thread, listener.get_loop(), server)


def serve_fastapi(server: VoiceServer, host: str = "0.0.0.0", port: int = 8080, *, drain_deadline: float = 30.0, **uvicorn_kwargs: Any) -> None:
    """Run in the foreground until SIGTERM/SIGINT, then drain.

    The signal starts a graceful drain (:mod:`voice_runtime.server.drain`): new calls are refused, live
    calls may finish for up to ``drain_deadline`` seconds, the rest are hung up over REST and closed
    with 1012; then the process exits 0 — or :data:`DRAIN_UNCLEAN_EXIT` (3) when the drain was not clean (a
    REST hangup failed, or a flow thread ignored its hangup), after logging which calls at ERROR. A second
    Ctrl-C exits at once.
    """
    server.check_config_at_start()
    warn_if_unsigned(server)
    uvicorn_kwargs.setdefault("ws_max_size", server.connection_config.hard_max_inbound_message)
    for name, value in hardened_uvicorn_options(server).items():
        uvicorn_kwargs.setdefault(name, value)
    config = uvicorn.Config(server.app, host=host, port=port, **uvicorn_kwargs)
    graceful = GracefulServer(config, server, drain_deadline)
    graceful.run()
    exit_if_unclean(graceful.drain_report)


def hardened_uvicorn_options(server: VoiceServer) -> dict[str, Any]:
    """uvicorn options every runner sets: the header-deadline/connection-cap protocol, the fair WebSocket
    protocol, no proxy rewriting, no deflate.

    ``proxy_headers=False`` keeps ``scope["client"]`` the TCP peer, so :mod:`voice_runtime.transports.forwarded`
    can decide which peers' forwarded headers to believe. The guarded protocol is
    :mod:`voice_runtime.server.uvicorn_guard`; the asyncio accept-storm log line is rate-limited too.
    """
    quiet_accept_errors()
    # No permessage-deflate: carriers do not negotiate it, and a hostile peer that does makes every frame
    # cost an inflate (profiled at ~20 % of a flood's per-frame cost) — the native mode sets compression=None.
    # The WebSocket protocol parses a flooder's reads in slices and stops reading it after a 1008 close
    # (server/uvicorn_ws.py): uvicorn's own parses a whole 256 KiB read (~1,000 frames) in one loop callback.
    return {
        "proxy_headers": False,
        "http": guarded_protocol(server.limits),
        "ws": fair_websocket_protocol(server.limits.stats),
        "ws_per_message_deflate": False,
    }


def exit_if_unclean(report: DrainReport | None) -> None:
    """Exit with :data:`DRAIN_UNCLEAN_EXIT` when a drain left something behind (it logged what, at ERROR)."""
    if report is not None and not report.clean:
        raise SystemExit(DRAIN_UNCLEAN_EXIT)


@contextlib.contextmanager
def running(server: VoiceServer, **kwargs: Any) -> Iterator[RunningServer]:
    handle = start_fastapi(server, **kwargs)
    try:
        yield handle
    finally:
        handle.stop()


class GracefulServer(uvicorn.Server):
    """A uvicorn server whose SIGTERM/SIGINT runs :func:`drain` before uvicorn's own shutdown.

    The first signal starts the drain and nothing else (uvicorn would otherwise close every call with 1012
    at once); when the drain returns, the server exits normally, with status 0 and without re-raising the
    signal. A second SIGINT (Ctrl-C twice) forces an immediate exit.
    """

    def __init__(self, config: uvicorn.Config, voice_server: VoiceServer, deadline: float, **drain_kwargs: Any) -> None:
        super().__init__(config)
        self.voice_server = voice_server
        self.drain_deadline = deadline
        self.drain_kwargs = drain_kwargs
        self.drain_report: DrainReport | None = None
        self._drain_requested = False
        self._drain_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.started:  # listening: one line per socket, as the native and picows modes log theirs
            for listener in self.servers:
                for sock in listener.sockets:
                    host, port = sock.getsockname()[:2]
                    log.info("serving media streams on ws://%s:%s%s/stream (pid %s)", host, port, self.voice_server.path_prefix, os.getpid())

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_requested or self._loop is None:
            if sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True
            return
        self._drain_requested = True
        log.info("received %s: draining calls (deadline %.1fs)", signal.Signals(sig).name, self.drain_deadline)
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        if self._drain_task is None:
            self._drain_task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        try:
            self.drain_report = await drain(self.voice_server, self.drain_deadline, **self.drain_kwargs)
        except Exception:
            log.exception("drain failed; shutting down anyway")
        finally:
            self.should_exit = True
