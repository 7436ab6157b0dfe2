"""The one admission path for media-stream upgrades, used by every server mode.

FastAPI mode, websockets-native mode and the prior art's compatibility route all ask the same question
before a WebSocket is accepted — *may this upgrade become a call, and whose?* — and must answer it the same
way, before any session state exists:

1. **Route.** ``/stream`` is an inbound stream (a fresh session per connection); ``/stream/{token}`` belongs to
   the session that was issued the token (a call we dialled, or one a webhook answered). An unknown, expired
   or used token is refused here.
2. **Draining and capacity.** A draining server refuses new streams (the carrier retries elsewhere); a server at
   ``limits.max_calls`` refuses them with 503 + ``Retry-After``.
3. **Signatures.** Every registered carrier validator runs; one must say yes. An upgrade with no carrier
   signature is refused unless unsigned streams are allowed (:mod:`voice_runtime.server.stream_policy`:
   never by default once a public https/wss URL is configured; logged once at startup).
4. **Claim.** Only now is a token consumed, so a refused upgrade never burns the real call's token.

Which dialect the stream speaks is bound here too: by the token's carrier for routed streams; only the bare
``/stream`` route detects it from the first message.

The result is an :class:`Admitted` (what to run) or a :class:`Refused` (the HTTP status to answer: 403 for a
failed check or while draining, 404 for an unknown path). Each mode turns a refusal into its own response.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from voice_runtime.protocols import Dialect, StreamStarted, get_dialect
from voice_runtime.server.provider_setup import report_setup_failure
from voice_runtime.session import VoiceSession

if TYPE_CHECKING:  # pragma: no cover
    from voice_runtime.server.app import VoiceServer

log = logging.getLogger(__name__)

__all__ = ["UpgradeRequest", "HandshakeView", "Admitted", "Refused", "admit_stream", "admit_stream_sync", "stream_path_token"]


class UpgradeRequest(Protocol):
    """What the checks read: Starlette's ``WebSocket`` before ``accept()``, or the native mode's adapter."""

    @property
    def headers(self) -> Any: ...

    @property
    def url(self) -> Any: ...

    @property
    def scope(self) -> Any: ...


class HandshakeView:
    """What a validator reads (``headers``, ``url``, ``scope``), built from any library's raw handshake.

    The validators were written against Starlette's ``WebSocket`` before ``accept()``; this offers the same
    attributes (an ASGI-shaped ``scope``, case-insensitive ``headers``, ``url``) for the server modes that do
    not run Starlette, and a ``close()`` that records a refusal instead of sending anything (the handshake is
    answered with 403 by the mode itself).
    """

    def __init__(
        self,
        target: str,
        headers: list[tuple[str, str]],
        *,
        client: tuple[str, int] | None = None,
        server: tuple[str, int] | None = None,
    ) -> None:
        from urllib.parse import unquote

        from starlette.datastructures import URL, Headers

        path, _, query = target.partition("?")
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        self.scope: dict[str, Any] = {
            "type": "websocket",
            "scheme": "ws",
            "server": server or ("127.0.0.1", 0),
            "client": client or ("", 0),
            "path": unquote(path),
            "raw_path": path.encode("latin-1"),
            "query_string": query.encode("latin-1"),
            "root_path": "",
            "headers": raw,
        }
        self.headers = Headers(raw=raw)
        self.url = URL(scope=self.scope)
        self.close_code: int | None = None

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.close_code = code


SessionFor = Callable[[StreamStarted, Dialect], Awaitable[VoiceSession | None]]


@dataclass(frozen=True)
class Admitted:
    """An upgrade that may become a call: how to find its session, what to run once it starts."""

    session_for: SessionFor
    on_started: Callable[[VoiceSession], None] | None
    dialect: Dialect | None  # None: detect from the first message (the bare /stream route only)


@dataclass(frozen=True)
class Refused:
    status: int  # the HTTP status a not-yet-accepted upgrade is answered with
    reason: str


def stream_path_token(path: str, prefix: str) -> str | None | bool:
    """``None`` for the inbound route, the token for a routed one, ``False`` for any other path."""
    if path == f"{prefix}/stream":
        return None
    routed = f"{prefix}/stream/"
    if path.startswith(routed):
        token = path[len(routed) :]
        if token and "/" not in token:
            return token
    return False


async def admit_stream(server: VoiceServer, request: UpgradeRequest, token: str | None) -> Admitted | Refused:
    """Run every check for one upgrade (see the module docstring). Never raises."""
    if token is not None and server.route_guard is not None and (misdirected := server.route_guard(token)) is not None:
        return Refused(421, misdirected)  # another worker's stream (server/workers.py): say whose
    if token is not None and not server.registry.peek(token):
        log.warning("refused stream upgrade with unknown, expired or used token")
        return Refused(403, "unknown stream token")
    if not server.accepting:
        return Refused(403, "draining")  # answered like every refusal: the carrier fails over
    if server.at_call_capacity():  # counted and logged (rate-limited) by the server
        return Refused(503, "at max_calls")  # answered 503 + Retry-After by each mode
    verdict = await _check_signatures(server, request)
    if verdict is not None:
        return verdict
    if token is None:
        return Admitted(_fresh_session(server), _start_inbound_flow(server), None)
    claimed = server.registry.claim_with_carrier(token)
    if claimed is None:  # raced with another upgrade for the same token
        return Refused(403, "stream token already used")
    session, carrier = claimed

    async def routed(started: StreamStarted, dialect: Dialect) -> VoiceSession:
        return session

    dialect = get_dialect(carrier) if carrier else None
    return Admitted(routed, None, dialect)


def admit_stream_sync(server: VoiceServer, request: UpgradeRequest, token: str | None) -> Admitted | Refused:
    """:func:`admit_stream` for socket libraries whose handshake hook is synchronous (picows).

    Every check is CPU-only (token lookup, HMAC signatures), so the coroutine completes without suspending;
    it is driven to completion here. A validator that does await I/O cannot be used this way: the upgrade is
    then refused (503) with a log line saying so, never accepted unchecked.
    """
    coro = admit_stream(server, request, token)
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    log.error("an upgrade validator awaited I/O; this server mode needs validators that decide without I/O")
    return Refused(503, "validator needs I/O")


async def _check_signatures(server: VoiceServer, request: UpgradeRequest) -> Refused | None:
    verdicts: list[bool | None] = []
    for carrier, validator in server.upgrade_validators.items():
        try:
            verdict = await validator(request)  # type: ignore[arg-type]
        except Exception:
            log.exception("%s upgrade validator failed", carrier)
            verdict = False
        if verdict is True:
            return None
        verdicts.append(verdict)
    if False in verdicts:
        server.observer.signature_rejected("invalid")
        log.warning("refused stream upgrade: invalid carrier signature")
        return Refused(403, "invalid signature")
    if not server.unsigned_streams_allowed():
        server.observer.signature_rejected("missing")
        log.warning("refused stream upgrade: no carrier signature")
        return Refused(403, "no signature")
    server.note_unsigned_stream()
    return None


def _fresh_session(server: VoiceServer) -> SessionFor:
    async def session_for(started: StreamStarted, dialect: Dialect) -> VoiceSession | None:
        from voice_runtime.server.connection import SessionUnavailable

        # Replay safety (server/stream_tickets.py): one session per CallSid ever, and a valid per-call ticket
        # when the server requires one. A refusal closes 1008 before any session exists.
        params = dict(started.custom_parameters or {})
        if not server.start_guard.admit(started.call_id, params, server.stream_tickets):
            return None
        try:
            return server.new_session()
        except Exception as exc:  # a provider factory raised: this call cannot be set up
            report_setup_failure(server, started.call_id, exc)  # counter, event, one traceback
            raise SessionUnavailable(f"{type(exc).__name__}: {exc}") from exc

    return session_for


def _start_inbound_flow(server: VoiceServer) -> Callable[[VoiceSession], None]:
    def on_started(session: VoiceSession) -> None:
        if server.inbound_flow is not None:
            server.start_flow(session, server.inbound_flow)

    return on_started
