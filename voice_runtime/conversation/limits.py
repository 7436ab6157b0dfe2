"""Idle handling and a maximum call duration, per call: remind, say goodbye, end the call politely.

::

    session.apply_limits(idle_timeout=8, idle_prompts=["Are you still there?"],
                         idle_goodbye="I'll let you go. Goodbye!", max_duration=600)

or for every call of a server: ``VoiceServer(on_call_started=lambda s: s.apply_limits(idle_timeout=8))``.

**Idle** means: the caller has done nothing (no speech start, partial, utterance or key; a caller in the middle
of an utterance is not idle) *and* the agent has not been speaking, for ``idle_timeout`` seconds. Then the next of ``idle_prompts`` is spoken; the clock restarts
once it has been played. When the prompts are used up and the caller is still silent, ``idle_goodbye`` is spoken
and the call ends with reason ``idle``. Any caller activity resets both the clock and the prompts.

**Max duration**: ``max_duration`` seconds after the limits were applied (the call's start when applied from
``on_call_started``), the agent's audio is cleared, ``max_duration_goodbye`` is spoken and the call ends with
reason ``max_duration``.

Both are visible as events (``idle_prompt``, ``idle_timeout``, ``max_duration_reached``) and as the call's end
reason. Why a watcher thread per call and not a timer on the event loop: the goodbye is a blocking ``speak``
(synthesis, then the mark), which must never run on the loop; the thread sleeps on a condition with a
deadline and wakes on the call's events, so it costs nothing while the call is busy.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from voice_runtime import call_events as ev
from voice_runtime.errors import ConfigError
from voice_runtime.lifecycle import EndReason

if TYPE_CHECKING:
    from voice_runtime.session import VoiceSession

log = logging.getLogger(__name__)

IDLE_PROMPT = "idle_prompt"
IDLE_TIMEOUT = "idle_timeout"
MAX_DURATION_REACHED = "max_duration_reached"
END_IDLE = EndReason.IDLE
END_MAX_DURATION = EndReason.MAX_DURATION

#: A caller who started talking is not idle until the utterance is committed — for at most this long.
MAX_UTTERANCE = 15.0
#: Events that show the caller is there: they reset the idle clock and the reminders.
CALLER_ACTIVITY = frozenset({ev.STT_SPEECH_STARTED, ev.STT_PARTIAL, ev.STT_FINAL, ev.DTMF_RECEIVED})
#: Events of the agent's own speech: the idle clock restarts from them (nobody is idle while we talk).
AGENT_ACTIVITY = frozenset({ev.TTS_START, ev.TTS_END, ev.MARK_PLAYED, ev.MARK_CLEARED})


@dataclass(frozen=True, slots=True)
class CallLimits:
    idle_timeout: float | None = None
    idle_prompts: Sequence[str] = ("Are you still there?",)
    idle_goodbye: str | None = "I haven't heard from you, so I'll end the call now. Goodbye."
    max_duration: float | None = None
    max_duration_goodbye: str | None = "We have reached the time limit for this call. Goodbye."
    goodbye_timeout: float = 15.0  # bound on waiting for a goodbye to be played

    def __post_init__(self) -> None:
        for name in ("idle_timeout", "max_duration"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name} must be positive seconds or None, got {value!r}")
        if isinstance(self.idle_prompts, str):
            raise ConfigError("idle_prompts must be a list of strings, not one string")


class LimitsWatcher:
    """Enforces one call's :class:`CallLimits`; started by :meth:`ConversationHelpers.apply_limits`."""

    def __init__(self, session: VoiceSession, limits: CallLimits) -> None:
        self.session = session
        self.limits = limits
        self.cond = threading.Condition()
        now = time.monotonic()
        self.started_at = now
        self.idle_since = now
        self.prompts_used = 0
        self.caller_talking_since: float | None = None  # speech started, not yet committed: not idle
        self.stopped = False
        self.ended_by: str | None = None
        self._unsubscribe = session.add_event_listener(self._on_event)
        self.thread = threading.Thread(target=self._run, name=f"limits-{session.call_sid}", daemon=True)
        self.thread.start()

    def _on_event(self, event: Any) -> None:
        kind = event.kind
        with self.cond:
            if kind in CALLER_ACTIVITY:
                self.idle_since, self.prompts_used = event.at, 0
                if kind == ev.STT_SPEECH_STARTED:
                    self.caller_talking_since = event.at
                elif kind == ev.STT_FINAL:
                    self.caller_talking_since = None
            elif kind in AGENT_ACTIVITY:
                self.idle_since = max(self.idle_since, event.at)
            elif kind == ev.CALL_ENDED:
                self.stopped = True
            else:
                return
            self.cond.notify_all()

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()
        self._unsubscribe()

    def _next_deadline(self) -> tuple[float | None, str | None]:
        limits, candidates = self.limits, []
        if limits.max_duration is not None:
            candidates.append((self.started_at + limits.max_duration, END_MAX_DURATION))
        if limits.idle_timeout is not None:
            base = self.idle_since
            if self.caller_talking_since is not None:  # mid-utterance; bounded, for an STT that never commits
                base = max(base, self.caller_talking_since + MAX_UTTERANCE)
            candidates.append((base + limits.idle_timeout, END_IDLE))
        return min(candidates) if candidates else (None, None)

    def _run(self) -> None:
        try:
            while True:
                with self.cond:
                    while True:
                        if self.stopped or self.session.is_disconnected:
                            return
                        deadline, which = self._next_deadline()
                        if deadline is None:
                            return
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            if which == END_IDLE and self.session.agent_speaking:  # our own audio still plays
                                self.idle_since = time.monotonic()
                                continue
                            break
                        self.cond.wait(remaining)
                if which == END_MAX_DURATION:
                    self._end(MAX_DURATION_REACHED, END_MAX_DURATION, self.limits.max_duration_goodbye, clear=True)
                    return
                if self.prompts_used < len(self.limits.idle_prompts):
                    prompt = self.limits.idle_prompts[self.prompts_used]
                    with self.cond:
                        self.prompts_used += 1
                        self.idle_since = time.monotonic()
                    self.session.log.emit(IDLE_PROMPT, number=self.prompts_used, text=prompt)
                    self.session.speak(prompt)
                    continue
                self._end(IDLE_TIMEOUT, END_IDLE, self.limits.idle_goodbye, clear=False)
                return
        except Exception:  # a limit must never crash silently *and* never keep a call alive
            log.exception("call limits watcher failed on call %s", self.session.call_sid)
        finally:
            self._unsubscribe()

    def _end(self, event: str, reason: str, goodbye: str | None, *, clear: bool) -> None:
        session = self.session
        self.ended_by = reason
        session.log.emit(event, after=time.monotonic() - self.started_at)
        if clear:
            session.request_clear_buffer()
        if goodbye and not session.is_disconnected:
            previous = session.barge_in
            session.barge_in = False  # the goodbye is said in full
            try:
                session.speak(goodbye, wait=True, timeout=self.limits.goodbye_timeout)
            finally:
                session.barge_in = previous
        end_call(session, reason)


def end_call(session: VoiceSession, reason: str) -> None:
    """Hang up with ``reason`` as the call's end reason (REST hangup + close through the transport)."""
    session.request_disconnect(reason=reason)


__all__ = [
    "AGENT_ACTIVITY",
    "CALLER_ACTIVITY",
    "END_IDLE",
    "END_MAX_DURATION",
    "IDLE_PROMPT",
    "IDLE_TIMEOUT",
    "MAX_DURATION_REACHED",
    "CallLimits",
    "LimitsWatcher",
    "end_call",
]
