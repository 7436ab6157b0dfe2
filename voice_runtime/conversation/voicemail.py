"""``leave_voicemail``: wait for the answering machine's greeting to end, play the message, hang up.

::

    with twilio.call(number, machine_detection="DetectMessageEnd") as session:
        if session.answered_by_or_none(timeout=6) == "human":
            session.speak("Hi! This is a reminder about your appointment tomorrow.", wait=True)
        else:
            session.leave_voicemail("Hello, this is a reminder about your appointment tomorrow at nine.")

What counts as "the greeting has ended", first one wins:

* the carrier's answer: Twilio ``DetectMessageEnd`` reports ``AnsweredBy=machine_end_beep`` /
  ``machine_end_silence`` / ``machine_end_other`` on the async AMD callback;
* ``human`` (Twilio or Plivo async AMD ``Machine=false``): nobody will beep; the message is played at once
  (``if_human="return"`` returns instead, so the flow can talk to the person);
* the beep itself, heard on the caller's audio by :class:`~voice_runtime.conversation.beep.BeepDetector`
  (the fallback for Plivo, whose async AMD only says *that* it is a machine, and for Twilio ``Enable``);
* a greeting followed by ``silence_ms`` of quiet (machines that do not beep);
* ``timeout``: the message is played anyway (a partial recording beats none) and the result says so.

Barge-in is off while the message plays: the machine's own noises must not clear it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from voice_runtime import call_events as ev
from voice_runtime.conversation.beep import Beep, BeepDetector, GreetingEndDetector
from voice_runtime.errors import CallHangupError, CallTimeoutError, ConfigError
from voice_runtime.marks import MarkOutcome

if TYPE_CHECKING:
    from voice_runtime.session import VoiceSession

#: Twilio DetectMessageEnd results that mean "the greeting is over, record now".
MACHINE_END = frozenset({"machine_end_beep", "machine_end_silence", "machine_end_other"})
VOICEMAIL_GREETING_ENDED = "voicemail_greeting_ended"
VOICEMAIL_LEFT = "voicemail_left"


class GreetingEnd(StrEnum):
    """Why :func:`leave_voicemail` decided to start the message."""

    MACHINE_END_BEEP = "machine_end_beep"
    MACHINE_END_SILENCE = "machine_end_silence"
    MACHINE_END_OTHER = "machine_end_other"
    HUMAN = "human"
    BEEP = "beep"
    SILENCE = "silence"
    TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class VoicemailResult:
    """``reason``: what ended the wait; ``waited``: seconds spent waiting for it; ``outcome``: the message's
    mark (PLAYED = the machine got all of it), None when nothing was played (``if_human="return"``)."""

    reason: GreetingEnd
    answered_by: str | None
    waited: float
    beep: Beep | None
    outcome: MarkOutcome | None
    hung_up: bool

    @property
    def delivered(self) -> bool:
        return self.outcome is MarkOutcome.PLAYED


class _GreetingWatch:
    """Collects the first end-of-greeting signal from AMD events and the caller's audio."""

    def __init__(self, session: VoiceSession, *, frequencies: Sequence[float], detect_beep: bool, silence_ms: int | None) -> None:
        self.session = session
        self.cond = threading.Condition()
        self.reason: GreetingEnd | None = None
        self.beep: Beep | None = None
        self.ended = False
        self._beeps = BeepDetector(frequencies) if detect_beep else None
        self._silence = GreetingEndDetector(silence_ms=silence_ms) if silence_ms else None
        self._unsubscribe_events = session.add_event_listener(self._on_event)
        self._unsubscribe_audio = session.add_audio_listener(self._on_audio) if (self._beeps or self._silence) else None
        self.offer_answered_by(session.answered_by)

    def offer_answered_by(self, answered_by: str | None) -> None:
        if answered_by in MACHINE_END:
            self._finish(GreetingEnd(answered_by))
        elif answered_by == "human":
            self._finish(GreetingEnd.HUMAN)

    def _on_event(self, event: Any) -> None:
        if event.kind == ev.ANSWERED_BY:
            self.offer_answered_by(event.data.get("answered_by"))
        elif event.kind == ev.CALL_ENDED:
            with self.cond:
                self.ended = True
                self.cond.notify_all()

    def _on_audio(self, ulaw: bytes) -> None:  # on the event loop, per caller frame: cheap and never raises
        if self.reason is not None:
            return
        if self._beeps is not None:
            beep = self._beeps.feed(ulaw)
            if beep is not None:
                self.beep = beep
                self._finish(GreetingEnd.BEEP)
                return
        if self._silence is not None and self._silence.feed(ulaw):
            self._finish(GreetingEnd.SILENCE)

    def _finish(self, reason: GreetingEnd) -> None:
        with self.cond:
            if self.reason is None:
                self.reason = reason
            self.cond.notify_all()

    def wait(self, timeout: float) -> GreetingEnd:
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.reason is None:
                if self.ended or self.session.is_disconnected:
                    raise CallHangupError("call ended while waiting for the voicemail greeting", call_id=self.session.call_sid)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.reason = GreetingEnd.TIMEOUT
                    break
                self.cond.wait(remaining)
            return self.reason

    def close(self) -> None:
        self._unsubscribe_events()
        if self._unsubscribe_audio is not None:
            self._unsubscribe_audio()


def leave_voicemail(
    session: VoiceSession,
    message: str | bytes,
    *,
    timeout: float = 30.0,
    detect_beep: bool = True,
    beep_frequencies: Sequence[float] = (1000.0,),
    silence_ms: int | None = 2000,
    if_human: str = "play",
    play_timeout: float = 120.0,
    hangup: bool = True,
) -> VoicemailResult:
    """Wait for the greeting to end (see the module docstring), play ``message`` (text for the session's TTS,
    or μ-law 8 kHz bytes), wait until it has been played, then hang up (``hangup=False`` keeps the call).

    Raises :class:`CallHangupError` if the call ends before the message starts. ``timeout`` bounds the wait
    for the greeting's end, ``play_timeout`` the wait for the message's playback.
    """
    if if_human not in ("play", "return"):
        raise ConfigError(f"if_human must be 'play' or 'return', got {if_human!r}")
    if isinstance(message, str) and not message.strip() or not message:
        raise ConfigError("leave_voicemail needs a message")
    started = time.monotonic()
    watch = _GreetingWatch(session, frequencies=beep_frequencies, detect_beep=detect_beep, silence_ms=silence_ms)
    try:
        reason = watch.wait(timeout)
    finally:
        watch.close()
    waited = time.monotonic() - started
    session.log.emit(VOICEMAIL_GREETING_ENDED, reason=str(reason), waited=waited, answered_by=session.answered_by)
    if reason is GreetingEnd.HUMAN and if_human == "return":
        return VoicemailResult(reason, session.answered_by, waited, watch.beep, None, False)
    outcome = _play(session, message, play_timeout)
    session.log.emit(VOICEMAIL_LEFT, outcome=str(outcome), reason=str(reason))
    hung_up = session.is_disconnected
    if hangup and not hung_up:
        try:
            hung_up = session.hangup()
        except CallTimeoutError:  # the carrier did not confirm in time; the hangup is still under way
            hung_up = False
    return VoicemailResult(reason, session.answered_by, waited, watch.beep, outcome, hung_up)


def _play(session: VoiceSession, message: str | bytes, timeout: float) -> MarkOutcome | None:
    """Play and wait; the mark's outcome, or None if playback did not finish within ``timeout``."""
    previous = session.barge_in
    session.barge_in = False  # the machine's noises (or its recording tone) must not clear our message
    try:
        session.clear_transcripts()
        if isinstance(message, str):
            spoken = session.speak(message, wait=True, timeout=timeout)
            if spoken.mark is None:
                return MarkOutcome.HUNG_UP
            return spoken.mark.outcome
        session.put_outbound_sync(bytes(message))
        return session.send_mark_and_wait("voicemail", timeout=timeout)
    except CallHangupError:
        return MarkOutcome.HUNG_UP
    except CallTimeoutError:
        return None
    finally:
        session.barge_in = previous


__all__ = ["MACHINE_END", "GreetingEnd", "VOICEMAIL_GREETING_ENDED", "VOICEMAIL_LEFT", "VoicemailResult", "leave_voicemail"]
