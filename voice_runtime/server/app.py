"""The multi-call server: ASGI routes, one session per call, one flow thread per call.

::

    server = VoiceServer(stt_factory=lambda: create_stt("local"), tts_factory=lambda: create_tts("local"))

    @server.on_inbound_call
    def flow(session):                      # runs in its own thread, one per call
        session.speak("Hello!", wait=True)
        answer = session.listen(timeout=10)

    server.serve(port=8080)                 # or mount server.app in your own FastAPI app

Routes (prefix configurable):

* ``WS /stream`` — an inbound call's media stream: a fresh session and a flow thread per connection.
* ``WS /stream/{token}`` — the stream of a call we dialled: bound to the session that dialled it by a
  single-use token, validated *before* the socket is accepted.

Carrier-specific HTTP (answer webhooks, status callbacks, signatures) is added by the call-control modules
through :meth:`VoiceServer.add_upgrade_guard` and ordinary FastAPI routes on :attr:`VoiceServer.app`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, WebSocket

from voice_runtime.call_events import CALL_ENDED, CallEvent
from voice_runtime.errors import CallError, MissingStreamUrlError
from voice_runtime.protocols import Dialect, StreamStarted
from voice_runtime.server.connection import CallConnection, ConnectionConfig
from voice_runtime.server.registry import CallRegistry
from voice_runtime.server.wire import StarletteWire
from voice_runtime.session import VoiceSession

log = logging.getLogger(__name__)

Flow = Callable[[VoiceSession], Any]
UpgradeValidator = Callable[[WebSocket], Awaitable[bool | None]]
"""Checks one carrier's signature on a WebSocket upgrade, before ``accept()``.

Returns True (valid signature for this carrier), False (this carrier's signature header is present but
wrong) or None (no signature of this carrier on the request — someone else's business).
"""


def _close_quietly(resource: Any) -> None:
    try:
        resource.close()
    except Exception:
        log.exception("closing %r failed", resource)


def run_flow_thread(session: VoiceSession, flow: Flow, *, name: str | None = None) -> threading.Thread:
    """Run ``flow(session)`` in a new thread. When the flow returns, the call is hung up.

    ``CallHangupError`` escaping the flow is the normal "caller hung up" ending and is logged quietly;
    anything else is logged with its traceback. Either way the call is ended, never left open.
    """

    def target() -> None:
        try:
            flow(session)
        except CallError as exc:
            log.info("flow for call %s ended: %s", session.call_sid, exc)
        except Exception:
            log.exception("flow for call %s crashed", session.call_sid)
        finally:
            if not session.is_disconnected:
                session.request_disconnect()

    thread = threading.Thread(target=target, name=name or f"flow-{session.call_sid}", daemon=True)
    thread.start()
    return thread


@dataclass
class RunningServer:
    """A server started by :meth:`VoiceServer.start` (tests, demo)."""

    host: str
    port: int
    _server: Any
    _thread: threading.Thread

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class VoiceServer:
    """Owns the call registry, the ASGI app and the per-call defaults."""

    def __init__(
        self,
        *,
        stt_factory: Callable[[], Any] | None = None,
        tts_factory: Callable[[], Any] | None = None,
        inbound_flow: Flow | None = None,
        public_url: str | None = None,
        path_prefix: str = "",
        recordings_dir: str | Path | None = None,
        connection_config: ConnectionConfig | None = None,
        hangup: Callable[[VoiceSession], Awaitable[None]] | None = None,
        session_defaults: dict[str, Any] | None = None,
        app: FastAPI | None = None,
    ) -> None:
        self.stt_factory = stt_factory
        self.tts_factory = tts_factory
        self.inbound_flow = inbound_flow
        self.public_url = public_url
        self.path_prefix = path_prefix.rstrip("/")
        self.recordings_dir = Path(recordings_dir) if recordings_dir else None
        self.connection_config = connection_config or ConnectionConfig()
        self.hangup = hangup
        self.session_defaults = dict(session_defaults or {})
        self.registry = CallRegistry()
        self.connections: set[CallConnection] = set()
        self.flow_threads: set[threading.Thread] = set()
        self._validators: dict[str, UpgradeValidator] = {}
        self.call_controls: dict[str, Any] = {}
        self.allow_unsigned_streams: bool | None = None  # None: allowed only while no validator is registered
        self._warned_unsigned = False
        self.accepting = True
        self.app = app or FastAPI(title="voice_runtime")
        self._install_routes(self.app)

    # ---------------------------------------------------------------------------------- sessions
    def new_session(self, **overrides: Any) -> VoiceSession:
        """A fresh session carrying this server's defaults (one per call; never share)."""
        kwargs: dict[str, Any] = dict(self.session_defaults)
        if self.stt_factory is not None:
            kwargs.setdefault("stt_factory", self.stt_factory)
        owned_tts = None
        if self.tts_factory is not None and "tts" not in kwargs and "tts" not in overrides:
            owned_tts = kwargs["tts"] = self.tts_factory()
        kwargs.update(overrides)
        session = VoiceSession(**kwargs)
        if owned_tts is not None and callable(getattr(owned_tts, "close", None)):
            # The server made this TTS for this call, so it releases it (sockets, synthesizers, worker holds)
            # when the call ends — off the event loop, since a provider's close may block.
            def close_when_ended(event: CallEvent) -> None:
                if event.kind == CALL_ENDED:
                    threading.Thread(target=_close_quietly, args=(owned_tts,), name="tts-close", daemon=True).start()

            session.add_event_listener(close_when_ended)
        return session

    def expect_stream(self, session: VoiceSession) -> str:
        """Issue the single-use token that binds a stream we are about to dial to ``session``."""
        return self.registry.issue_token(session)

    def stream_url(self, token: str | None = None, *, base_url: str | None = None) -> str:
        """The public ``wss://`` URL for a stream (routed by ``token`` when given)."""
        base = base_url or self.public_url or os.environ.get("VOICE_STREAM_URL")
        if not base:
            raise MissingStreamUrlError()
        base = base.rstrip("/")
        if base.startswith("https://"):
            base = "wss://" + base[len("https://") :]
        elif base.startswith("http://"):
            base = "ws://" + base[len("http://") :]
        path = f"{self.path_prefix}/stream" + (f"/{token}" if token else "")
        return base + path

    def on_inbound_call(self, flow: Flow) -> Flow:
        """Decorator: run ``flow(session)`` in its own thread for every inbound stream."""
        self.inbound_flow = flow
        return flow

    def start_flow(self, session: VoiceSession, flow: Flow) -> threading.Thread:
        self.flow_threads = {t for t in self.flow_threads if t.is_alive()}
        thread = run_flow_thread(session, flow)
        self.flow_threads.add(thread)
        return thread

    def add_upgrade_validator(self, carrier: str, validator: UpgradeValidator) -> None:
        """Register ``carrier``'s signature check for stream upgrades (see :data:`UpgradeValidator`).

        Once any validator is registered, an upgrade is admitted only if some validator returns True; an
        upgrade with no carrier signature at all is refused unless ``allow_unsigned_streams`` is True
        (a logged, development-only opt-out).
        """
        self._validators[carrier] = validator

    def register_call_control(self, control: Any) -> None:
        """Attach a carrier's call control (REST hangup etc.); ``control.carrier`` names the carrier."""
        self.call_controls[control.carrier] = control

    async def _hangup_via_call_control(self, session: VoiceSession) -> None:
        """The loop's hangup hook: REST hangup through the session's carrier, when we have one."""
        control = self.call_controls.get(session.carrier or "")
        if control is not None:
            await control.hangup(session)
        elif self.hangup is not None:
            await self.hangup(session)

    # ---------------------------------------------------------------------------------- routes
    def _install_routes(self, app: FastAPI) -> None:
        prefix = self.path_prefix

        @app.websocket(f"{prefix}/stream")
        async def inbound_stream(websocket: WebSocket) -> None:
            if not await self._admit(websocket):
                return

            async def session_for(started: StreamStarted, dialect: Dialect) -> VoiceSession:
                return self.new_session()

            def on_started(session: VoiceSession) -> None:
                if self.inbound_flow is not None:
                    self.start_flow(session, self.inbound_flow)

            await self._serve(websocket, session_for, on_started)

        @app.websocket(f"{prefix}/stream/{{token}}")
        async def routed_stream(websocket: WebSocket, token: str) -> None:
            if not self.registry.peek(token):
                log.warning("refused stream upgrade with unknown, expired or used token")
                await websocket.close(code=1008)
                return
            if not await self._admit(websocket):
                return
            session = self.registry.claim(token)
            if session is None:  # raced with another upgrade for the same token
                await websocket.close(code=1008)
                return

            async def session_for(started: StreamStarted, dialect: Dialect) -> VoiceSession:
                return session

            await self._serve(websocket, session_for, None)

    async def _admit(self, websocket: WebSocket) -> bool:
        """Run the guards; refuse (HTTP 403 via close-before-accept) if any fails."""
        if not self.accepting:
            await websocket.close(code=1013)  # try again later: we are draining
            return False
        verdicts: list[bool | None] = []
        for carrier, validator in self._validators.items():
            try:
                verdict = await validator(websocket)
            except Exception:
                log.exception("%s upgrade validator failed", carrier)
                verdict = False
            if verdict is True:
                return True
            verdicts.append(verdict)
        if False in verdicts:
            log.warning("refused stream upgrade: invalid carrier signature")
            await websocket.close(code=1008)
            return False
        allow = self.allow_unsigned_streams
        if allow is None:
            allow = not self._validators
        if not allow:
            log.warning("refused stream upgrade: no carrier signature")
            await websocket.close(code=1008)
            return False
        if not self._warned_unsigned:
            self._warned_unsigned = True
            log.warning(
                "accepting unsigned media streams (%s): development only",
                "allow_unsigned_streams=True" if self.allow_unsigned_streams else "no carrier credentials configured",
            )
        return True

    async def _serve(
        self,
        websocket: WebSocket,
        session_for: Callable[[StreamStarted, Dialect], Awaitable[VoiceSession | None]],
        on_started: Callable[[VoiceSession], None] | None,
    ) -> None:
        await websocket.accept()
        await self.serve_wire(StarletteWire(websocket), session_for, on_started)

    async def serve_wire(
        self,
        wire: Any,
        session_for: Callable[[StreamStarted, Dialect], Awaitable[VoiceSession | None]],
        on_started: Callable[[VoiceSession], None] | None,
    ) -> None:
        """Run one call on an accepted socket of any library (a :class:`~voice_runtime.server.connection.WireSocket`).

        Shared by the FastAPI routes and the websockets-native mode (``server/ws_native.py``), so both run
        the same loop with the same config, recorder and hangup hook.
        """
        connection = CallConnection(
            wire,
            session_for,
            config=self.connection_config,
            recorder_factory=self._recorder_for if self.recordings_dir else None,
            hangup=self._hangup_via_call_control,
            on_started=on_started,
        )
        self.connections.add(connection)
        try:
            await connection.run()
        finally:
            self.connections.discard(connection)

    def _recorder_for(self, session: VoiceSession) -> Any:
        from voice_runtime.audio import CallRecorder

        assert self.recordings_dir is not None
        self.recordings_dir.mkdir(parents=True, exist_ok=True)
        return CallRecorder(self.recordings_dir / f"{session.call_sid or 'call'}.wav", stereo=True)

    # ---------------------------------------------------------------------------------- running
    def start(self, host: str = "127.0.0.1", port: int = 0, *, log_level: str = "warning") -> RunningServer:
        """Run uvicorn in a background thread (tests, demo). Returns once it is listening."""
        import uvicorn

        config = uvicorn.Config(
            self.app,
            host=host,
            port=port,
            log_level=log_level,
            lifespan="off",
            ws_max_size=self.connection_config.hard_max_inbound_message,
            ws_ping_interval=None,
        )
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        thread = threading.Thread(target=server.run, name="voice-server", daemon=True)
        thread.start()
        poll = threading.Event()
        deadline = 10.0
        while not server.started and thread.is_alive() and deadline > 0:
            poll.wait(0.01)  # uvicorn exposes no "started" event to wait on
            deadline -= 0.01
        if not server.started:
            raise RuntimeError("voice server failed to start")
        sock = server.servers[0].sockets[0]
        bound_host, bound_port = sock.getsockname()[:2]
        return RunningServer(bound_host, bound_port, server, thread)

    def serve(self, host: str = "0.0.0.0", port: int = 8080, *, drain_deadline: float = 30.0, **uvicorn_kwargs: Any) -> None:
        """Run in the foreground until SIGTERM/SIGINT (production entry point).

        The signal starts a graceful drain (:mod:`voice_runtime.server.drain`): new calls are refused, live
        calls may finish for up to ``drain_deadline`` seconds, the rest are hung up over REST and closed
        with 1012; then the process exits 0. A second Ctrl-C exits at once.
        """
        import uvicorn

        from voice_runtime.server.drain import GracefulServer

        uvicorn_kwargs.setdefault("ws_max_size", self.connection_config.hard_max_inbound_message)
        config = uvicorn.Config(self.app, host=host, port=port, **uvicorn_kwargs)
        GracefulServer(config, self, drain_deadline).run()

    async def drain(self, deadline: float = 30.0, **kwargs: Any) -> Any:
        """Stop accepting calls, let live ones finish up to ``deadline``, then hang up and close the rest.

        Run it on the server's event loop (e.g. from your own shutdown hook when ``app`` is mounted
        elsewhere). Returns a :class:`~voice_runtime.server.drain.DrainReport`.
        """
        from voice_runtime.server.drain import drain

        return await drain(self, deadline, **kwargs)

    async def close_all(self, code: int = 1012) -> None:
        """Close every live stream (shutdown)."""
        await asyncio.gather(*(c.wire.close(code, "server shutdown") for c in list(self.connections)), return_exceptions=True)


@contextlib.contextmanager
def running(server: VoiceServer, **kwargs: Any) -> Iterator[RunningServer]:
    handle = server.start(**kwargs)
    try:
        yield handle
    finally:
        handle.stop()
