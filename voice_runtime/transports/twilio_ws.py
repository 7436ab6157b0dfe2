"""Prior-art single-session WebSocket route: ``register_voice_websocket(app, session)``.

New code should use :class:`voice_runtime.server.VoiceServer`, which gives every call its own session. This
route keeps the 0.1.x style working: one long-lived session, served at ``/voice``; when a new stream arrives
after the previous call ended, the session is ``reset()`` first. A :class:`VoiceSession` runs the same
carrier-neutral loop as the server (Twilio and Plivo auto-detected); a session-like object of your own is
driven through the 0.1.x transport-side methods (:mod:`voice_runtime.compat.legacy_stream`).

What 0.1.x callers rely on, kept here:

* **Signature check (NC-283)** on the upgrade: with ``TWILIO_AUTH_TOKEN`` set, ``X-Twilio-Signature`` must
  match ``VOICE_STREAM_URL`` (as ``wss://``) + the path, or the URL the request actually arrived on. It runs
  *before* the WebSocket is accepted: a forged upgrade is refused (close 1008) and never touches the
  session. Without a token the check is skipped with a warning, and ``TWILIO_SKIP_SIGNATURE_VALIDATION=1``
  skips it on purpose — both development-only; :class:`VoiceServer` fails closed instead.
* **REST-first hangup (VR-003, VR-007)**: ``session.request_disconnect()`` first ends the call over REST,
  off the event loop, with :data:`hangup_call` (looked up at call time, so it can be replaced), in the
  explicit ``hangup_regions`` when given (validated here, at registration) or with the ambient
  ``TWILIO_ACCOUNT_SID``/``TWILIO_AUTH_TOKEN``. Twilio then closes the stream from its side; only if REST
  failed, was impossible (no credentials, no CallSid) or Twilio did not close within
  :data:`REST_CLOSE_WAIT_S` does the server close the socket (1000) — once.
* **Live monitor**: ``VOICE_MONITOR=1`` plays both sides of each call through ``ffplay``
  (:mod:`voice_runtime.audio.monitor`), fed by the same taps as the recorder.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, WebSocket

from voice_runtime import call_events as ev
from voice_runtime.audio.monitor import monitor_enabled, monitor_factory
from voice_runtime.compat.legacy_stream import CallbackWire, opening_dialect, serve_session_like
from voice_runtime.protocols import Dialect, StreamStarted
from voice_runtime.server.connection import CallConnection, ConnectionConfig
from voice_runtime.session import VoiceSession
from voice_runtime.transports import twilio_call
from voice_runtime.transports.twilio_call import hangup_call  # noqa: F401  (the 0.1.x seam; replaceable)
from voice_runtime.transports.twilio_regions import TwilioRegion
from voice_runtime.transports.twilio_security import SIGNATURE_HEADER, reconstruct_url, skip_requested

log = logging.getLogger(__name__)

UpgradeGuard = Callable[[WebSocket], Awaitable[bool]]

#: Seconds to wait, after a successful REST hangup, for Twilio to close the stream before closing it ourselves.
REST_CLOSE_WAIT_S = 5.0


async def prior_art_signature_guard(websocket: Any) -> bool:
    """0.1.x upgrade rule (see module doc). True: let the upgrade through."""
    if skip_requested():
        return True
    token = os.environ.get("TWILIO_AUTH_TOKEN")
    if not token:
        log.warning("TWILIO_AUTH_TOKEN is not set: media stream upgrade on %s accepted WITHOUT signature check",
                    getattr(getattr(websocket, "url", None), "path", "/voice"))
        return True
    headers = getattr(websocket, "headers", None) or {}
    signature = headers.get(SIGNATURE_HEADER) if hasattr(headers, "get") else None
    if not signature:
        log.warning("refused media stream upgrade: no X-Twilio-Signature")
        return False
    from twilio.request_validator import RequestValidator

    validator = RequestValidator(token)
    scope = getattr(websocket, "scope", None)
    path = scope.get("path", "/voice") if isinstance(scope, dict) else "/voice"
    candidates = []
    base = os.environ.get("VOICE_STREAM_URL")
    if base:
        candidates.append(twilio_call.to_ws_url(base.strip()).rstrip("/") + path)
    if isinstance(scope, dict):
        candidates.append(reconstruct_url(scope, headers, websocket=True))
    if any(validator.validate(url, {}, signature) for url in candidates):
        return True
    log.warning("refused media stream upgrade on %s: X-Twilio-Signature does not match", path)
    return False


def rest_first_hangup(regions: tuple[TwilioRegion, ...] | None) -> Callable[[VoiceSession], Awaitable[None]]:
    """The VR-003/VR-007 hangup hook: REST off-loop, then a bounded wait for the carrier's own close.

    Returns normally in every case; the connection then closes the socket itself unless the carrier already
    did (the wire remembers), which is exactly the 0.1.x fallback.
    """

    async def hang_up(session: VoiceSession) -> None:
        call_sid = session.call_sid
        ambient = bool(os.environ.get("TWILIO_ACCOUNT_SID") and os.environ.get("TWILIO_AUTH_TOKEN"))
        if not call_sid or not (regions or ambient):
            log.info("no REST hangup possible (call sid: %s, credentials: %s); closing the stream",
                     bool(call_sid), bool(regions or ambient))
            return
        loop = asyncio.get_running_loop()
        closed = asyncio.Event()

        def on_event(event: Any) -> None:
            if event.kind == ev.CALL_ENDED:
                loop.call_soon_threadsafe(closed.set)

        unsubscribe = session.add_event_listener(on_event)
        try:
            seam = globals()["hangup_call"]  # looked up now: 0.1.x code and tests replace it
            try:
                if regions is not None:
                    await asyncio.to_thread(seam, call_sid, regions=regions)
                else:
                    await asyncio.to_thread(seam, call_sid)
            except Exception as exc:
                log.warning("REST hangup of %s failed (%s); closing the stream instead", call_sid, type(exc).__name__)
                return
            if session.is_disconnected:
                return
            try:
                await asyncio.wait_for(closed.wait(), REST_CLOSE_WAIT_S)
            except asyncio.TimeoutError:
                log.warning("Twilio did not close the stream of %s within %.1fs after the REST hangup; closing it",
                            call_sid, REST_CLOSE_WAIT_S)
        finally:
            unsubscribe()

    return hang_up


#: How long a new stream on a single-session route waits for the previous, already ended call's teardown.
PREVIOUS_TEARDOWN_WAIT_S = 5.0


def register_voice_websocket(
    app: FastAPI,
    session: Any,
    *,
    hangup_regions: tuple[TwilioRegion, ...] | None = None,
    path: str = "/voice",
    hangup: Callable[[VoiceSession], Awaitable[None]] | None = None,
    upgrade_guard: UpgradeGuard | None = None,
    config: ConnectionConfig | None = None,
    **_legacy: Any,
) -> None:
    """Serve ``session`` on ``path``. One stream at a time; a second concurrent stream is refused (1013).

    ``hangup_regions`` (0.1.15) is validated now — a bad tuple raises ``ValueError`` before any route exists.
    ``hangup`` replaces the REST-first hangup, ``upgrade_guard`` the 0.1.x signature rule.
    """
    regions = None if hangup_regions is None else twilio_call._validated_regions(hangup_regions)
    hangup_hook = hangup or rest_first_hangup(regions)
    guard = upgrade_guard or prior_art_signature_guard
    busy = {"active": False}
    idle: list[asyncio.Event] = []  # set while no stream is served; made on the loop at the first upgrade

    @app.websocket(path)
    async def voice_websocket(websocket: WebSocket) -> None:
        if not await guard(websocket):
            await websocket.close(code=1008)
            return
        if not idle:
            idle.append(asyncio.Event())
            idle[0].set()
        if busy["active"] and isinstance(session, VoiceSession) and session.is_disconnected:
            # The previous call has ended (its flow saw the disconnect) but its connection is still tearing down
            # (STT stop, recorder close): the next call is not concurrent, so it waits for that, bounded.
            try:
                await asyncio.wait_for(idle[0].wait(), PREVIOUS_TEARDOWN_WAIT_S)
            except asyncio.TimeoutError:
                pass
        if busy["active"]:
            log.warning("refusing a second concurrent stream on single-session route %s", path)
            await websocket.close(code=1013)
            return
        busy["active"] = True
        idle[0].clear()
        try:
            await websocket.accept()
            wire = CallbackWire(websocket)
            if not isinstance(session, VoiceSession):
                await serve_session_like(wire, session)
                return
            if session.is_disconnected:
                session.reset()

            async def session_for(started: StreamStarted, dialect: Dialect) -> VoiceSession:
                return session

            monitor = monitor_factory() if monitor_enabled() else None  # VOICE_MONITOR=1: hear the call live
            dialect = await opening_dialect(wire)
            await CallConnection(
                wire, session_for, config=config, hangup=hangup_hook, recorder_factory=monitor, dialect=dialect
            ).run()
        finally:
            busy["active"] = False
            idle[0].set()


__all__ = ["REST_CLOSE_WAIT_S", "hangup_call", "prior_art_signature_guard", "register_voice_websocket", "rest_first_hangup"]
