"""The multi-call server: one session per call, one flow thread per call, the FastAPI media routes.

::

    server = VoiceServer(stt_factory=lambda: create_stt("local"), tts_factory=lambda: create_tts("local"))

    @server.on_inbound_call
    def flow(session):                      # runs in its own thread, one per call
        session.speak("Hello!", wait=True)
        answer = session.listen(timeout=10)

    server.serve(port=8080)                 # or mount server.app in your own FastAPI app

Routes (prefix configurable):

* ``WS /stream`` — an inbound call's media stream: a fresh session and a flow thread per connection.
* ``WS /stream/{token}`` — the stream of a call we dialled (or a webhook answered): bound to its session by a
  single-use token, validated *before* the socket is accepted.

Both routes go through :func:`~voice_runtime.server.admission.admit_stream`, the one admission path every
server mode uses. Carrier-specific HTTP (answer webhooks, status callbacks) is added by the call-control
modules (``transports/``) as ordinary routes on :attr:`VoiceServer.app`. The runners (``start``, ``serve``,
the native mode, workers) live in :mod:`voice_runtime.server.runners` and :mod:`voice_runtime.server.ws_native`.

Observability hooks: ``on_call_started(session)``, ``on_call_ended(session, stats)`` and
:meth:`VoiceServer.add_call_listener` (every event of every call, from its first one).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, WebSocket

from voice_runtime.call_events import CALL_ENDED, CallEvent
from voice_runtime.conversation.flows import as_flow
from voice_runtime.errors import CallError, ConfigError, MissingStreamUrlError
from voice_runtime.logs import CallRef, call_context, install_call_id_records
from voice_runtime.metrics.observer import CallObserver, ReportHook
from voice_runtime.on_demand_thread import end_hook_runner
from voice_runtime.thread_starter import start_soon
from voice_runtime.server.admin import mount_admin
from voice_runtime.server.admission import Admitted, admit_stream
from voice_runtime.server.connection import CallConnection, ConnectionConfig, Recorder
from voice_runtime.server.flow_watch import FlowWatch
from voice_runtime.server.limits import ServerLimits
from voice_runtime.server.overload import deny_over_capacity
from voice_runtime.server.registry import CallRegistry
from voice_runtime.server.stream_policy import unsigned_policy, warn_if_unsigned
from voice_runtime.server.stream_tickets import StartGuard, StreamTickets
from voice_runtime.server.wire import starlette_wire
from voice_runtime.session import VoiceSession
from voice_runtime.stats import CallStats
from voice_runtime.urls import to_ws_url

log = logging.getLogger(__name__)

Flow = Callable[[VoiceSession], Any]
UpgradeValidator = Callable[[WebSocket], Awaitable[bool | None]]
"""Checks one carrier's signature on a WebSocket upgrade, before ``accept()``.

Returns True (valid signature for this carrier), False (this carrier's signature header is present but
wrong) or None (no signature of this carrier on the request — someone else's business).
"""
CallListener = Callable[[VoiceSession, CallEvent], None]


def check_session_class(cls: Any) -> type[VoiceSession]:
    """``cls`` if it is VoiceSession or a subclass; a clear :class:`ConfigError` otherwise (fail at set-up)."""
    if not (isinstance(cls, type) and issubclass(cls, VoiceSession)):
        raise ConfigError(f"session_class must be VoiceSession or a subclass of it, got {cls!r}")
    return cls


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
        with call_context(session):  # every log line of this thread names the call
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


async def _refuse_http(websocket: WebSocket, status: int, text: str) -> None:
    """Answer an upgrade with a plain HTTP error and body (ASGI WebSocket Denial Response), before accept."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        body = (text + "\n").encode()
        headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
        await websocket.send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await websocket.send({"type": "websocket.http.response.body", "body": body})
    else:
        await websocket.close(code=1008, reason=text)


class VoiceServer:
    """Owns the call registry, the ASGI app, the per-call defaults and the server-wide hooks."""

    def __init__(
        self,
        *,
        stt_factory: Callable[[], Any] | None = None,
        tts_factory: Callable[[], Any] | None = None,
        inbound_flow: Flow | None = None,
        public_url: str | None = None,
        path_prefix: str = "",
        recordings_dir: str | Path | None = None,
        recorder_factory: Callable[[VoiceSession], Recorder | None] | None = None,
        connection_config: ConnectionConfig | None = None,
        hangup: Callable[[VoiceSession], Awaitable[None]] | None = None,
        session_defaults: dict[str, Any] | None = None,
        on_call_started: Callable[[VoiceSession], None] | None = None,
        on_call_ended: Callable[[VoiceSession, CallStats], None] | None = None,
        app: FastAPI | None = None,
        session_class: type[VoiceSession] = VoiceSession,
        metrics: bool = True,
        observe: bool = True,
        call_log_dir: str | Path | None = None,
        on_call_report: ReportHook | None = None,
        max_calls: int | None = None,
        check_config: bool | None = None,
    ) -> None:
        """``session_class``: the :class:`VoiceSession` subclass every call of this server gets (inbound and
        dialled), e.g. one that adds your tool-node methods; call controls may override it per carrier.
        ``inbound_flow`` may be a plain or an ``async def`` function (checked now: see ``conversation.flows``).

        Observability (``docs/observability.md``): every call gets a :class:`~voice_runtime.metrics.CallReport`
        (``stats.report`` in ``on_call_ended``, ``session.call_report``, and ``on_call_report(session, report)``);
        ``metrics`` serves Prometheus at ``/metrics`` plus ``/healthz`` and ``/readyz``; ``call_log_dir`` writes one
        JSON-lines event log per call; ``observe=False`` turns per-call observation off altogether (no reports,
        no per-call metrics: the benchmark's baseline). ``max_calls`` refuses streams (and reports not ready) at
        that many live calls. ``check_config`` (default on; ``VOICE_RUNTIME_SKIP_CONFIG_CHECK=1`` or False turns
        it off for lazy setups) builds each configured provider and checks each carrier once when the server
        starts, refusing to start with one clear message instead of failing call by call.
        """
        self.stt_factory = stt_factory
        self.tts_factory = tts_factory
        self.session_class = check_session_class(session_class)
        self.inbound_flow = inbound_flow  # checked by the property: an unsupported kind fails here
        self.public_url = public_url
        self.path_prefix = path_prefix.rstrip("/")
        self.recordings_dir = Path(recordings_dir) if recordings_dir else None
        if recorder_factory is None and self.recordings_dir is not None:
            from voice_runtime.recording import wav_recorder_factory

            recorder_factory = wav_recorder_factory(self.recordings_dir)
        self.recorder_factory = recorder_factory  # fn(session) -> Recorder | None (the call's sink; None: none)
        self.connection_config = connection_config or ConnectionConfig()
        self.hangup = hangup
        self.session_defaults = dict(session_defaults or {})
        self.on_call_started = on_call_started
        self.on_call_ended = on_call_ended
        self.registry = CallRegistry()
        self.connections: set[CallConnection] = set()
        self.flow_threads: set[threading.Thread] = set()
        self.upgrade_validators: dict[str, UpgradeValidator] = {}
        self.call_controls: dict[str, Any] = {}
        # None: allowed only while no validator is registered and no public https/wss URL is set (stream_policy)
        self.allow_unsigned_streams: bool | None = None
        self._warned_unsigned = False
        self.stream_tickets: StreamTickets | None = None  # set to require a per-call ticket on /stream
        self.start_guard = StartGuard()  # /stream: one session per CallSid, ever
        self.shared_replay: Any = None  # set by fleet_replay.share_replay_guards: guards shared by a fleet
        self.flow_watch = FlowWatch()  # flows that outlive their call are logged and counted
        self.limits = ServerLimits()  # max_connections / max_calls / header_timeout, both server modes
        self.stats: Counter[str] = Counter()  # server-wide counters
        self._listeners: list[CallListener] = []
        self._adopted: weakref.WeakSet[VoiceSession] = weakref.WeakSet()
        self._reported: weakref.WeakSet[VoiceSession] = weakref.WeakSet()
        self._hook_lock = threading.Lock()
        self.accepting = True
        #: ``fn(token) -> refusal text | None``: set by ``server.workers.install_worker`` to refuse streams
        #: owned by another worker process before the handshake (HTTP 421 + the text).
        self.route_guard: Callable[[str], str | None] | None = None
        self.worker_address: Any = None
        if max_calls is not None:
            self.limits.max_calls = max_calls
        self.check_config_on_start = check_config
        install_call_id_records()
        self.metrics: Any = None
        if metrics and observe:
            from voice_runtime.metrics.prometheus import ServerMetrics

            self.metrics = ServerMetrics()
        self.observer = CallObserver(
            metrics=self.metrics, call_log_dir=call_log_dir, on_call_report=on_call_report, enabled=observe
        )
        self.end_hooks = end_hook_runner()  # on_call_report / on_call_ended run here, never on the loop (on_demand_thread.py)
        self.app = app or FastAPI(title="voice_runtime")
        self._install_routes(self.app)
        from voice_runtime.server.probes import install_probe_routes

        install_probe_routes(self, self.app)
        self.live_calls = mount_admin(self)  # GET {prefix}/admin/calls, bearer VOICE_ADMIN_TOKEN (server/admin.py)

    @property
    def inbound_flow(self) -> Flow | None:
        """The flow run for every inbound call (already checked and adapted: see ``conversation.flows``)."""
        return self._inbound_flow

    @inbound_flow.setter
    def inbound_flow(self, flow: Flow | None) -> None:
        self._inbound_flow = as_flow(flow)

    # ---------------------------------------------------------------------------------- sessions
    def new_session(self, *, session_class: type[VoiceSession] | None = None, **overrides: Any) -> VoiceSession:
        """A fresh session carrying this server's defaults (one per call; never share).

        ``session_class`` (default: the server's) is the class instantiated.
        """
        kwargs: dict[str, Any] = dict(self.session_defaults)
        if self.stt_factory is not None:
            kwargs.setdefault("stt_factory", self.stt_factory)
        owned_tts = None
        if self.tts_factory is not None and "tts" not in kwargs and "tts" not in overrides:
            owned_tts = kwargs["tts"] = self.tts_factory()
        kwargs.update(overrides)
        session = (check_session_class(session_class) if session_class is not None else self.session_class)(**kwargs)
        if owned_tts is not None and callable(getattr(owned_tts, "close", None)):
            # The server made this TTS for this call, so it releases it (sockets, synthesizers, worker holds)
            # when the call ends — off the event loop, since a provider's close may block.
            def close_when_ended(event: CallEvent) -> None:
                if event.kind == CALL_ENDED:
                    # started by the thread starter: the loop never waits for this thread to be scheduled
                    start_soon(threading.Thread(target=_close_quietly, args=(owned_tts,), name="tts-close", daemon=True))

            session.add_event_listener(close_when_ended)
        self.adopt(session)
        return session

    def adopt(self, session: VoiceSession) -> None:
        """Connect the server-wide hooks to ``session`` (idempotent; done for every session the server sees)."""
        with self._hook_lock:
            if session in self._adopted:
                return
            self._adopted.add(session)
        self.observer.call_started(session)  # per-turn tracking, report, metrics, lifecycle lines

        def on_event(event: CallEvent) -> None:
            for listener in tuple(self._listeners):
                try:
                    listener(session, event)
                except Exception:
                    log.exception("call listener %r failed", listener)
            if event.kind == CALL_ENDED and session.call_stats.started_at is None:
                self._report_ended(session)  # never got a stream: no connection will report it

        session.add_event_listener(on_event)

    def add_call_listener(self, listener: CallListener) -> Callable[[], None]:
        """See every event of every call (from its first), as ``listener(session, event)``; returns a remover."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    def _report_started(self, session: VoiceSession) -> None:
        hook = self.on_call_started
        if hook is not None:
            try:
                hook(session)
            except Exception:
                log.exception("on_call_started hook failed")

    def _report_ended(self, session: VoiceSession) -> None:
        with self._hook_lock:
            if session in self._reported:
                return
            self._reported.add(session)
        report = self.observer.call_finished(session)  # on the loop: report, metrics (stats.report is set)
        hook = self.on_call_ended
        if report is None and hook is None:
            return

        def run_end_hooks() -> None:  # off the loop, in call-end order (on_demand_thread.py)
            if report is not None:
                self.observer.deliver_report(session, report)
            if hook is not None:
                try:
                    hook(session, session.call_stats)
                except Exception:
                    log.exception("on_call_ended hook failed")

        self.end_hooks.submit(run_end_hooks)

    def expect_stream(self, session: VoiceSession, *, carrier: str | None = None) -> str:
        """Issue the single-use token that binds a stream we are about to dial (or answer) to ``session``."""
        self.adopt(session)
        return self.registry.issue_token(session, carrier)

    def stream_url(self, token: str | None = None, *, base_url: str | None = None) -> str:
        """The public ``wss://`` URL for a stream (routed by ``token`` when given)."""
        base = base_url or self.public_url or os.environ.get("VOICE_STREAM_URL")
        if not base:
            raise MissingStreamUrlError()
        path = f"{self.path_prefix}/stream" + (f"/{token}" if token else "")
        return to_ws_url(base).rstrip("/") + path

    def on_inbound_call(self, flow: Flow) -> Flow:
        """Decorator: run ``flow(session)`` in its own thread for every inbound stream (``def`` or ``async def``)."""
        self.inbound_flow = flow
        return flow

    def start_flow(self, session: VoiceSession, flow: Flow) -> threading.Thread:
        self.flow_threads = {t for t in self.flow_threads if t.is_alive()}
        # as_flow: async flows too; the watch reports a flow that outlives its call
        thread = run_flow_thread(session, self.flow_watch.wrap(session, as_flow(flow)))  # type: ignore[arg-type]
        self.flow_threads.add(thread)
        return thread

    # ---------------------------------------------------------------------------------- carriers
    def add_upgrade_validator(self, carrier: str, validator: UpgradeValidator) -> None:
        """Register ``carrier``'s signature check for stream upgrades (see :data:`UpgradeValidator`).

        Once any validator is registered, an upgrade is admitted only if some validator returns True; an
        upgrade with no carrier signature at all is refused unless ``allow_unsigned_streams`` is True
        (a logged, development-only opt-out).
        """
        self.upgrade_validators[carrier] = validator

    def unsigned_streams_allowed(self) -> bool:
        """The fail-closed policy of :mod:`voice_runtime.server.stream_policy` (public https/wss URL: refused)."""
        return unsigned_policy(self).allowed

    def note_unsigned_stream(self) -> None:
        warn_if_unsigned(self)  # once per server, with how to turn it off

    def at_call_capacity(self) -> bool:
        """True (and counted, logged rate-limited) when ``limits.max_calls`` calls are already live."""
        cap = self.limits.max_calls
        if cap is None or len(self.connections) < cap:
            return False
        self.limits.refused("calls_refused", "max_calls (%d) reached: new calls get 503 + Retry-After", cap)
        return True

    def register_call_control(self, control: Any) -> None:
        """Attach a carrier's call control (REST hangup etc.); ``control.carrier`` names the carrier."""
        self.call_controls[control.carrier] = control
        if self.shared_replay is not None:  # replay guards in Redis (fleet_replay.py): this carrier's too
            self.shared_replay.attach_call_control(control)

    async def hangup_via_carrier(self, session: VoiceSession) -> None:
        """REST hangup through the session's carrier's call control (or the ``hangup`` hook), on the loop."""
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
            await self._serve_starlette(websocket, None)

        @app.websocket(f"{prefix}/stream/{{token}}")
        async def routed_stream(websocket: WebSocket, token: str) -> None:
            await self._serve_starlette(websocket, token)

    async def _serve_starlette(self, websocket: WebSocket, token: str | None) -> None:
        verdict = await admit_stream(self, websocket, token)
        if not isinstance(verdict, Admitted):
            if verdict.status == 421:  # misdirected (another worker's stream): say whose, in the HTTP answer
                await _refuse_http(websocket, verdict.status, verdict.reason)
                return
            if verdict.status == 503:
                await deny_over_capacity(websocket, self.limits)  # 503 + Retry-After, not a bare 403
                return
            await websocket.close(code=1008)  # before accept(): uvicorn answers the upgrade with HTTP 403
            return
        await websocket.accept()
        await self.serve_wire(starlette_wire(websocket), verdict)

    async def serve_wire(self, wire: Any, admitted: Admitted) -> None:
        """Run one admitted call on an accepted socket of any library (a ``WireSocket``).

        Shared by every server mode, so all run the same loop with the same config, recorder and hooks.
        """

        with call_context(CallRef()) as ref:  # this task (and the tasks it makes) log with the call's id
            await self._serve_call(wire, admitted, ref)

    async def _serve_call(self, wire: Any, admitted: Admitted, ref: CallRef) -> None:
        def on_started(session: VoiceSession) -> None:
            self._report_started(session)
            if admitted.on_started is not None:
                admitted.on_started(session)

        async def session_for(started: Any, dialect: Any) -> VoiceSession | None:
            session = await admitted.session_for(started, dialect)
            ref.session = session  # known before the call's first event, so its log lines carry the id
            return session

        connection = CallConnection(
            wire,
            session_for,
            config=self.connection_config,
            recorder_factory=self._call_audio_for,
            hangup=self.hangup_via_carrier,
            dialect=admitted.dialect,
            on_started=on_started,
        )
        self.connections.add(connection)
        try:
            await connection.run()
        finally:
            self.connections.discard(connection)
            if connection.session is not None:
                self._report_ended(connection.session)

    @property
    def max_calls(self) -> int | None:
        """Live calls at most (``limits.max_calls``): past it upgrades get 503 + Retry-After and /readyz fails."""
        return self.limits.max_calls

    @max_calls.setter
    def max_calls(self, value: int | None) -> None:
        self.limits.max_calls = value

    @property
    def at_capacity(self) -> bool:
        cap = self.limits.max_calls
        return cap is not None and len(self.connections) >= cap

    @property
    def ready(self) -> bool:
        """Accepting calls: not draining and under ``max_calls``."""
        return self.accepting and not self.at_capacity

    def check_config(self) -> None:
        """Build each configured provider and check each carrier once; raise ``ConfigError`` naming every problem."""
        from voice_runtime.server.config_check import check_or_raise

        check_or_raise(self)

    def check_config_at_start(self) -> None:
        """What every runner calls first (unless opted out, see ``check_config``)."""
        from voice_runtime.server.config_check import should_check

        if should_check(self.check_config_on_start):
            self.check_config()

    def _call_audio_for(self, session: VoiceSession) -> Recorder:
        """Every call's audio goes through a CallAudio: its sink, ``set_mixer`` taps, live listeners, pauses."""
        from voice_runtime.recording import CallAudio

        return CallAudio.create(session, self.recorder_factory)

    # ---------------------------------------------------------------------------------- running
    def start(self, host: str = "127.0.0.1", port: int = 0, *, log_level: str = "warning") -> Any:
        """Run uvicorn in a background thread (tests, demo). Returns a running handle once listening."""
        from voice_runtime.server.runners import start_fastapi

        return start_fastapi(self, host, port, log_level=log_level)

    def serve(self, host: str = "0.0.0.0", port: int | None = None, *, drain_deadline: float = 30.0, **uvicorn_kwargs: Any) -> None:
        """Run in the foreground until SIGTERM/SIGINT, then drain (see :mod:`voice_runtime.server.drain`).

        ``port`` defaults to ``VOICE_SERVER_PORT`` (0.1.x's variable), else 8080.
        """
        from voice_runtime.compat.env import server_port
        from voice_runtime.server.runners import serve_fastapi

        serve_fastapi(self, host, server_port() if port is None else port, drain_deadline=drain_deadline, **uvicorn_kwargs)

    async def drain(self, deadline: float = 30.0, **kwargs: Any) -> Any:
        """Stop accepting calls, let live ones finish up to ``deadline``, then hang up and close the rest.

        Run it on the server's event loop. Returns a :class:`~voice_runtime.server.drain.DrainReport`.
        """
        from voice_runtime.server.drain import drain

        return await drain(self, deadline, **kwargs)

    async def close_all(self, code: int = 1012) -> None:
        """Close every live stream (shutdown)."""
        await asyncio.gather(*(c.wire.close(code, "server shutdown") for c in list(self.connections)), return_exceptions=True)


def running(server: VoiceServer, **kwargs: Any) -> Any:
    """``with running(server) as handle:`` — prior helper, now in :mod:`voice_runtime.server.runners`."""
    from voice_runtime.server.runners import running as _running

    return _running(server, **kwargs)
