"""Adapters from concrete WebSocket libraries to the loop's :class:`WireSocket`."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.websockets import WebSocket, WebSocketState

from voice_runtime.server.connection import WireClosed


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
