"""An in-memory WebSocket pair: drive a real :class:`~voice_runtime.server.connection.CallConnection` with no socket.

In the manner of httpx's ``MockTransport``: the code under test is the real thing (the connection loop, the
dialect, the session), and only the socket is replaced, by two bounded asyncio queues on one event loop.
That makes connection tests deterministic and fast (no ports, no threads, no scheduling noise), while the
end-to-end tests keep using real sockets with the :class:`~voice_runtime.testing.SimulatedPhone`.

::

    server_side, carrier = memory_wire_pair()
    connection = CallConnection(server_side, session_for)
    task = asyncio.ensure_future(connection.run())
    await carrier.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    ...
    message = await carrier.receive(timeout=1.0)      # what the server sent, as text
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from voice_runtime.server.connection import WireClosed

__all__ = ["MemoryWire", "CarrierEnd", "memory_wire_pair"]

_CLOSED = object()


@dataclass
class CloseInfo:
    code: int
    reason: str


class _Pipe:
    def __init__(self, maxsize: int) -> None:
        self.queue: asyncio.Queue[object] = asyncio.Queue(maxsize)
        self.closed: CloseInfo | None = None

    def close(self, code: int, reason: str) -> None:
        if self.closed is None:
            self.closed = CloseInfo(code, reason)
            try:
                self.queue.put_nowait(_CLOSED)
            except asyncio.QueueFull:  # the reader is far behind: drop one message to deliver the close
                self.queue.get_nowait()
                self.queue.put_nowait(_CLOSED)


class MemoryWire:
    """The server's end: a :class:`~voice_runtime.server.connection.WireSocket`."""

    def __init__(self, inbound: _Pipe, outbound: _Pipe) -> None:
        self._in, self._out = inbound, outbound

    async def receive(self) -> str | bytes:
        item = await self._in.queue.get()
        if item is _CLOSED:
            self._in.queue.put_nowait(_CLOSED)  # every later receive sees the close too
            raise WireClosed("closed by the carrier")
        return item  # type: ignore[return-value]

    async def send(self, text: str) -> None:
        if self._out.closed is not None or self._in.closed is not None:
            raise WireClosed("socket closed")
        await self._out.queue.put(text)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self._out.close(code, reason)
        self._in.close(code, reason)

    @property
    def close_info(self) -> CloseInfo | None:
        """How the server closed the socket (None while open)."""
        return self._out.closed


class CarrierEnd:
    """The carrier's end: send what a carrier would, read what the server sent."""

    def __init__(self, inbound: _Pipe, outbound: _Pipe) -> None:
        self._to_server, self._from_server = inbound, outbound

    async def send(self, message: str | bytes) -> None:
        if self._to_server.closed is not None:
            raise WireClosed("socket closed")
        await self._to_server.queue.put(message)

    async def receive(self, timeout: float = 2.0) -> str:
        """The next message the server sent; raises :class:`WireClosed` once it closed, TimeoutError if none."""
        item = await asyncio.wait_for(self._from_server.queue.get(), timeout)
        if item is _CLOSED:
            self._from_server.queue.put_nowait(_CLOSED)
            raise WireClosed("closed by the server")
        return item  # type: ignore[return-value]

    def hang_up(self, code: int = 1000, reason: str = "") -> None:
        """Close from the carrier's side (the server's next receive raises ``WireClosed``)."""
        self._to_server.close(code, reason)

    @property
    def server_close(self) -> CloseInfo | None:
        return self._from_server.closed


def memory_wire_pair(maxsize: int = 1024) -> tuple[MemoryWire, CarrierEnd]:
    """A connected pair on the running loop: ``(server's WireSocket, carrier's end)``."""
    to_server, to_carrier = _Pipe(maxsize), _Pipe(maxsize)
    return MemoryWire(to_server, to_carrier), CarrierEnd(to_server, to_carrier)
