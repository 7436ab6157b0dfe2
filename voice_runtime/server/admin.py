"""The operator's admin API: ``GET {prefix}/admin/calls`` lists a running server's live calls as JSON.

Why a separate, authenticated endpoint: ``voice-runtime calls`` (and the live calls page) need to see a
server's calls from outside its process, and call metadata (phone numbers) is personal data. So:

* every request needs ``Authorization: Bearer <token>``; the token is ``VOICE_ADMIN_TOKEN`` (or
  ``server.admin_token``), compared in constant time and never logged;
* with no token configured the endpoint is off and answers 403 for every request (fail closed);
* the listing is computed from each session's public state and recent events on demand — nothing is added
  to the media path.

Response: ``{"calls": [{"id", "carrier", "from", "to", "state", "duration_s", "last_turn_latency_ms",
"stream_id"}], "count": n}``. ``last_turn_latency_ms`` is the time from the caller's last final transcript
to the agent's next first audio (the turn-taking delay the caller hears), ``null`` before the first turn.
"""

from __future__ import annotations

import hmac
import os
import time
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import JSONResponse

from voice_runtime import call_events as ev

if TYPE_CHECKING:  # pragma: no cover
    from voice_runtime.server.app import VoiceServer
    from voice_runtime.session import VoiceSession

ADMIN_TOKEN_ENV = "VOICE_ADMIN_TOKEN"


def admin_token(server: VoiceServer) -> str | None:
    return getattr(server, "admin_token", None) or os.environ.get(ADMIN_TOKEN_ENV) or None


def authorized(server: VoiceServer, header: str | None) -> tuple[bool, int, str]:
    """``(ok, status, reason)`` for an ``Authorization`` header value."""
    token = admin_token(server)
    if not token:
        return False, 403, f"admin API disabled: set {ADMIN_TOKEN_ENV} on the server"
    scheme, _, presented = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not presented:
        return False, 401, "missing bearer token"
    if not hmac.compare_digest(presented.strip().encode(), token.encode()):
        return False, 401, "invalid bearer token"
    return True, 200, ""


def call_state(session: VoiceSession) -> str:
    """The lifecycle state's name (``session.state`` once the lifecycle contract lands, else derived)."""
    state = getattr(session, "state", None)
    if state is not None:
        return str(getattr(state, "value", state)).lower()
    if session.is_disconnected:
        return "ended"
    return "live" if session.is_connected else "awaiting_stream"


def last_turn_latency(events: list[Any]) -> float | None:
    """Seconds from the last final transcript that got an answer to the agent's first audio after it."""
    latency: float | None = None
    heard_at: float | None = None
    for event in events:
        if event.kind == ev.STT_FINAL:
            heard_at = event.at
        elif event.kind == ev.TTS_FIRST_AUDIO and heard_at is not None:
            latency, heard_at = event.at - heard_at, None
    return latency


class LiveCalls:
    """Describes the server's live calls; remembers when it first saw a call whose start left the event log."""

    def __init__(self, server: VoiceServer) -> None:
        self.server = server
        self._first_seen: dict[int, float] = {}  # id(session) -> monotonic; pruned to live calls per listing

    def sessions(self) -> list[VoiceSession]:
        found = []
        for connection in list(self.server.connections):
            session = connection.session
            if session is not None:
                found.append(session)
        return found

    def describe(self, session: VoiceSession, now: float) -> dict[str, Any]:
        events = session.events
        if callable(events):
            events = events()
        started = next((e.at for e in events if e.kind == ev.STREAM_STARTED), None)
        if started is None:
            started = self._first_seen.setdefault(id(session), now)
        latency = last_turn_latency(events)
        return {
            "id": session.call_sid,
            "carrier": session.carrier,
            "from": session.caller_number,
            "to": session.called_number,
            "state": call_state(session),
            "duration_s": round(max(0.0, now - started), 1),
            "last_turn_latency_ms": None if latency is None else round(latency * 1000),
            "stream_id": session.stream_sid,
        }

    def listing(self) -> dict[str, Any]:
        now = time.monotonic()
        sessions = self.sessions()
        live_ids = {id(s) for s in sessions}
        self._first_seen = {k: v for k, v in self._first_seen.items() if k in live_ids}
        calls = [self.describe(s, now) for s in sessions]
        calls.sort(key=lambda c: -c["duration_s"])
        return {"calls": calls, "count": len(calls)}


def mount_admin(server: VoiceServer) -> LiveCalls:
    """Add the admin routes to ``server.app`` (``VoiceServer`` does this itself)."""
    live = LiveCalls(server)

    async def list_calls(request: Request) -> JSONResponse:
        ok, status, reason = authorized(server, request.headers.get("authorization"))
        if not ok:
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            return JSONResponse({"error": reason}, status_code=status, headers=headers)
        return JSONResponse(live.listing())

    server.app.add_api_route(f"{server.path_prefix}/admin/calls", list_calls, methods=["GET"], include_in_schema=False)
    return live
