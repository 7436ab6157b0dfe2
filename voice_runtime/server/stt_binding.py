"""The one owner of a call's STT provider: it builds, binds, starts and stops it.

Before, three parties owned one object: the connection built the STT from session fields, the session then
overwrote the provider's callbacks, and the connection started and stopped it. Now this binding does all of
it, in one place and in this order:

1. **build** (synchronously, inside ``attach_stream``'s ``before_live``, so ``session.stt`` exists the moment
   a flow is told the call is live): the session's ``stt`` if set, else ``stt_factory()`` — with
   ``stt_secondary_factory()`` an :class:`~voice_runtime.stt_tee.SttTee` — then ``on_stt_ready(stt)``;
2. **bind**: the provider's callbacks (the prior art's ``on_committed`` / ``on_recognizing`` / ``on_error``,
   plus ``on_speech_started`` / ``on_speech_ended`` where the provider has them) are set *once, by the owner,
   before start* to forward into the session's public STT sink (``receive_transcript``, ``receive_partial``,
   ``receive_stt_error``, ``caller_speech_started``, ``caller_speech_ended``). A callback the user had set
   already still runs, after the session's;
3. **start** on the event loop with the session's inbound queue; a failure is reported once (event, counter,
   the provider's ``on_error``) and the call continues without recognition. A provider with ``feed_audio``
   then takes caller audio inline (``VoiceSession.feed_stt_inline``): no queue hop per frame;
4. **stop**, bounded by a timeout, when the call ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from voice_runtime import call_events as ev
from voice_runtime.session import VoiceSession

log = logging.getLogger(__name__)

__all__ = ["SttBinding"]

#: provider attribute → the session's sink method it forwards to.
_CALLBACKS = {
    "on_committed": "receive_transcript",
    "on_recognizing": "receive_partial",
    "on_error": "receive_stt_error",
    "on_speech_started": "caller_speech_started",
    "on_speech_ended": "caller_speech_ended",
}
_ZERO_ARG = frozenset({"on_speech_started"})
_OPTIONAL_ARG = frozenset({"on_speech_ended"})  # called with the estimated end of speech, or with nothing


class SttBinding:
    def __init__(self, session: VoiceSession) -> None:
        self.session = session
        self.stt: Any = None

    def build(self) -> None:
        """Create and bind the provider (never raises: a failure is reported and the call goes on)."""
        session = self.session
        stt = session.stt
        try:
            if stt is None and session.stt_factory is not None:
                stt = session.stt_factory()
                if session.stt_secondary_factory is not None:
                    from voice_runtime.stt_tee import SttTee

                    stt = SttTee(stt, session.stt_secondary_factory())
            if stt is None:
                return
            if session.on_stt_ready is not None:
                session.on_stt_ready(stt)
            self._bind(stt)
            self.stt = session.stt = stt
        except Exception as exc:
            self._failed(stt, exc)
            session.stt = None

    def _bind(self, stt: Any) -> None:
        session = self.session
        for attribute, sink_name in _CALLBACKS.items():
            sink = getattr(session, sink_name)
            user = getattr(stt, attribute, None)
            if attribute in ("on_speech_started", "on_speech_ended") and not _accepts(stt, attribute):
                continue
            callback: Callable[..., None]
            if attribute in _ZERO_ARG:
                callback = _chain0(sink, user)
            elif attribute in _OPTIONAL_ARG:
                callback = _chain_optional(sink, user)
            else:
                callback = _chain1(sink, user)
            try:
                setattr(stt, attribute, callback)
            except AttributeError:  # a provider with __slots__ that does not offer this signal
                pass

    async def start(self) -> None:
        stt = self.stt
        if stt is None:
            return
        try:
            await stt.start(self.session.inbound)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failed(stt, exc)
            return
        feed = getattr(stt, "feed_audio", None)
        if callable(feed):
            self.session.feed_stt_inline(feed)

    async def stop(self, timeout: float) -> None:
        stt = self.stt
        if stt is None:
            return
        try:
            await asyncio.wait_for(stt.stop(), timeout)
        except Exception:
            log.exception("STT stop failed")

    def _failed(self, stt: Any, exc: Exception) -> None:
        log.exception("STT failed to start; the call continues without speech recognition")
        session = self.session
        session.stats["stt_start_failed"] += 1
        session.log.emit(ev.PROVIDER_ERROR, provider="stt", error=f"{type(exc).__name__}: {exc}")
        on_error = getattr(stt, "on_error", None) if stt is not None else None
        if on_error is not None:
            try:
                on_error(f"stt_start_failed: {exc}")
            except Exception:
                log.exception("stt on_error failed")


def _accepts(stt: Any, attribute: str) -> bool:
    """Optional signals are bound only on providers that declare them (an attribute, even None)."""
    return hasattr(stt, attribute) or hasattr(type(stt), attribute)


def _chain1(sink: Callable[[str], None], user: Callable[[str], None] | None) -> Callable[[str], None]:
    if user is None:
        return sink

    def both(value: str) -> None:
        sink(value)
        user(value)

    return both


def _chain0(sink: Callable[[], None], user: Callable[[], None] | None) -> Callable[[], None]:
    if user is None:
        return sink

    def both() -> None:
        sink()
        user()

    return both


def _chain_optional(sink: Callable[..., None], user: Callable[..., None] | None) -> Callable[..., None]:
    """``on_speech_ended(ended_at=None)``: providers pass the estimated end of speech (or nothing)."""

    def forward(*args: Any) -> None:
        sink(*args[:1])
        if user is not None:
            user(*args[:1])

    return forward
