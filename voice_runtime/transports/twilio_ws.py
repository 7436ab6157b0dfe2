"""Prior-art single-session WebSocket route: ``register_voice_websocket(app, session)``.

New code should use :class:`voice_runtime.server.VoiceServer`, which gives every call its own session. This
route keeps the older style working: one long-lived session, served at ``/voice``; when a new stream arrives
after the previous call ended, the session is ``reset()`` first. The route runs the same carrier-neutral
loop as the server (Twilio and Plivo auto-detected), so it gets the same robustness.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, WebSocket

from voice_runtime.protocols import Dialect, StreamStarted
from voice_runtime.server.connection import CallConnection, ConnectionConfig
from voice_runtime.server.wire import StarletteWire
from voice_runtime.session import VoiceSession

log = logging.getLogger(__name__)

UpgradeGuard = Callable[[WebSocket], Awaitable[bool]]


def register_voice_websocket(
    app: FastAPI,
    session: VoiceSession,
    *,
    path: str = "/voice",
    hangup: Callable[[VoiceSession], Awaitable[None]] | None = None,
    upgrade_guard: UpgradeGuard | None = None,
    config: ConnectionConfig | None = None,
    **_legacy: Any,
) -> None:
    """Serve ``session`` on ``path``. One stream at a time; a second concurrent stream is refused."""
    busy = {"active": False}

    @app.websocket(path)
    async def voice_websocket(websocket: WebSocket) -> None:
        if upgrade_guard is not None and not await upgrade_guard(websocket):
            await websocket.close(code=1008)
            return
        if busy["active"]:
            log.warning("refusing a second concurrent stream on single-session route %s", path)
            await websocket.close(code=1013)
            return
        busy["active"] = True
        try:
            await websocket.accept()
            if session.is_disconnected:
                session.reset()

            async def session_for(started: StreamStarted, dialect: Dialect) -> VoiceSession:
                return session

            await CallConnection(StarletteWire(websocket), session_for, config=config, hangup=hangup).run()
        finally:
            busy["active"] = False


__all__ = ["register_voice_websocket"]
