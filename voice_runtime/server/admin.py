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

Dialling through a running server (``voice-runtime call --server URL``):

* ``POST {prefix}/admin/calls`` ``{"to": "+1555…", "carrier": "twilio", "amd": false, "flow": "…"}`` dials
  with the server's own call control and runs the server's flow (``server.inbound_flow``) on the call — never
  code named by the request: ``flow``, when given, must equal the target the server was started with
  (``live_calls.flow_target``). Answers ``201 {"id": …}``.
* ``GET {prefix}/admin/calls/{id}/events?after=N&wait=S`` long-polls that call's events (up to ``S`` ≤ 10
  seconds for something newer than sequence ``N``) and its outcome once it ended
  (:mod:`voice_runtime.server.dialer`).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import threading
import time
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import JSONResponse

from voice_runtime import call_events as ev

if TYPE_CHECKING:  # pragma: no cover
    from voice_runtime.server.app import VoiceServer
    from voice_runtime.session import VoiceSession

ADMIN_TOKEN_ENV = "VOICE_ADMIN_TOKEN"
MAX_DIALLED_CALLS = 64  # finished dialled calls kept for their outcome; oldest forgotten first
MAX_EVENTS_PER_CALL = 2000
MAX_WAIT_SECONDS = 10.0


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


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


class DialledCall:
    """Events and outcome of one call dialled through the admin API (thread-safe, bounded)."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.call_id: str | None = None
        self.events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS_PER_CALL)
        self.next_seq = 0
        self.outcome: dict[str, Any] | None = None
        self._cond = threading.Condition()

    def on_event(self, event: Any) -> None:
        with self._cond:
            self.events.append({"seq": self.next_seq, "t": round(event.at - self.t0, 3), "kind": event.kind, "call_id": event.call_id, "data": _jsonable(event.data)})
            self.next_seq += 1
            self._cond.notify_all()

    def finish(self, outcome: dict[str, Any]) -> None:
        with self._cond:
            self.outcome = outcome
            self._cond.notify_all()

    def wait_after(self, after: int, wait: float) -> dict[str, Any]:
        deadline = time.monotonic() + max(0.0, min(wait, MAX_WAIT_SECONDS))
        with self._cond:
            while self.next_seq <= after and self.outcome is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            events = [e for e in self.events if e["seq"] >= after]
            return {"id": self.call_id, "events": events, "next": self.next_seq, "outcome": self.outcome}


class LiveCalls:
    """Describes the server's live calls; remembers when it first saw a call whose start left the event log."""

    def __init__(self, server: VoiceServer) -> None:
        self.server = server
        self.flow_target: str | None = None  # what ``voice-runtime serve`` was started with, for dial requests
        self._first_seen: dict[int, float] = {}  # id(session) -> monotonic; pruned to live calls per listing
        self.dialled: OrderedDict[str, DialledCall] = OrderedDict()
        self._lock = threading.Lock()

    def dial(self, to: str, carrier: str, *, amd: bool = False, answer_timeout: float = 60.0) -> str:
        """Dial ``to`` and run the server's flow on it in a flow thread; returns the call id. Blocking (REST)."""
        from voice_runtime.server.dialer import dial_options, run_dialled_call

        control = self.server.call_controls.get(carrier)
        if control is None:
            raise LookupError(f"this server has no {carrier} call control")
        flow = self.server.inbound_flow
        if flow is None:
            raise LookupError("this server has no flow to run on the call")
        record = DialledCall(time.monotonic())
        session = self.server.new_session()
        session.add_event_listener(record.on_event)
        outbound = control.dial(to, session=session, **dial_options(carrier, amd))
        record.call_id = outbound.call_id
        with self._lock:
            self.dialled[outbound.call_id] = record
            while len(self.dialled) > MAX_DIALLED_CALLS:
                self.dialled.popitem(last=False)

        def run(_session: Any) -> None:
            outcome = run_dialled_call(outbound, control, flow, answer_timeout=answer_timeout)
            record.finish(outcome.as_dict())

        self.server.start_flow(session, run)
        return outbound.call_id

    def dialled_call(self, call_id: str) -> DialledCall | None:
        with self._lock:
            return self.dialled.get(call_id)

    def sessions(self) -> list[VoiceSession]:
        found = []
        for connection in list(self.server.connections):
            session = connection.session
            if session is not None:
                found.append(session)
        return found

    def describe(self, session: VoiceSession, now: float) -> dict[str, Any]:
        events = session.events
        if callable(events):  # prior-art sessions exposed a method
            events = events()
        stats = getattr(session, "call_stats", None)
        started = getattr(stats, "started_at", None)
        if started is None:
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

    async def dial_call(request: Request) -> JSONResponse:
        ok, status, reason = authorized(server, request.headers.get("authorization"))
        if not ok:
            return JSONResponse({"error": reason}, status_code=status, headers={"WWW-Authenticate": "Bearer"} if status == 401 else None)
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return JSONResponse({"error": "body must be JSON"}, status_code=400)
        if not isinstance(body, dict) or not isinstance(body.get("to"), str) or not body["to"]:
            return JSONResponse({"error": 'need {"to": "+1555...", "carrier": "twilio"|"plivo"}'}, status_code=400)
        carrier = str(body.get("carrier") or "twilio")
        wanted = body.get("flow")
        if wanted and live.flow_target and wanted != live.flow_target:
            return JSONResponse({"error": f"this server runs {live.flow_target}, not {wanted}"}, status_code=409)
        if not server.accepting:
            return JSONResponse({"error": "server is draining"}, status_code=503)
        try:
            call_id = await asyncio.to_thread(live.dial, body["to"], carrier, amd=bool(body.get("amd")), answer_timeout=float(body.get("answer_timeout") or 60.0))
        except LookupError as exc:
            return JSONResponse({"error": str(exc)}, status_code=409)
        except Exception as exc:  # the carrier refused the dial: report it, do not crash the server
            return JSONResponse({"error": f"dial failed: {type(exc).__name__}: {exc}"}, status_code=502)
        return JSONResponse({"id": call_id}, status_code=201)

    async def call_events(request: Request) -> JSONResponse:
        ok, status, reason = authorized(server, request.headers.get("authorization"))
        if not ok:
            return JSONResponse({"error": reason}, status_code=status, headers={"WWW-Authenticate": "Bearer"} if status == 401 else None)
        record = live.dialled_call(request.path_params["call_id"])
        if record is None:
            return JSONResponse({"error": "no such dialled call"}, status_code=404)
        try:
            after = int(request.query_params.get("after", "0"))
            wait = float(request.query_params.get("wait", "0"))
        except ValueError:
            return JSONResponse({"error": "after and wait must be numbers"}, status_code=400)
        return JSONResponse(await asyncio.to_thread(record.wait_after, after, wait))

    prefix = f"{server.path_prefix}/admin/calls"
    server.app.add_api_route(prefix, list_calls, methods=["GET"], include_in_schema=False)
    server.app.add_api_route(prefix, dial_call, methods=["POST"], include_in_schema=False)
    server.app.add_api_route(prefix + "/{call_id}/events", call_events, methods=["GET"], include_in_schema=False)
    return live
