"""Many carrier media streams from one client thread: cheap enough for 200 calls on a shared 2-core box.

A :class:`~voice_runtime.testing.SimulatedPhone` runs its own loop and a 20 ms ticker per call, which is what
call-quality tests need and far too much for "are 200 calls all hung up?". A :class:`Swarm` opens ``n``
real WebSockets on one event loop, sends each carrier's real opening (``connected`` + ``start`` from the
carrier codec), then only reads until the server closes: every stream is a genuine call to the server (a
session, STT, a flow thread), the client side costs almost nothing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from voice_runtime.testing.carriers import carrier_codec


@dataclass
class SwarmCall:
    call_id: str
    close_code: int | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class Swarm:
    """``n`` streams to ``url``; ``headers(call_id)`` signs each upgrade. Use as a context manager."""

    def __init__(self, url: str, call_ids: list[str], *, carrier: str = "twilio", headers: Callable[[str], dict[str, str]] | None = None) -> None:
        self.url = url
        self.carrier = carrier
        self.headers = headers or (lambda call_id: {})
        self.calls = [SwarmCall(call_id) for call_id in call_ids]
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="swarm", daemon=True)
        self._sockets: list[ClientConnection] = []
        self._readers: list[asyncio.Task[None]] = []

    def __enter__(self) -> Swarm:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.run(self._close_all(), timeout=15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()

    def run(self, coro: Any, timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def open_all(self, timeout: float = 60.0) -> None:
        """Connect every call and send its opening; returns when all are connected."""
        self.run(self._open_all(), timeout)

    def wait_all_closed(self, timeout: float) -> list[SwarmCall]:
        """The calls still open after ``timeout`` (empty when the server closed them all)."""
        return self.run(self._wait_closed(timeout), timeout + 5)

    async def _open_all(self) -> None:
        await asyncio.gather(*(self._open(call) for call in self.calls))

    async def _open(self, call: SwarmCall) -> None:
        ws = await connect(self.url, additional_headers=self.headers(call.call_id), open_timeout=30, ping_interval=None)
        self._sockets.append(ws)
        codec = carrier_codec(self.carrier, call_id=call.call_id, stream_id="MZ" + call.call_id[2:])
        for message in codec.opening():
            await ws.send(message)
        self._readers.append(asyncio.ensure_future(self._read(ws, call)))

    async def _read(self, ws: ClientConnection, call: SwarmCall) -> None:
        try:
            async for _ in ws:
                pass
        except ConnectionClosed:
            pass
        finally:
            call.close_code = ws.close_code
            call.closed.set()

    async def _wait_closed(self, timeout: float) -> list[SwarmCall]:
        waits = [asyncio.ensure_future(c.closed.wait()) for c in self.calls]
        await asyncio.wait(waits, timeout=timeout)
        for w in waits:
            w.cancel()
        return [c for c in self.calls if not c.closed.is_set()]

    async def _close_all(self) -> None:
        await asyncio.gather(*(ws.close() for ws in self._sockets), return_exceptions=True)
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
