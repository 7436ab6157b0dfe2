"""Per-turn latency, computed from a call's events alone.

A :class:`TurnTracker` is a subscriber (``session.add_event_listener(tracker.on_event)``): it never reaches
into the call loop, and every figure it produces is a difference of two event timestamps on one clock
(``time.monotonic()``, the ``at`` of every :class:`~voice_runtime.call_events.CallEvent`).

What a turn is:

* a **caller turn** opens on ``stt_speech_started`` (or on the first of ``speech_ended`` / ``stt_final`` when
  the provider gives no start), ends at ``speech_ended`` (``data["ended_at"]``: when the sound stopped, which
  is earlier than the endpoint by the silence the VAD waited for) and gets its text from ``stt_final``;
* an **agent turn** is one ``speak``: ``tts_start`` (the flow asked), ``tts_first_audio`` (the TTS produced
  audio), ``audio_sent`` (its first audio went on the wire; ``data["playout_at"]`` is when the carrier starts
  playing it, i.e. later than the send when earlier audio is still buffered there), then its mark is
  ``mark_played`` (the carrier played all of it) or ``mark_cleared`` (interrupted).

An agent turn *answers* the newest caller turn whose final transcript came before the ``speak`` and that no
earlier agent turn answered. The headline figure, ``response_s``, is *caller stopped → agent audible*:
``audible_at`` of the answer minus ``ended_at`` of the caller turn.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from voice_runtime import call_events as ev
from voice_runtime.call_events import CallEvent

log = logging.getLogger(__name__)

MAX_DTMF = 1024  # a carrier flooding key presses must not grow a call's memory without bound (counted beyond)
SPEECH_MARK_LABEL = "speech"
STALE_TURN_S = 5.0  # a caller turn with no transcript this long after it ended never gets one  # the label VoiceSession.speak gives the mark that follows each utterance


@dataclass
class CallerTurn:
    """One caller utterance. Times are ``time.monotonic()``; durations are seconds."""

    index: int
    started_at: float | None = None  # STT/VAD heard speech start
    ended_at: float | None = None  # the speech itself ended (provider's estimate)
    endpoint_at: float | None = None  # when the endpoint was detected
    final_at: float | None = None  # final transcript delivered
    text: str | None = None
    barge_in: bool = False  # started while the agent was speaking, and the agent was cut off

    @property
    def stt_latency_s(self) -> float | None:
        """Caller stopped → final transcript."""
        if self.final_at is None or self.ended_at is None:
            return None
        return self.final_at - self.ended_at

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)  # flat fields: a shallow copy is the whole record (asdict is ~10x slower)
        data["role"] = "caller"
        data["stt_latency_s"] = self.stt_latency_s
        return data


@dataclass
class AgentTurn:
    """One ``speak``. Times are ``time.monotonic()``; durations are seconds."""

    index: int
    text: str
    speak_at: float
    first_audio_at: float | None = None
    wire_at: float | None = None  # first audio of this turn sent to the carrier
    audible_at: float | None = None  # carrier starts playing it (pump's playout estimate)
    done_at: float | None = None  # synthesis finished (tts_end)
    played_at: float | None = None  # mark echoed: the caller heard all of it
    cleared_at: float | None = None  # mark cleared: cut off (barge-in or request_clear_buffer)
    audio_seconds: float = 0.0
    error: str | None = None
    answers: int | None = None  # index of the caller turn this answers
    think_s: float | None = None  # caller's final transcript → speak() (the flow's own time, e.g. an LLM)
    response_s: float | None = None  # caller stopped → this turn audible (the headline)

    @property
    def ttfb_s(self) -> float | None:
        """speak() → first TTS audio."""
        return None if self.first_audio_at is None else self.first_audio_at - self.speak_at

    @property
    def wire_s(self) -> float | None:
        """First TTS audio → first audio on the wire."""
        if self.wire_at is None or self.first_audio_at is None:
            return None
        return self.wire_at - self.first_audio_at

    @property
    def interrupted(self) -> bool:
        return self.cleared_at is not None

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data.update(role="agent", ttfb_s=self.ttfb_s, wire_s=self.wire_s, interrupted=self.interrupted)
        return data


@dataclass
class BargeIn:
    speech_at: float  # the caller's speech start that triggered it
    clear_at: float | None = None  # the clear went on the wire

    @property
    def latency_s(self) -> float | None:
        return None if self.clear_at is None else self.clear_at - self.speech_at


@dataclass
class TurnTracker:
    """Builds :class:`CallerTurn` / :class:`AgentTurn` records from one call's events (thread-safe)."""

    caller_turns: list[CallerTurn] = field(default_factory=list)
    agent_turns: list[AgentTurn] = field(default_factory=list)
    barge_ins: list[BargeIn] = field(default_factory=list)
    dtmf: list[tuple[float, str]] = field(default_factory=list)
    started_at: float | None = None
    ended_at: float | None = None
    end_reason: str | None = None
    carrier: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    tts_characters: int = 0
    #: Called with ``(series, seconds)`` the moment a latency is known ("response", "stt", "tts_ttfb",
    #: "barge_in"), so live metrics need not wait for the call to end. Runs on the event's thread.
    on_latency: Callable[[str, float], None] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._open_caller: CallerTurn | None = None  # speech started, not ended yet
        self._awaiting_final: deque[CallerTurn] = deque()  # ended (or open), no transcript yet
        self._unanswered: CallerTurn | None = None  # newest caller turn with a transcript and no answer
        self._speaking: deque[AgentTurn] = deque()  # tts_start seen, tts_end not yet
        self._awaiting_wire: deque[AgentTurn] = deque()  # produced audio, not on the wire yet
        self._awaiting_mark: deque[AgentTurn] = deque()  # synthesis done, mark not resolved
        self._pending_barge: BargeIn | None = None

    # ------------------------------------------------------------------------------------ intake
    def on_event(self, event: CallEvent) -> None:
        handler = _HANDLERS.get(event.kind)  # an EventKind, or a user's own string kind
        if handler is not None:
            with self._lock:
                handler(self, event)

    def _observe(self, series: str, seconds: float | None) -> None:
        if seconds is not None and self.on_latency is not None:
            try:
                self.on_latency(series, seconds)
            except Exception:
                log.exception("latency hook failed")

    def _count(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    def _stream_started(self, e: CallEvent) -> None:
        self.started_at = e.at
        self.carrier = e.data.get("carrier")

    def _call_ended(self, e: CallEvent) -> None:
        self.ended_at = e.at
        reason = e.data.get("reason")
        self.end_reason = None if reason is None else str(reason)

    def _new_caller(self) -> CallerTurn:
        turn = CallerTurn(len(self.caller_turns))
        self.caller_turns.append(turn)
        self._awaiting_final.append(turn)
        return turn

    def _speech_started(self, e: CallEvent) -> None:
        if self._open_caller is not None:  # a second start without an end: the provider re-armed
            return
        turn = self._open_caller = self._new_caller()
        turn.started_at = e.at
        if e.data.get("barge_in"):
            turn.barge_in = True
            self._pending_barge = BargeIn(e.at)
            self.barge_ins.append(self._pending_barge)

    def _speech_ended(self, e: CallEvent) -> None:
        turn = self._open_caller or self._new_caller()
        self._open_caller = None
        ended_at = e.data.get("ended_at")
        turn.endpoint_at = e.at
        turn.ended_at = float(ended_at) if isinstance(ended_at, (int, float)) else e.at

    def _final(self, e: CallEvent) -> None:
        waiting = self._awaiting_final
        # A turn the STT never transcribed (noise, a word it dropped) must not swallow a later transcript.
        while waiting and waiting[0].ended_at is not None and e.at - waiting[0].ended_at > STALE_TURN_S:
            waiting.popleft()
        if not waiting:
            self._new_caller()
        turn = waiting.popleft()
        if turn is self._open_caller:  # transcript before (or without) an endpoint event
            self._open_caller = None
        turn.final_at = e.at
        turn.text = e.data.get("text")
        self._unanswered = turn
        self._observe("stt", turn.stt_latency_s)

    def _tts_start(self, e: CallEvent) -> None:
        turn = AgentTurn(len(self.agent_turns), str(e.data.get("text", "")), e.at)
        caller = self._unanswered
        if caller is not None and caller.final_at is not None:
            turn.answers = caller.index
            turn.think_s = e.at - caller.final_at
            self._unanswered = None
        self.agent_turns.append(turn)
        self._speaking.append(turn)
        self.tts_characters += len(turn.text)

    def _tts_first_audio(self, e: CallEvent) -> None:
        for turn in self._speaking:
            if turn.first_audio_at is None:
                turn.first_audio_at = e.at
                self._awaiting_wire.append(turn)
                self._observe("tts_ttfb", turn.ttfb_s)
                return

    def _tts_end(self, e: CallEvent) -> None:
        if not self._speaking:
            return
        turn = self._speaking.popleft()
        turn.done_at = e.at
        turn.audio_seconds = float(e.data.get("audio_seconds") or 0.0)
        turn.error = e.data.get("error")
        if e.data.get("stopped") and turn.cleared_at is None:  # barge-in stopped the synthesis itself
            turn.cleared_at = e.at
            self._count("interruptions")
            if turn.wire_at is None and turn in self._awaiting_wire:  # its audio was cleared before it went out
                self._awaiting_wire.remove(turn)
        self._awaiting_mark.append(turn)

    def _audio_sent(self, e: CallEvent) -> None:
        if not self._awaiting_wire:
            return
        turn = self._awaiting_wire.popleft()
        turn.wire_at = e.at
        playout = e.data.get("playout_at")
        turn.audible_at = float(playout) if isinstance(playout, (int, float)) else e.at
        if turn.answers is not None:
            caller = self.caller_turns[turn.answers]
            if caller.ended_at is not None:
                turn.response_s = turn.audible_at - caller.ended_at
                self._observe("response", turn.response_s)

    def _mark_resolved(self, e: CallEvent) -> None:
        if e.data.get("name") != SPEECH_MARK_LABEL or not self._awaiting_mark:
            return
        turn = self._awaiting_mark.popleft()
        if e.kind == ev.MARK_PLAYED:
            turn.played_at = e.at
        elif turn.cleared_at is None:
            turn.cleared_at = e.at
            self._count("interruptions")
        if turn in self._awaiting_wire:  # cleared before any of it reached the wire
            self._awaiting_wire.remove(turn)

    def _clear_sent(self, e: CallEvent) -> None:
        barge = self._pending_barge
        if barge is not None and barge.clear_at is None:
            barge.clear_at = e.at
            self._pending_barge = None
            self._observe("barge_in", barge.latency_s)

    def _dtmf(self, e: CallEvent) -> None:
        if len(self.dtmf) >= MAX_DTMF:
            self._count("dtmf_not_kept")
            return
        self.dtmf.append((e.at, str(e.data.get("digit", ""))))

    def _counter(self, e: CallEvent) -> None:
        self._count(e.kind)

    def _drop_counter(self, e: CallEvent) -> None:
        """A ``protocol_error`` event may stand for ``count`` drops (the connection coalesces a flood's)."""
        count = e.data.get("count", 1)
        self.counts[e.kind] = self.counts.get(e.kind, 0) + (count if isinstance(count, int) and count > 0 else 1)

    # ------------------------------------------------------------------------------------ output
    def turns(self) -> list[dict[str, Any]]:
        """Every turn, caller and agent, in time order."""
        with self._lock:
            rows = [t.as_dict() for t in self.caller_turns] + [t.as_dict() for t in self.agent_turns]

        def key(row: dict[str, Any]) -> float:
            for name in ("started_at", "ended_at", "final_at", "speak_at"):
                if row.get(name) is not None:
                    return float(row[name])
            return 0.0

        return sorted(rows, key=key)


_HANDLERS: dict[str, Callable[[TurnTracker, CallEvent], None]] = {
    ev.STREAM_STARTED: TurnTracker._stream_started,
    ev.CALL_ENDED: TurnTracker._call_ended,
    ev.STT_SPEECH_STARTED: TurnTracker._speech_started,
    ev.SPEECH_ENDED: TurnTracker._speech_ended,
    ev.STT_FINAL: TurnTracker._final,
    ev.TTS_START: TurnTracker._tts_start,
    ev.TTS_FIRST_AUDIO: TurnTracker._tts_first_audio,
    ev.TTS_END: TurnTracker._tts_end,
    ev.AUDIO_SENT: TurnTracker._audio_sent,
    ev.MARK_PLAYED: TurnTracker._mark_resolved,
    ev.MARK_CLEARED: TurnTracker._mark_resolved,
    ev.CLEAR_SENT: TurnTracker._clear_sent,
    ev.DTMF_RECEIVED: TurnTracker._dtmf,
    ev.STT_ERROR: TurnTracker._counter,
    ev.TTS_ERROR: TurnTracker._counter,
    ev.PROTOCOL_ERROR: TurnTracker._drop_counter,
    ev.BARGE_IN: TurnTracker._counter,
}
