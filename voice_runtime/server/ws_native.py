"""Media streams served by ``websockets`` directly, without ASGI: the fast server mode.

The default mode (``VoiceServer.start`` / ``serve``) runs the media WebSockets through uvicorn, Starlette and
FastAPI. Each inbound frame then crosses uvicorn's protocol, an ASGI message dict, Starlette's ``receive``
and FastAPI's middleware stack, and each outbound message the same layers back; profiling the load
benchmark shows those layers cost more CPU than our own per-frame work. This mode serves the *same routes
with the same rules* straight from ``websockets.asyncio.server``:

* ``{prefix}/stream`` (inbound calls: a fresh session and flow thread) and ``{prefix}/stream/{token}``
  (a call we dialled: single-use token peeked before the handshake, claimed after the validators);
* the same admission (:func:`~voice_runtime.server.admission.admit_stream`: token, draining, carrier
  signatures) runs *before* the handshake; a refusal is an HTTP 403 (as uvicorn answers a
  close-before-accept), an unknown path a 404;
* the call itself runs in :meth:`VoiceServer.serve_wire`: the same :class:`CallConnection` loop, config,
  recorder, hooks and hangup policy as the FastAPI mode;
* SIGTERM/SIGINT in the foreground runner drains exactly as the FastAPI mode does
  (:mod:`voice_runtime.server.drain`).

It serves the media WebSockets only. Carrier HTTP (answer webhooks, status callbacks) stays on
``VoiceServer.app`` — run that with uvicorn on another port, and point the stream URL (``public_url``) at
this one. See ``docs/server-modes.md``.

::

    handle = start_native(server, port=8081)          # background thread (tests, benchmarks)
    serve_native(server, port=8081)                   # foreground, until SIGINT/SIGTERM
    serve_native(server, port=8081, workers=2)        # one process per core, one port (SO_REUSEPORT)
"""

from __future__ import annotations

import asyncio
import http
import logging
import os
import signal
import socket
import threading
import weakref
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from voice_runtime.server.admission import Admitted, admit_stream, stream_path_token
from voice_runtime.server.app import VoiceServer
from voice_runtime.server.connection import WireClosed
from voice_runtime.server.drain import DrainReport, drain
from voice_runtime.server.runners import RunningServer

log = logging.getLogger(__name__)

__all__ = ["WebsocketsWire", "UpgradeRequest", "start_native", "serve_native", "native_handler"]


class WebsocketsWire:
    """A ``websockets`` server connection as a :class:`~voice_runtime.server.connection.WireSocket`."""

    __slots__ = ("conn",)

    def __init__(self, conn: ServerConnection) -> None:
        self.conn = conn

    async def receive(self) -> str | bytes:
        try:
            return await self.conn.recv()
        except ConnectionClosed as exc:
            raise WireClosed(str(exc)) from None

    async def send(self, text: str) -> None:
        try:
            await self.conn.send(text)
        except ConnectionClosed as exc:
            raise WireClosed(str(exc)) from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        try:
            await self.conn.close(code, reason)
        except (ConnectionClosed, OSError):
            pass


class UpgradeRequest:
    """What an upgrade validator reads (``headers``, ``url``, ``scope``), built from a ``websockets`` request.

    The validators were written against Starlette's ``WebSocket`` before ``accept()``; this offers the same
    attributes (an ASGI-shaped ``scope``, case-insensitive ``headers``, ``url``) so they run unchanged, and a
    ``close()`` that records the refusal instead of sending anything (the handshake is answered with 403).
    """

    def __init__(self, conn: ServerConnection, request: Request) -> None:
        from starlette.datastructures import URL, Headers

        path, _, query = request.path.partition("?")
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in request.headers.raw_items()]
        host, port = (conn.local_address or ("127.0.0.1", 0))[:2]
        self.scope: dict[str, Any] = {
            "type": "websocket",
            "scheme": "ws",
            "server": (host, port),
            "client": (conn.remote_address or ("", 0))[:2],
            "path": unquote(path),
            "raw_path": path.encode("latin-1"),
            "query_string": query.encode("latin-1"),
            "root_path": "",
            "headers": raw,
        }
        self.headers = Headers(raw=raw)
        self.url = URL(scope=self.scope)
        self.close_code: int | None = None

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.close_code = code


def native_handler(server: VoiceServer) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """``(process_request, handler)`` for ``websockets.asyncio.server.serve`` implementing the stream routes."""
    prefix = server.path_prefix
    # The admission verdict decided during the handshake, consumed by the handler. Entries are removed by the
    # handler or by ``process_response`` on a refused handshake; weak keys cover a peer that vanishes between.
    routes: weakref.WeakKeyDictionary[ServerConnection, Admitted] = weakref.WeakKeyDictionary()

    async def process_request(conn: ServerConnection, request: Request) -> Response | None:
        token = stream_path_token(request.path.partition("?")[0], prefix)
        if token is False:
            return conn.respond(http.HTTPStatus.NOT_FOUND, "Not Found\n")
        verdict = await admit_stream(server, UpgradeRequest(conn, request), unquote(token) if token else None)
        if not isinstance(verdict, Admitted):
            return conn.respond(http.HTTPStatus.FORBIDDEN, "Forbidden\n")
        routes[conn] = verdict
        return None

    def process_response(conn: ServerConnection, request: Request, response: Response) -> None:
        if response.status_code != 101:  # refused after routing (bad handshake): nothing will run
            routes.pop(conn, None)

    async def handler(conn: ServerConnection) -> None:
        admitted = routes.pop(conn, None)
        if admitted is None:  # cannot happen: process_request refuses every unrouted path
            await conn.close(1011, "unrouted")
            return
        await server.serve_wire(WebsocketsWire(conn), admitted)

    handler.process_response = process_response  # type: ignore[attr-defined]
    return process_request, handler


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


async def _serve(server: VoiceServer, *, host: str, port: int, sock: socket.socket | None, reuse_port: bool) -> Server:
    process_request, handler = native_handler(server)
    kwargs: dict[str, Any] = {"sock": sock} if sock is not None else {"host": host, "port": port}
    if reuse_port and sock is None:
        kwargs["reuse_port"] = True
    return await serve(
        handler,
        process_request=process_request,
        process_response=handler.process_response,  # type: ignore[attr-defined]
        max_size=server.connection_config.hard_max_inbound_message,
        ping_interval=None,  # carriers do not answer pings on media streams; the socket's end is the signal
        compression=None,  # carriers do not negotiate it, and it would cost CPU per frame
        close_timeout=server.connection_config.close_timeout,
        **kwargs,
    )


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


def start_native(
    server: VoiceServer,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    reuse_port: bool = False,
    sock: socket.socket | None = None,
    loop: str = "auto",
    startup_timeout: float = 10.0,
) -> RunningServer:
    """Serve ``server``'s media streams from a background thread (tests, benchmarks, embedding).

    Returns once listening; ``handle.stop()`` closes every stream (1001, going away) and joins the thread.
    """
    handle = _NativeHandle()
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        handle.loop = asyncio.get_running_loop()
        handle.stop_event = asyncio.Event()
        try:
            ws_server = await _serve(server, host=host, port=port, sock=sock, reuse_port=reuse_port)
        except BaseException as exc:
            state["error"] = exc
            ready.set()
            return
        state["address"] = next(iter(ws_server.sockets)).getsockname()[:2]
        ready.set()
        await handle.stop_event.wait()
        ws_server.close()
        await ws_server.wait_closed()

    def run() -> None:
        with asyncio.Runner(loop_factory=_loop_factory(loop)) as runner:
            runner.run(main())

    thread = threading.Thread(target=run, name="voice-server-native", daemon=True)
    thread.start()
    if not ready.wait(startup_timeout):
        raise RuntimeError("native voice server failed to start in time")
    if "error" in state:
        raise RuntimeError(f"native voice server failed to start: {state['error']}") from state["error"]
    bound_host, bound_port = state["address"]
    return RunningServer(bound_host, bound_port, handle, thread, handle.loop)


def serve_native(
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
    if workers <= 1:
        _run_foreground(server, host, port, reuse_port=False, loop=loop, drain_deadline=drain_deadline)
        return
    children: list[int] = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # worker
            try:
                _run_foreground(server, host, port, reuse_port=True, loop=loop, drain_deadline=drain_deadline)
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
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                break


def _run_foreground(
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
        ws_server = await _serve(server, host=host, port=port, sock=None, reuse_port=reuse_port)
        log.info("serving media streams on ws://%s:%s%s/stream (pid %s)", host, port, server.path_prefix, os.getpid())
        await stop.wait()
        log.info("signal received: draining calls (deadline %.1fs)", drain_deadline)
        report["drain"] = await drain(server, drain_deadline)
        ws_server.close()
        await ws_server.wait_closed()

    with asyncio.Runner(loop_factory=_loop_factory(loop)) as runner:
        runner.run(main())
    return report.get("drain")
