"""Which session a stream belongs to.

Outbound calls are dialled before their media stream exists, so the session is created first and bound to a
single-use, unguessable token carried in the stream URL path (``/stream/{token}``). The token is checked
*before* the WebSocket is accepted: an unknown, expired or reused token never creates session state. The
token also records the carrier the stream will speak, so routed streams never guess their dialect.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field

from voice_runtime.server.token_guard import revoke_when_ended
from voice_runtime.session import VoiceSession


@dataclass
class _Pending:
    session: VoiceSession
    expires_at: float
    carrier: str | None


@dataclass
class CallRegistry:
    """Thread-safe: tokens are issued from flow threads and claimed on the event loop."""

    token_ttl: float = 600.0
    _pending: dict[str, _Pending] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def issue_token(self, session: VoiceSession, carrier: str | None = None) -> str:
        """Bind a fresh single-use token to ``session`` (and the carrier whose stream will use it)."""
        token = secrets.token_urlsafe(18)
        now = time.monotonic()
        with self._lock:
            self._prune(now)
            self._pending[token] = _Pending(session, now + self.token_ttl, carrier or session.carrier)
        revoke_when_ended(self, session, token)  # whatever ends the call first, the token dies with it
        return token

    def peek(self, token: str) -> bool:
        """Is ``token`` valid right now? (Checked before accepting the socket.)"""
        with self._lock:
            pending = self._pending.get(token)
            return pending is not None and pending.expires_at > time.monotonic()

    def claim(self, token: str) -> VoiceSession | None:
        """Consume ``token``; returns its session, or None if unknown, expired or already used."""
        claimed = self.claim_with_carrier(token)
        return None if claimed is None else claimed[0]

    def claim_with_carrier(self, token: str) -> tuple[VoiceSession, str | None] | None:
        with self._lock:
            pending = self._pending.pop(token, None)
        if pending is None or pending.expires_at <= time.monotonic():
            return None
        if pending.session.is_disconnected:  # its call ended (timed out, hung up) before the stream came
            return None
        return pending.session, pending.carrier

    def revoke(self, token: str) -> None:
        with self._lock:
            self._pending.pop(token, None)

    @property
    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    def _prune(self, now: float) -> None:
        expired = [t for t, p in self._pending.items() if p.expires_at <= now]
        for token in expired:
            del self._pending[token]
