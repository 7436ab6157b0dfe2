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
import dataclasses
import http
import logging
import socket
import time
import weakref
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from voice_runtime.server.admission import Admitted, HandshakeView, admit_stream, stream_path_token
from voice_runtime.server.limits import LISTEN_BACKLOG, quiet_accept_errors
from voice_runtime.server.stream_policy import warn_if_unsigned
from voice_runtime.server.app import VoiceServer
from voice_runtime.server.connection import WireClosed
from voice_runtime.server.loop_runner import serve_forever, start_in_thread
from voice_runtime.server.probes import probe_response
from voice_runtime.server.runners import RunningServer

log = logging.getLogger(__name__)

__all__ = ["WebsocketsWire", "UpgradeRequest", "start_native", "serve_native", "native_handler"]


#: Seconds between a 1008 close frame and aborting the (no longer read) transport.
POLICY_CLOSE_GRACE = 1.0


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
        if code == 1008:
            # A policy close (a flood, too many protocol errors): stop reading before the close frame goes out.
            # Otherwise the close handshake parses everything the peer had sent before our close reached it,
            # on the loop every call shares. Unread, the echo never comes: the transport is aborted
            # ``POLICY_CLOSE_GRACE`` later (the peer has read our close frame by then), whoever gives up first.
            transport = self.conn.transport
            if transport is not None and not transport.is_closing():
                transport.pause_reading()
                asyncio.get_running_loop().call_later(POLICY_CLOSE_GRACE, transport.abort)
        try:
            await self.conn.close(code, reason)
        except (ConnectionClosed, OSError):
            pass


def UpgradeRequest(conn: ServerConnection, request: Request) -> HandshakeView:  # noqa: N802 - kept name
    """The validators' view of a ``websockets`` handshake (see :class:`~voice_runtime.server.admission.HandshakeView`)."""
    return HandshakeView(
        request.path,
        list(request.headers.raw_items()),
        client=(conn.remote_address or ("", 0))[:2],
        server=(conn.local_address or ("127.0.0.1", 0))[:2],
    )


def native_handler(server: VoiceServer) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """``(process_request, handler)`` for ``websockets.asyncio.server.serve`` implementing the stream routes."""
    prefix = server.path_prefix
    # The admission verdict decided during the handshake, consumed by the handler. Entries are removed by the
    # handler or by ``process_response`` on a refused handshake; weak keys cover a peer that vanishes between.
    routes: weakref.WeakKeyDictionary[ServerConnection, Admitted] = weakref.WeakKeyDictionary()

    async def process_request(conn: ServerConnection, request: Request) -> Response | None:
        probe = probe_response(server, request.path.partition("?")[0])  # /metrics, /healthz, /readyz: plain HTTP
        if probe is not None:
            return _http_response(conn, *probe)
        cap = server.limits.max_connections
        if cap is not None and server.limits.stats["native_open_connections"] > cap:  # handshakes included
            server.limits.refused(
                "connections_refused", "max_connections (%d) reached: new connections get 503 + Retry-After", cap
            )
            return _over_capacity(conn, server)
        token = stream_path_token(request.path.partition("?")[0], prefix)
        if token is False:
            return conn.respond(http.HTTPStatus.NOT_FOUND, "Not Found\n")
        verdict = await admit_stream(server, UpgradeRequest(conn, request), unquote(token) if isinstance(token, str) else None)
        if not isinstance(verdict, Admitted):
            if verdict.status == 421:  # misdirected (another worker's stream): say whose
                return conn.respond(http.HTTPStatus.MISDIRECTED_REQUEST, verdict.reason + "\n")
            if verdict.status == 503:
                return _over_capacity(conn, server)
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


def _http_response(conn: ServerConnection, status: int, body: bytes, content_type: str) -> Response:
    response = conn.respond(http.HTTPStatus(status), "")
    del response.headers["Content-Type"], response.headers["Content-Length"]  # Headers is multi-valued
    response.headers["Content-Type"] = content_type
    response.headers["Content-Length"] = str(len(body))
    return dataclasses.replace(response, body=body)
def _over_capacity(conn: ServerConnection, server: VoiceServer) -> Response:
    """503 + Retry-After for a handshake we will not serve (max_connections or max_calls)."""
    response = conn.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "server at capacity, retry later\n")
    response.headers["Retry-After"] = str(server.limits.retry_after)
    return response


def _counted_connection(server: VoiceServer) -> type[ServerConnection]:
    """A ``ServerConnection`` that counts every TCP connection from ``connection_made`` (handshakes included:
    ``websockets`` itself tracks connections only once their handshake is done), for ``max_connections``."""
    limits = server.limits
    stats = limits.stats

    class CountedConnection(ServerConnection):
        _vr_opened = 0.0

        def connection_made(self, transport: Any) -> None:
            stats["native_open_connections"] += 1
            self._vr_opened = time.monotonic()
            super().connection_made(transport)

        async def handshake(self, *args: Any, **kwargs: Any) -> None:
            """Counts a handshake cut by ``open_timeout`` before its request head arrived (a slowloris socket) in
            ``stats["header_timeouts"]``, as the FastAPI and picows modes do; websockets itself only aborts it."""
            try:
                await super().handshake(*args, **kwargs)
            except asyncio.CancelledError:
                if self.request is None and time.monotonic() - self._vr_opened >= 0.9 * limits.header_timeout:
                    limits.refused(
                        "header_timeouts", "closed a connection that sent no complete upgrade request within %.1fs (slowloris?)",
                        limits.header_timeout,
                    )
                raise

        def connection_lost(self, exc: Exception | None) -> None:
            stats["native_open_connections"] -= 1
            super().connection_lost(exc)

    return CountedConnection


async def _listen(server: VoiceServer, host: str, port: int, sock: socket.socket | None, reuse_port: bool) -> Server:
    process_request, handler = native_handler(server)
    warn_if_unsigned(server)
    quiet_accept_errors()
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
        open_timeout=server.limits.header_timeout,  # the whole handshake, request head included (slowloris)
        create_connection=_counted_connection(server),
        backlog=LISTEN_BACKLOG,  # not asyncio's 100: a burst of calls overflows it (server/limits.py)
        **kwargs,
    )


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
    """Serve ``server``'s media streams from a background thread (tests, benchmarks, embedding)."""
    return start_in_thread(_listen, server, host, port, reuse_port=reuse_port, sock=sock, loop=loop, startup_timeout=startup_timeout)


def serve_native(
    server: VoiceServer,
    host: str = "0.0.0.0",
    port: int = 8080,
    *,
    workers: int = 1,
    loop: str = "auto",
    drain_deadline: float = 30.0,
) -> None:
    """Serve media streams in the foreground until SIGINT/SIGTERM, then drain.

    ``workers > 1`` forks that many processes that all listen on ``port`` with ``SO_REUSEPORT`` (Linux spreads
    new connections across them). Each call lives entirely in one process — its socket, session and flow
    thread — so processes share nothing (docs/server-modes.md). POSIX only.
    """
    serve_forever(_listen, server, host, port, workers=workers, loop=loop, drain_deadline=drain_deadline)
