"""The live calls page: ``GET {prefix}/calls``, off by default, behind a token.

``enable_live_calls(server, token=...)`` (or ``VOICE_LIVE_TOKEN``) adds:

* ``GET  /calls``              the page (a login form, HTTP 401, until the token is given);
* ``POST /calls/login``        the token in a form; sets an HttpOnly, SameSite=Strict cookie;
* ``GET  /calls/data``         the live calls as JSON (carrier, numbers, state, duration, last turn latency);
* ``WS   /calls/{key}/events`` one call's events: its recent history, then each event as it happens;
* ``WS   /calls/{key}/listen`` the call's mixed audio as it plays (16-bit PCM, 8 kHz, mono, little endian).

Why a cookie and not ``?token=``: query strings end up in access logs and browser history, and browsers
cannot put headers on a WebSocket; a same-site cookie is sent on the page's own sockets and nowhere else.
The cookie holds an HMAC of the token, never the token. Scripts may send ``Authorization: Bearer <token>``
instead. Sockets also check ``Origin`` against ``Host`` (no cross-site socket hijacking). Everything is
refused without the token, before a socket is accepted.

The board is a server call listener: it sees each call from its first event, follows it and forgets it at
``call_ended``; listen-in taps the call's :class:`~voice_runtime.recording.CallAudio`. Nothing here runs on the media path unless someone is watching:
event fan-out is one dictionary per event, and the listen-in mixer exists only while a listener is connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import logging
import os
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from fastapi import Request, WebSocket
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from voice_runtime import call_events as ev
from voice_runtime.audio.recorder import CallRecorder
from voice_runtime.call_events import CallEvent
from voice_runtime.server.live_page import LOGIN_HTML, PAGE_HTML

if TYPE_CHECKING:
    from voice_runtime.recording import CallAudio
    from voice_runtime.server.app import VoiceServer
    from voice_runtime.session import VoiceSession

__all__ = ["CallBoard", "LiveCall", "enable_live_calls", "LIVE_TOKEN_ENV"]

log = logging.getLogger(__name__)

LIVE_TOKEN_ENV = "VOICE_LIVE_TOKEN"
COOKIE = "vr_live"
_SUBSCRIBER_QUEUE = 1000  # events (or audio chunks) per slow viewer before the oldest are dropped
LISTEN_HOLD_SECONDS = 0.3  # listen-in delay: long enough that a barge-in clear still erases unheard agent audio


def _now() -> float:
    return time.monotonic()


def _jsonable(event: CallEvent) -> dict[str, Any]:
    return {"kind": event.kind, "at": event.at, "call_id": event.call_id, "data": event.data}


class _Subscriber:
    """An asyncio queue on some loop, fed from any thread; drops the oldest item when the viewer is slow."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=_SUBSCRIBER_QUEUE)
        self.dropped = 0

    def _put(self, item: Any) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(item)

    def push(self, item: Any) -> None:
        try:
            if asyncio.get_running_loop() is self.loop:
                self._put(item)
                return
        except RuntimeError:
            pass
        with contextlib.suppress(RuntimeError):  # the viewer's loop is gone: nobody to tell
            self.loop.call_soon_threadsafe(self._put, item)


@dataclass(eq=False)
class LiveCall:
    """One call on the board, kept from its first event to ``call_ended``."""

    key: str
    session: VoiceSession
    started_at: float = field(default_factory=_now)
    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=300))
    last_turn_latency: float | None = None
    ended: bool = False
    _caller_done_at: float | None = None
    _subscribers: list[_Subscriber] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def audio(self) -> CallAudio | None:
        """The call's audio fan-out (for listening in), once its stream has started."""
        from voice_runtime.recording import call_audio_of

        return call_audio_of(self.session)

    def on_event(self, event: CallEvent) -> None:
        item = _jsonable(event)
        kind = event.kind
        if kind == ev.STREAM_STARTED:
            self.started_at = event.at
        elif kind == ev.SPEECH_ENDED:  # the caller stopped talking
            self._caller_done_at = event.at
        elif kind == ev.STT_FINAL and self._caller_done_at is None:
            self._caller_done_at = event.at  # no speech-end signal: the transcript is the best we know
        elif kind in (ev.TTS_FIRST_AUDIO, "audio_sent") and self._caller_done_at is not None:
            self.last_turn_latency = event.at - self._caller_done_at
            self._caller_done_at = None
        with self._lock:
            self.recent.append(item)
            subscribers = tuple(self._subscribers)
            if kind == ev.CALL_ENDED:
                self.ended = True
        for sub in subscribers:
            sub.push(item)
        if kind == ev.CALL_ENDED:
            for sub in subscribers:
                sub.push(None)  # end of stream

    def subscribe(self, loop: asyncio.AbstractEventLoop) -> tuple[_Subscriber, list[dict[str, Any]]]:
        sub = _Subscriber(loop)
        with self._lock:
            history = list(self.recent)
            if self.ended:
                sub._put(None)
            else:
                self._subscribers.append(sub)
        return sub, history

    def unsubscribe(self, sub: _Subscriber) -> None:
        with self._lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)

    def describe(self, now: float) -> dict[str, Any]:
        s = self.session
        latency = self.last_turn_latency
        return {
            "key": self.key,
            "id": s.call_sid,
            "carrier": s.carrier,
            "from": s.caller_number,
            "to": s.called_number,
            "state": str(s.state.value),
            "duration_s": round(max(0.0, now - self.started_at), 1),
            "last_turn_latency_ms": None if latency is None else round(latency * 1000),
            "stream_id": s.stream_sid,
            "listen": self.audio is not None,
        }


class CallBoard:
    """The live calls of one server process, as a server call listener (``server.add_call_listener``).

    ``listing()`` has the shape of the admin API's ``/admin/calls`` plus ``key`` (the page's handle for a
    call: call ids repeat across simulated calls and are guessable) and ``listen``.
    """

    def __init__(self) -> None:
        self._calls: dict[str, LiveCall] = {}
        self._by_session: weakref.WeakKeyDictionary[Any, LiveCall] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._keys = itertools.count(1)
        self._salt = os.urandom(4).hex()

    def on_event(self, session: VoiceSession, event: CallEvent) -> None:
        with self._lock:
            call = self._by_session.get(session)
            if call is None:
                if event.kind == ev.CALL_ENDED:
                    return
                call = LiveCall(f"{next(self._keys)}-{self._salt}", session, started_at=event.at)
                self._by_session[session] = call
                self._calls[call.key] = call
        call.on_event(event)
        if event.kind == ev.CALL_ENDED:
            with self._lock:
                self._calls.pop(call.key, None)

    def get(self, key: str) -> LiveCall | None:
        with self._lock:
            return self._calls.get(key)

    def calls(self) -> list[LiveCall]:
        with self._lock:
            return list(self._calls.values())

    def listing(self) -> dict[str, Any]:
        now = _now()
        calls = [c.describe(now) for c in self.calls() if not c.ended]
        calls.sort(key=lambda c: -c["duration_s"])
        return {"calls": calls, "count": len(calls)}


# ------------------------------------------------------------------------------------------------ auth
class _Auth:
    def __init__(self, token: str) -> None:
        if len(token) < 12:
            raise ValueError("the live calls token must be at least 12 characters")
        self._token = token.encode()
        self.cookie_value = hmac.new(self._token, b"voice-runtime live calls", hashlib.sha256).hexdigest()

    def token_ok(self, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(presented.encode(), self._token)  # type: ignore[union-attr]

    def request_ok(self, headers: Any, cookies: dict[str, str]) -> bool:
        scheme, _, presented = (headers.get("authorization") or "").partition(" ")
        if scheme.lower() == "bearer" and self.token_ok(presented.strip()):
            return True
        cookie = cookies.get(COOKIE)
        return bool(cookie) and hmac.compare_digest(cookie.encode(), self.cookie_value.encode())  # type: ignore[union-attr]

    @staticmethod
    def same_origin(headers: Any) -> bool:
        origin, host = headers.get("origin"), headers.get("host")
        if origin is None:  # not a browser (browsers always send Origin on WebSockets)
            return True
        return bool(str(origin).split("://", 1)[-1] == host)


# ------------------------------------------------------------------------------------------------ routes
def enable_live_calls(server: VoiceServer, token: str | None = None, *, path: str = "/calls") -> CallBoard:
    """Serve the live calls page on ``server`` (refuses to run without a token: fail closed)."""
    token = token or os.environ.get(LIVE_TOKEN_ENV)
    if not token:
        raise ValueError(f"the live calls page needs a token: enable_live_calls(server, token=...) or {LIVE_TOKEN_ENV}")
    auth = _Auth(token)
    board = CallBoard()
    server.add_call_listener(board.on_event)
    base = f"{server.path_prefix}{path.rstrip('/')}"
    app = server.app

    def login_page(status: int, message: str = "") -> HTMLResponse:
        return HTMLResponse(LOGIN_HTML.replace("{{action}}", f"{base}/login").replace("{{message}}", message), status_code=status)

    async def page(request: Request) -> Response:
        if not auth.request_ok(request.headers, request.cookies):
            return login_page(401)
        return HTMLResponse(PAGE_HTML.replace("{{base}}", base), headers={"Cache-Control": "no-store"})

    async def login(request: Request) -> Response:
        body = (await request.body())[:4096].decode("utf-8", "replace")
        presented = (parse_qs(body).get("token") or [""])[0]
        if not auth.token_ok(presented):
            log.warning("live calls page: wrong token from %s", request.client.host if request.client else "?")
            return login_page(401, "Wrong token.")
        response = RedirectResponse(base, status_code=303)
        response.set_cookie(COOKIE, auth.cookie_value, httponly=True, samesite="strict", path=base,
                            secure=request.url.scheme == "https", max_age=12 * 3600)
        return response

    async def data(request: Request) -> Response:
        if not auth.request_ok(request.headers, request.cookies):
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        return JSONResponse(board.listing(), headers={"Cache-Control": "no-store"})

    async def admitted(websocket: WebSocket, key: str) -> LiveCall | None:
        if not (auth.request_ok(websocket.headers, websocket.cookies) and auth.same_origin(websocket.headers)):
            await websocket.close(code=1008)  # before accept: the handshake is answered with 403
            return None
        call = board.get(key)
        if call is None:
            await websocket.close(code=1008)
            return None
        await websocket.accept()
        return call

    async def events(websocket: WebSocket, key: str) -> None:
        call = await admitted(websocket, key)
        if call is None:
            return
        sub, history = call.subscribe(asyncio.get_running_loop())
        try:
            for item in history:
                await websocket.send_text(json.dumps(item, default=str))
            while True:
                item = await sub.queue.get()
                if item is None:
                    break
                await websocket.send_text(json.dumps(item, default=str))
        except Exception:  # the viewer went away
            pass
        finally:
            call.unsubscribe(sub)
            with contextlib.suppress(Exception):
                await websocket.close(1000)

    async def listen(websocket: WebSocket, key: str) -> None:
        call = await admitted(websocket, key)
        if call is None:
            return
        audio = call.audio
        if audio is None:  # the stream has not started yet: nothing to hear
            await websocket.close(1013, "no audio yet")
            return
        sub = _Subscriber(asyncio.get_running_loop())
        mix = CallRecorder(None, stereo=False, on_frames=sub.push, hold_seconds=LISTEN_HOLD_SECONDS, commit_seconds=0.1)
        ended = asyncio.Event()
        detach = audio.add_listener(mix)
        def on_event(event: CallEvent) -> None:
            if event.kind == ev.CALL_ENDED:
                with contextlib.suppress(RuntimeError):
                    sub.loop.call_soon_threadsafe(ended.set)

        unfollow = call.session.add_event_listener(on_event)
        if call.session.is_disconnected:
            ended.set()

        async def pump() -> None:
            while True:
                chunk = await sub.queue.get()
                if chunk:
                    await websocket.send_bytes(chunk)

        sender = asyncio.ensure_future(pump())
        receiver = asyncio.ensure_future(websocket.receive())  # a close from the viewer
        waiter = asyncio.ensure_future(ended.wait())
        try:
            await asyncio.wait({sender, receiver, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            detach()
            unfollow()
            mix.close()
            for task in (sender, receiver, waiter):
                task.cancel()
            await asyncio.gather(sender, receiver, waiter, return_exceptions=True)
            with contextlib.suppress(Exception):
                await websocket.close(1000)

    app.add_api_route(base, page, methods=["GET"], include_in_schema=False)
    app.add_api_route(f"{base}/login", login, methods=["POST"], include_in_schema=False)
    app.add_api_route(f"{base}/data", data, methods=["GET"], include_in_schema=False)
    app.add_api_websocket_route(f"{base}/{{key}}/events", events)
    app.add_api_websocket_route(f"{base}/{{key}}/listen", listen)
    return board
