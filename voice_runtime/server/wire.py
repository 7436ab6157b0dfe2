"""Adapters from concrete WebSocket libraries to the loop's :class:`WireSocket`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.websockets import WebSocket, WebSocketState

from voice_runtime.server.connection import WireClosed
from voice_runtime.server.push import Deliver, Ended


class StarletteWire:
    """A Starlette/FastAPI ``WebSocket`` (uvicorn underneath) as a :class:`WireSocket`.

    Reads raw ASGI messages rather than ``receive_text`` so that a binary frame is a countable protocol
    error instead of an exception, and a disconnect is one clean :class:`WireClosed`.
    """

    __slots__ = ("ws",)

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws

    async def receive(self) -> str | bytes:
        try:
            message = await self.ws.receive()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise WireClosed(str(exc)) from None
        if message["type"] == "websocket.receive":
            text = message.get("text")
            if text is not None:
                return text
            return message.get("bytes") or b""
        raise WireClosed(f"code {message.get('code')}")

    async def send(self, text: str) -> None:
        try:
            await self.ws.send({"type": "websocket.send", "text": text})
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise WireClosed(str(exc)) from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.ws.application_state == WebSocketState.DISCONNECTED:
            return
        if self.ws.client_state == WebSocketState.DISCONNECTED:
            return
        try:
            await self.ws.close(code, reason)
        except asyncio.CancelledError:
            raise
        except Exception:
            pass


class UvicornDirectWire(StarletteWire):
    """A Starlette ``WebSocket`` whose uvicorn protocol offers the direct channel (``server/uvicorn_ws.py``).

    Before the call is live it is a :class:`StarletteWire` (the opening is read through ASGI). Then the
    connection asks it to push (``push_to``) and sends inline (``send_nowait`` while ``writable``), as on the
    picows wire: no ASGI dict, queue hop, task wake-up or pause/resume of the socket per 20 ms frame.
    """

    __slots__ = ("_channel", "send_nowait", "send", "push_to")

    def __init__(self, ws: WebSocket, channel: Any) -> None:
        super().__init__(ws)
        self._channel = channel
        # The channel's own methods, bound once: ``send_nowait`` runs per outbound frame, so no wrapper call.
        self.send_nowait: Callable[[str | bytes], None] = channel.vr_send_nowait
        self.send: Callable[[str], Awaitable[None]] = channel.vr_send  # type: ignore[assignment]
        self.push_to: Callable[[Deliver, Ended], None] = channel.vr_push_to

    @property
    def writable(self) -> bool:
        return self._channel.vr_writable  # type: ignore[no-any-return]


def starlette_wire(ws: WebSocket) -> StarletteWire:
    """The fastest wire this socket allows: direct when uvicorn runs our protocol, plain ASGI otherwise."""
    from voice_runtime.server.uvicorn_ws import DIRECT_CHANNEL

    channel = ws.scope.get("extensions", {}).get(DIRECT_CHANNEL)
    return StarletteWire(ws) if channel is None else UvicornDirectWire(ws, channel)
