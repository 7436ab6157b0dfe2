"""Media streams served by picows: the fastest server mode (the ``[fast]`` extra).

picows parses WebSocket frames in Cython and calls a listener per frame, with no per-message future, task or
queue. This mode keeps that property all the way into the call loop: :class:`PicowsWire` *pushes* each text
message straight into :meth:`CallConnection._dispatch` (see ``CallConnection._receive_pushed``), so a caller
frame costs one parse and one session call. Everything else is the shared machinery:

* the same routes (``{prefix}/stream``, ``{prefix}/stream/{token}``) and the same admission
  (:func:`~voice_runtime.server.admission.admit_stream_sync`: token, draining, carrier signatures, unsigned
  policy) *before* the 101 — a refusal is a 403, an unknown path a 404;
* the same :class:`CallConnection`, config, recorder, hooks and hangup policy (``VoiceServer.serve_wire``);
* the same runners and SIGTERM drain (:mod:`~voice_runtime.server.loop_runner`), workers included.
* the same :class:`~voice_runtime.server.limits.ServerLimits`: ``header_timeout`` and ``max_connections`` are
  enforced by picows' own protocol subclassed in :mod:`~voice_runtime.server.picows_guard` (picows has no
  connection cap and its handshake timeout counts nothing), and over ``max_calls`` an upgrade gets ``503`` +
  ``Retry-After`` as in the other modes.

picows' handshake hook is synchronous, so the admission is driven synchronously; the carrier validators never
await I/O, and one that did would have its upgrades refused (503), never admitted unchecked. Carrier HTTP
(webhooks) stays on ``VoiceServer.app`` with uvicorn, as in the native mode.

::

    handle = start_picows(server, port=8081)         # background thread (tests, benchmarks)
    serve_picows(server, port=8081, workers=2)       # foreground, drains on SIGTERM
"""

from __future__ import annotations

import asyncio
import http
import logging
import socket
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import unquote

from picows import WSListener, WSMsgType, WSTransport, WSUpgradeRequest, WSUpgradeResponse, WSUpgradeResponseWithListener

from voice_runtime.server.admission import Admitted, HandshakeView, admit_stream_sync, stream_path_token
from voice_runtime.server.picows_guard import guarded_protocol_factory
from voice_runtime.server.probes import probe_response
from voice_runtime.server.push import Deliver, Ended, deliver_one, discard
from voice_runtime.server.limits import LISTEN_BACKLOG, quiet_accept_errors
from voice_runtime.server.stream_policy import warn_if_unsigned
from voice_runtime.server.app import VoiceServer
from voice_runtime.server.connection import WireClosed
from voice_runtime.server.loop_runner import serve_forever, start_in_thread
from voice_runtime.server.runners import RunningServer

log = logging.getLogger(__name__)

_TEXT = WSMsgType.TEXT

__all__ = ["PicowsWire", "start_picows", "serve_picows"]


class PicowsWire(WSListener):  # type: ignore[misc]
    """One carrier socket: a picows listener that is also a :class:`WireSocket` with ``push_to``.

    Messages that arrive before the connection takes over (the carrier's opening) are buffered for
    ``receive``; after ``push_to`` every message goes straight to the consumer on picows' callback.
    """

    # Slots (and no __dict__): the frame callback reads ``_deliver`` for every message, and ``writable`` and
    # ``send_bytes_nowait`` are read for every inline send; on a busy server the listener is cold by then.
    __slots__ = (
        "_deliver", "writable", "send_bytes_nowait", "_server", "_admitted", "_transport", "_pending", "_max_pending",
        "_waiter", "_ended", "_closed", "_fragments", "_fragment_type", "_writable", "_task",
    )

    def __init__(self, server: VoiceServer, admitted: Admitted, max_pending: int = 64) -> None:
        super().__init__()
        self._server = server
        self._admitted = admitted
        self._transport: WSTransport | None = None
        self._pending: deque[str | bytes] = deque()
        self._max_pending = max_pending
        self._waiter: asyncio.Future[None] | None = None
        self._deliver: Deliver | None = None  # the call's, after push_to (server/push.py)
        self._ended: Ended | None = None  # called once, when delivery stops
        self._closed = False
        self._fragments: list[bytes] | None = None
        self._fragment_type: WSMsgType | None = None
        self._writable: asyncio.Future[None] | None = None  # set while picows has paused writing
        #: The socket takes data now (connected, not closed, writing not paused): an inline send will not queue
        #: up. A plain attribute, kept by the callbacks below, because the inline path reads it for every frame.
        self.writable = False
        #: ``send_nowait`` for UTF-8 bytes, as picows' own C method with the message type bound: for callers that
        #: have just read :attr:`writable` (the connection's inline path, once per frame). Set once connected.
        self.send_bytes_nowait: Callable[[bytes], None] | None = None
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ picows callbacks (event loop)
    def on_ws_connected(self, transport: WSTransport) -> None:
        self._transport = transport
        self.writable = True
        self.send_bytes_nowait = partial(transport.send, _TEXT)
        self._task = asyncio.ensure_future(self._server.serve_wire(self, self._admitted))

    def on_ws_frame(self, transport: WSTransport, frame: Any) -> None:
        kind = frame.msg_type
        if kind is _TEXT and frame.fin:  # every carrier message: first, with nothing it does not need
            payload = frame.get_payload_as_bytes()
            try:
                message: str | bytes = payload.decode("utf-8")
            except UnicodeDecodeError:
                message = payload  # counted by the connection as a binary frame
            deliver = self._deliver
            if deliver is not None:
                try:  # free unless it raises (3.11): the push contract's per-message part, inlined
                    result = deliver(message)
                except Exception as exc:  # a bug in the call ends that call, never picows' callback
                    result = exc
                if result is not None:
                    self._stop_delivery(result)
                return
        elif kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
            if not frame.fin:  # a fragmented message (carriers never send them; accepted all the same)
                self._fragments, self._fragment_type = [frame.get_payload_as_bytes()], kind
                return
            message = self._decode(kind, frame.get_payload_as_bytes())
        elif kind is WSMsgType.CONTINUATION:
            if self._fragments is None:
                return
            self._fragments.append(frame.get_payload_as_bytes())
            if not frame.fin:
                return
            message = self._decode(self._fragment_type or WSMsgType.BINARY, b"".join(self._fragments))
            self._fragments = self._fragment_type = None
        elif kind is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
            return
        else:  # PING is answered by picows itself (auto-pong); PONG needs nothing
            return
        deliver = self._deliver
        if deliver is not None:
            result = deliver_one(deliver, message)
            if result is not None:
                self._stop_delivery(result)
            return
        if len(self._pending) >= self._max_pending:  # an opening that never ends: keep memory bounded
            self._pending.popleft()
        self._pending.append(message)
        self._wake()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._closed = True
        self.writable = False
        self._wake()
        writable = self._writable
        if writable is not None and not writable.done():
            writable.set_result(None)
        self._stop_delivery(None)

    def pause_writing(self) -> None:
        self.writable = False
        if self._writable is None or self._writable.done():
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self.writable = not self._closed
        writable = self._writable
        if writable is not None and not writable.done():
            writable.set_result(None)

    @staticmethod
    def _decode(kind: WSMsgType, payload: bytes) -> str | bytes:
        if kind is WSMsgType.TEXT:
            try:
                return payload.decode("utf-8")
            except UnicodeDecodeError:
                return payload  # counted by the connection as a binary frame
        return payload

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ------------------------------------------------------------------ WireSocket
    async def receive(self) -> str | bytes:
        while not self._pending:
            if self._closed:
                raise WireClosed("carrier socket closed")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._pending.popleft()

    def push_to(self, deliver: Deliver, ended: Ended) -> None:
        """From now on hand every message to ``deliver`` on the frame callback (the contract: server/push.py).

        What came before (the opening's tail) goes first, in order."""
        self._deliver, self._ended = deliver, ended
        while self._pending:
            result = deliver_one(deliver, self._pending.popleft())
            if result is not None:
                self._pending.clear()  # after the end: dropped unread
                self._stop_delivery(result)
                return
        if self._closed:
            self._stop_delivery(None)

    def _stop_delivery(self, result: object) -> None:
        """The call is over (``result``: its end reason, an exception, or None when the socket closed).

        Before ``push_to`` (a close during the opening) there is nobody to tell yet: ``push_to`` delivers what
        came first, then ends with None."""
        ended, self._ended = self._ended, None
        if self._deliver is not None:
            self._deliver = discard
        if ended is not None:
            ended(result)

    async def send(self, text: str) -> None:
        transport = self._transport
        if transport is None or self._closed:
            raise WireClosed("carrier socket closed")
        transport.send(WSMsgType.TEXT, text.encode())
        writable = self._writable
        if writable is not None and not writable.done():
            await writable  # the kernel buffer is full: back-pressure on the pump
            if self._closed:
                raise WireClosed("carrier socket closed")

    def send_nowait(self, text: str | bytes) -> None:
        """Send one text message without awaiting (UTF-8 bytes accepted as is); the connection's inline path
        checks :attr:`writable` first."""
        transport = self._transport
        if transport is None or self._closed:
            raise WireClosed("carrier socket closed")
        transport.send(WSMsgType.TEXT, text if type(text) is bytes else text.encode())  # type: ignore[union-attr]

    async def close(self, code: int = 1000, reason: str = "") -> None:
        transport = self._transport
        if transport is None or self._closed:
            return
        transport.send_close(code, reason.encode())  # type: ignore[arg-type]  # any int close code is legal
        transport.disconnect()


def _listener_factory(server: VoiceServer) -> Callable[[WSUpgradeRequest], Any]:
    prefix = server.path_prefix

    def factory(request: WSUpgradeRequest) -> Any:
        target = request.path.decode("latin-1")
        probe = probe_response(server, target.partition("?")[0])  # /metrics, /healthz, /readyz: plain HTTP
        if probe is not None:
            status_code, body, content_type = probe
            content = {"Content-Type": content_type}
            response = (
                WSUpgradeResponse.create_ok_response(body, content)
                if status_code == 200
                else WSUpgradeResponse.create_error_response(status_code, body, content)
            )
            return WSUpgradeResponseWithListener(response, None)
        token = stream_path_token(target.partition("?")[0], prefix)
        if token is False:
            return WSUpgradeResponseWithListener(WSUpgradeResponse.create_error_response(http.HTTPStatus.NOT_FOUND, b"Not Found\n"), None)
        headers = [(str(k), str(v)) for k, v in request.headers.items()]
        verdict = admit_stream_sync(server, HandshakeView(target, headers), unquote(token) if isinstance(token, str) else None)
        if not isinstance(verdict, Admitted):
            if verdict.status == 421:  # misdirected (another worker's stream): say whose
                body = (verdict.reason + "\n").encode()
                return WSUpgradeResponseWithListener(WSUpgradeResponse.create_error_response(http.HTTPStatus.MISDIRECTED_REQUEST, body), None)
            if verdict.status == 503:  # at max_calls (or a validator that needs I/O): retry later, as every mode says
                retry = {"Retry-After": str(server.limits.retry_after)}
                response = WSUpgradeResponse.create_error_response(
                    http.HTTPStatus.SERVICE_UNAVAILABLE, b"server at capacity, retry later\n", retry
                )
                return WSUpgradeResponseWithListener(response, None)
            return WSUpgradeResponseWithListener(WSUpgradeResponse.create_error_response(http.HTTPStatus.FORBIDDEN, b"Forbidden\n"), None)
        return PicowsWire(server, verdict)

    return factory


async def _listen(server: VoiceServer, host: str, port: int, sock: socket.socket | None, reuse_port: bool) -> asyncio.Server:
    warn_if_unsigned(server)  # the unsigned-stream policy, once at startup (server/stream_policy.py)
    quiet_accept_errors()
    kwargs: dict[str, Any] = {"sock": sock} if sock is not None else {"host": host, "port": port}
    if reuse_port and sock is None:
        kwargs["reuse_port"] = True
    # Not ws_create_server: it builds picows' protocol inside itself, and the connection cap and the counted
    # header deadline (server/picows_guard.py) need a say in connection_made, before any byte is read.
    factory = guarded_protocol_factory(
        server.limits, _listener_factory(server), max_frame_size=server.connection_config.hard_max_inbound_message
    )
    return await asyncio.get_running_loop().create_server(factory, backlog=LISTEN_BACKLOG, **kwargs)


def start_picows(
    server: VoiceServer,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    reuse_port: bool = False,
    sock: socket.socket | None = None,
    loop: str = "auto",
    startup_timeout: float = 10.0,
) -> RunningServer:
    """Serve ``server``'s media streams with picows from a background thread (tests, benchmarks)."""
    return start_in_thread(_listen, server, host, port, reuse_port=reuse_port, sock=sock, loop=loop, startup_timeout=startup_timeout)


def serve_picows(
    server: VoiceServer,
    host: str = "0.0.0.0",
    port: int = 8080,
    *,
    workers: int = 1,
    loop: str = "auto",
    drain_deadline: float = 30.0,
) -> None:
    """Serve media streams with picows in the foreground until SIGINT/SIGTERM, then drain (workers as in native)."""
    serve_forever(_listen, server, host, port, workers=workers, loop=loop, drain_deadline=drain_deadline)
