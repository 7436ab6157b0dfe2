"""A stream token dies with its call, on every path, for every carrier.

A single-use token binds a stream URL to a session before the stream exists. If the call ends first (the
carrier's stream never came within ``inbound_connect_timeout``, a busy signal, a hangup callback, a failed
dial, a drain), a late upgrade carrying that token must be refused — otherwise it would be accepted and given
an STT session for a call whose flow is gone. Rather than revoking by hand on each failure path of each
carrier (and missing one), the registry subscribes to the session's ``call_ended`` event when it issues the
token: whatever ends the call, the token goes with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from voice_runtime.call_events import CALL_ENDED

if TYPE_CHECKING:  # pragma: no cover
    from voice_runtime.server.registry import CallRegistry
    from voice_runtime.session import VoiceSession


def revoke_when_ended(registry: CallRegistry, session: VoiceSession, token: str) -> None:
    """Revoke ``token`` the moment ``session`` reports its end (a no-op once the stream claimed it)."""
    unsubscribe: Any = None

    def on_event(event: Any) -> None:
        if event.kind == CALL_ENDED:
            registry.revoke(token)
            if unsubscribe is not None:
                unsubscribe()

    unsubscribe = session.add_event_listener(on_event)
    if session.is_disconnected:  # ended before we subscribed
        registry.revoke(token)


__all__ = ["revoke_when_ended"]
