"""The WebSocket client a provider stream runs on: ``websockets``, or ``picows`` where the ``[fast]`` extra is in.

Why a seam: a streaming STT client sends a message per chunk of caller audio for every call, on the event loop
the carrier sockets share. With ``websockets`` each send is Python framing, a fresh random mask from
``os.urandom`` and a write; each received message goes through its Python parser and assembler. picows does the
framing, masking and parsing in C (it is the carrier side's fast mode already). A provider writes against
:class:`ClientSocket` and gets the fastest installed client; ``backend=`` pins one.

The error tree, the same for both backends:

* :class:`HandshakeRejected` — the server answered the upgrade with an HTTP status (``status``, ``body``): a
  provider decides whether that is fatal (401) or worth a retry (503);
* :class:`ClientClosed` — the connection is gone (``code``: the close code received, 1006 when none was);
  raised by :meth:`ClientSocket.recv` and :meth:`ClientSocket.send`;
* ``OSError`` / ``asyncio.TimeoutError`` — no connection (refused, unreachable, ``open_timeout``);
* ``ValueError`` — a URL that is not ``ws://`` or ``wss://``.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["BACKENDS", "ClientClosed", "ClientSocket", "HandshakeRejected", "connect", "default_backend"]

BACKENDS = ("websockets", "picows")


class HandshakeRejected(Exception):
    """The server refused the upgrade with an HTTP response."""

    def __init__(self, status: int, body: bytes = b"") -> None:
        super().__init__(f"handshake HTTP {status}")
        self.status, self.body = status, body


class ClientClosed(Exception):
    """The connection is closed (``code``: what the server sent, 1006 if the socket just died)."""

    def __init__(self, code: int | None) -> None:
        self.code = 1006 if code is None else code
        super().__init__(f"connection closed (code {self.code})")


class ClientSocket(Protocol):
    """One open client connection. Text in and out; one reader and one writer at a time."""

    async def send(self, text: str) -> None: ...

    async def recv(self) -> str | bytes: ...

    async def close(self, code: int = 1000) -> None: ...

    def abort(self) -> None: ...


def default_backend() -> str:
    """``picows`` when it is installed (the ``[fast]`` extra), else ``websockets``."""
    try:
        import picows  # noqa: F401
    except ImportError:
        return "websockets"
    return "picows"


async def connect(
    url: str,
    *,
    headers: Mapping[str, str],
    ssl: ssl_module.SSLContext | None,
    open_timeout: float,
    close_timeout: float,
    max_size: int,
    ping_interval: float | None,
    backend: str = "auto",
) -> ClientSocket:
    """Open ``url`` (no permessage-deflate: provider audio is base64, which it barely shrinks)."""
    name = default_backend() if backend == "auto" else backend
    if name == "picows":
        return await _PicowsClient.open(url, headers, ssl, open_timeout, close_timeout, max_size, ping_interval)
    if name == "websockets":
        return await _WebsocketsClient.open(url, headers, ssl, open_timeout, close_timeout, max_size, ping_interval)
    raise ValueError(f"unknown WebSocket client backend {backend!r}; one of auto, {', '.join(BACKENDS)}")


class _WebsocketsClient:
    """``websockets.asyncio`` behind :class:`ClientSocket`."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws

    @classmethod
    async def open(cls, url: str, headers: Mapping[str, str], ssl: ssl_module.SSLContext | None, open_timeout: float,
                   close_timeout: float, max_size: int, ping_interval: float | None) -> _WebsocketsClient:
        import websockets
        from websockets.exceptions import InvalidStatus, InvalidURI

        try:
            ws = await websockets.connect(
                url, ssl=ssl, additional_headers=dict(headers), open_timeout=open_timeout, close_timeout=close_timeout,
                max_size=max_size, ping_interval=ping_interval, ping_timeout=ping_interval, compression=None,
            )
        except InvalidStatus as exc:
            raise HandshakeRejected(exc.response.status_code, bytes(exc.response.body or b"")) from None
        except InvalidURI as exc:
            raise ValueError(str(exc)) from None
        return cls(ws)

    async def send(self, text: str) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            await self._ws.send(text)
        except ConnectionClosed as exc:
            raise ClientClosed(exc.rcvd.code if exc.rcvd is not None else None) from None

    async def recv(self) -> str | bytes:
        from websockets.exceptions import ConnectionClosed

        try:
            message: str | bytes = await self._ws.recv()
        except ConnectionClosed as exc:
            raise ClientClosed(exc.rcvd.code if exc.rcvd is not None else None) from None
        return message

    async def close(self, code: int = 1000) -> None:
        await self._ws.close(code)

    def abort(self) -> None:
        transport = getattr(self._ws, "transport", None)
        if transport is not None:
            transport.abort()


class _PicowsClient:
    """picows' client behind :class:`ClientSocket`: frames arrive on picows' callback and wait in a deque for
    :meth:`recv`; a send is picows' C ``send`` (it awaits only while picows has paused writing)."""

    def __init__(self, close_timeout: float) -> None:
        self._close_timeout = close_timeout
        self._transport: Any = None
        self._messages: deque[str | bytes] = deque()
        self._fragments: list[bytes] | None = None
        self._fragment_text = False
        self._waiter: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._closed = False
        self._close_code: int | None = None
        self._disconnected = asyncio.get_running_loop().create_future()

    @classmethod
    async def open(cls, url: str, headers: Mapping[str, str], ssl: ssl_module.SSLContext | None, open_timeout: float,
                   close_timeout: float, max_size: int, ping_interval: float | None) -> _PicowsClient:
        from picows import WSError, WSHandshakeError, ws_connect
        from picows.url import WSInvalidURL

        client = cls(close_timeout)
        listener = _listener_class()(client)
        try:
            transport, _ = await asyncio.wait_for(
                ws_connect(
                    lambda: listener, url, ssl_context=ssl, extra_headers=dict(headers),
                    websocket_handshake_timeout=open_timeout, max_frame_size=max_size,
                    enable_auto_ping=ping_interval is not None, auto_ping_idle_timeout=ping_interval or 20.0,
                    auto_ping_reply_timeout=ping_interval or 20.0, enable_auto_pong=True, disconnect_on_exception=True,
                ),
                open_timeout,  # once per connection: TCP connect, TLS and the upgrade together
            )
        except WSInvalidURL as exc:
            raise ValueError(str(exc)) from None
        except WSHandshakeError as exc:
            if exc.response is not None and exc.response.status >= 300:  # an HTTP answer that is not the upgrade
                raise HandshakeRejected(int(exc.response.status), bytes(exc.raw_body or exc.response.body or b"")) from None
            raise OSError(f"WebSocket handshake failed: {exc}") from None
        except WSError as exc:
            raise OSError(f"WebSocket connection failed: {exc}") from None
        client._transport = transport
        return client

    # ---------------------------------------------------------------- picows callbacks (through the listener)
    def _on_frame(self, frame: Any) -> None:
        from picows import WSMsgType

        kind = frame.msg_type
        if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
            data = frame.get_payload_as_bytes()
            if not frame.fin:
                self._fragments, self._fragment_text = [data], kind is WSMsgType.TEXT
                return
            self._push(data, kind is WSMsgType.TEXT)
        elif kind is WSMsgType.CONTINUATION and self._fragments is not None:
            self._fragments.append(frame.get_payload_as_bytes())
            if frame.fin:
                data, self._fragments = b"".join(self._fragments), None
                self._push(data, self._fragment_text)
        elif kind is WSMsgType.CLOSE:
            self._close_code = frame.get_close_code()
            if not self._closed:  # the server's close first: answer it (the close handshake), then hang up
                self._closed = True
                self._transport.send_close(frame.get_close_code())
            self._transport.disconnect()

    def _push(self, data: bytes, text: bool) -> None:
        try:
            self._messages.append(data.decode("utf-8") if text else data)
        except UnicodeDecodeError:
            self._messages.append(data)
        self._wake()

    def _on_disconnected(self) -> None:
        self._closed = True
        self._wake()
        for future in (self._writable, self._disconnected):
            if future is not None and not future.done():
                future.set_result(None)

    def _pause_writing(self) -> None:
        if self._writable is None or self._writable.done():
            self._writable = asyncio.get_running_loop().create_future()

    def _resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ---------------------------------------------------------------- ClientSocket
    async def send(self, text: str) -> None:
        from picows import WSMsgType

        if self._closed:
            raise ClientClosed(self._close_code)
        self._transport.send(WSMsgType.TEXT, text.encode())
        writable = self._writable
        if writable is not None and not writable.done():
            await writable  # the kernel buffer is full: wait as websockets' drain would
            if self._closed:
                raise ClientClosed(self._close_code)

    async def recv(self) -> str | bytes:
        while not self._messages:
            if self._closed:
                raise ClientClosed(self._close_code)
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._messages.popleft()

    async def close(self, code: int = 1000) -> None:
        if not self._closed:
            self._closed = True
            self._transport.send_close(code)
        try:
            await asyncio.wait_for(asyncio.shield(self._disconnected), self._close_timeout)
        except asyncio.TimeoutError:
            self.abort()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.disconnect()


_LISTENER: Any = None


def _listener_class() -> Any:
    """The picows listener class (made on first use, so importing this module does not need picows)."""
    global _LISTENER
    if _LISTENER is None:
        from picows import WSListener

        class _Listener(WSListener):  # type: ignore[misc]
            def __init__(self, client: _PicowsClient) -> None:
                super().__init__()
                self._client = client

            def on_ws_frame(self, transport: Any, frame: Any) -> None:
                self._client._on_frame(frame)

            def on_ws_disconnected(self, transport: Any) -> None:
                self._client._on_disconnected()

            def pause_writing(self) -> None:
                self._client._pause_writing()

            def resume_writing(self) -> None:
                self._client._resume_writing()

        _LISTENER = _Listener
    return _LISTENER
