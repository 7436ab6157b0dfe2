"""The per-call structured event log, and the one list of event kinds.

Every interesting moment of a call is recorded as one :class:`CallEvent` with a monotonic timestamp
(``time.monotonic()``, the clock every latency in the runtime is measured on). Metrics, recordings,
transcripts, the live calls page and the demo's live view are all *subscribers*; the session itself never
formats or prints anything. Subscribers run synchronously on the thread that produced the event (the event
loop or a flow thread), so they must be quick.

The kinds (:class:`EventKind`; the ``data`` fields each carries):

============================  =========================================================================
``state_changed``             the lifecycle moved (``old``, ``new``: :class:`~voice_runtime.lifecycle.CallState`)
``ws_connected``              a prior-art transport reported the stream (``stream_id``)
``stream_started``            the carrier's ``start`` arrived (``stream_id``, ``carrier``, ``parameters``)
``mark_sent``                 a mark went on the wire after the audio before it (``name``, ``wire_name``)
``mark_played``               the carrier echoed it: everything before it was heard (``name``, ``wire_name``, ``waited``)
``mark_cleared``              a clear dropped it (``name``, ``wire_name``, ``sent``: False if it never left us)
``mark_hung_up``              the call ended with it pending (``name``, ``wire_name``)
``clear_requested``           the flow or barge-in asked to drop unplayed audio (``local_marks``)
``clear_sent``                the ``clear`` is on the wire (``marks_cleared``)
``dtmf_received``             the caller pressed a key (``digit``)
``dtmf_sent``                 we sent digits (``digits``)
``stt_speech_started``        the STT heard the caller start talking (``barge_in``: whether it cut the agent)
``speech_ended``              the STT/VAD heard the caller stop talking (``ended_at``: when the sound stopped,
                              ``time.monotonic()``, earlier than the event by the silence the STT waited for;
                              ``provider``)
``stt_partial``               an interim transcript (``text``)
``stt_final``                 a committed utterance (``text``)
``stt_error``                 the STT reported an error (``error``)
``tts_start``                 ``speak`` began synthesising (``text``)
``tts_first_audio``           the first synthesised chunk was queued (``latency``: seconds since ``tts_start``)
``tts_end``                   synthesis finished (``text``, ``audio_seconds``, ``stopped``, ``error``)
``tts_error``                 the TTS failed (``error``)
``audio_sent``                the first audio of an agent turn is on the wire (``playout_at``: when the carrier
                              starts playing it); once per turn, never per chunk
``barge_in``                  the caller talked over the agent; synthesis stopped and playback is cleared
``hangup_requested``          the flow asked to hang up
``call_ended``                the call is over (``reason``: :class:`~voice_runtime.lifecycle.EndReason`, ``detail``)
``protocol_error``            a carrier message was dropped (``reason``)
``answered_by``               answering-machine detection reported (``answered_by``)
``call_status``               a carrier status callback (``status`` and carrier fields)
``stream_status``             a carrier stream-status callback (``event``, ...)
``call_transferred``          the call was handed to another number (``to``)
``recording_started``         a recording sink began (``path``, ``started_at``: monotonic time of its sample 0)
``recording_paused``          ``session.pause_recording()``: every audio tap records silence from here
``recording_resumed``         ``session.resume_recording()``
``recording_saved``           the recorder finished and kept a file (``path``)
``provider_error``            a provider factory or start failed (``provider``, ``error``)
``playback_started``          ``play`` queued an item (``label``, ``item``, ``loop``, ``interruptible``)
``playback_paused``           ``pause_playback`` cut playback (``items``: [(label, heard seconds)])
``playback_resumed``          an item continues from its first unheard byte (``label``, ``item``, ``reason``, ``at_seconds``)
``playback_stopped``          an item was cut for good (``label``, ``item``, ``reason``, ``heard_seconds``) or failed (``error``)
``barge_in_false``            no words followed a barge-in within the window: playback resumes (``window``, ``items``)
``barge_in_confirmed``        words followed a barge-in: the cut stands (``items``)
``dtmf_barge_in``             a key stopped the prompt or speech being heard (``digit``, ``label``)
``hold_started``              ``hold`` began (``period``)
``hold_ended``                ``unhold`` (``seconds``, ``prompts``)
``background_set``            a background bed was set or cleared (``on``, ``volume``)
============================  =========================================================================

User code may emit its own kinds (``session.log.emit("sms_sent", ...)``): any string works, and the
listed ones compare equal to their plain strings (``EventKind`` is a ``StrEnum``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

log = logging.getLogger(__name__)


class EventKind(StrEnum):
    """Every event kind the runtime emits (documented in this module's docstring)."""

    STATE_CHANGED = "state_changed"
    WS_CONNECTED = "ws_connected"
    STREAM_STARTED = "stream_started"
    MARK_SENT = "mark_sent"
    MARK_PLAYED = "mark_played"
    MARK_CLEARED = "mark_cleared"
    MARK_HUNG_UP = "mark_hung_up"
    CLEAR_REQUESTED = "clear_requested"
    CLEAR_SENT = "clear_sent"
    DTMF_RECEIVED = "dtmf_received"
    DTMF_SENT = "dtmf_sent"
    STT_SPEECH_STARTED = "stt_speech_started"
    SPEECH_ENDED = "speech_ended"
    STT_PARTIAL = "stt_partial"
    STT_FINAL = "stt_final"
    STT_ERROR = "stt_error"
    TTS_START = "tts_start"
    TTS_FIRST_AUDIO = "tts_first_audio"
    TTS_END = "tts_end"
    TTS_ERROR = "tts_error"
    AUDIO_SENT = "audio_sent"
    BARGE_IN = "barge_in"
    HANGUP_REQUESTED = "hangup_requested"
    CALL_ENDED = "call_ended"
    PROTOCOL_ERROR = "protocol_error"
    ANSWERED_BY = "answered_by"
    CALL_STATUS = "call_status"
    STREAM_STATUS = "stream_status"
    CALL_TRANSFERRED = "call_transferred"
    RECORDING_STARTED = "recording_started"
    RECORDING_PAUSED = "recording_paused"
    RECORDING_RESUMED = "recording_resumed"
    RECORDING_SAVED = "recording_saved"
    PROVIDER_ERROR = "provider_error"
    PLAYBACK_STARTED = "playback_started"
    PLAYBACK_PAUSED = "playback_paused"
    PLAYBACK_RESUMED = "playback_resumed"
    PLAYBACK_STOPPED = "playback_stopped"
    BARGE_IN_FALSE = "barge_in_false"
    BARGE_IN_CONFIRMED = "barge_in_confirmed"
    DTMF_BARGE_IN = "dtmf_barge_in"
    HOLD_STARTED = "hold_started"
    HOLD_ENDED = "hold_ended"
    BACKGROUND_SET = "background_set"


# The module-level names of the first release, kept so ``ev.MARK_PLAYED`` etc. keep working.
STATE_CHANGED = EventKind.STATE_CHANGED
WS_CONNECTED = EventKind.WS_CONNECTED
STREAM_STARTED = EventKind.STREAM_STARTED
MARK_SENT = EventKind.MARK_SENT
MARK_PLAYED = EventKind.MARK_PLAYED
MARK_CLEARED = EventKind.MARK_CLEARED
MARK_HUNG_UP = EventKind.MARK_HUNG_UP
CLEAR_REQUESTED = EventKind.CLEAR_REQUESTED
CLEAR_SENT = EventKind.CLEAR_SENT
DTMF_RECEIVED = EventKind.DTMF_RECEIVED
DTMF_SENT = EventKind.DTMF_SENT
STT_SPEECH_STARTED = EventKind.STT_SPEECH_STARTED
SPEECH_ENDED = EventKind.SPEECH_ENDED
AUDIO_SENT = EventKind.AUDIO_SENT
STT_PARTIAL = EventKind.STT_PARTIAL
STT_FINAL = EventKind.STT_FINAL
STT_ERROR = EventKind.STT_ERROR
TTS_START = EventKind.TTS_START
TTS_FIRST_AUDIO = EventKind.TTS_FIRST_AUDIO
TTS_END = EventKind.TTS_END
TTS_ERROR = EventKind.TTS_ERROR
BARGE_IN = EventKind.BARGE_IN
HANGUP_REQUESTED = EventKind.HANGUP_REQUESTED
CALL_ENDED = EventKind.CALL_ENDED
PROTOCOL_ERROR = EventKind.PROTOCOL_ERROR
ANSWERED_BY = EventKind.ANSWERED_BY
CALL_STATUS = EventKind.CALL_STATUS
STREAM_STATUS = EventKind.STREAM_STATUS
CALL_TRANSFERRED = EventKind.CALL_TRANSFERRED
RECORDING_STARTED = EventKind.RECORDING_STARTED
RECORDING_PAUSED = EventKind.RECORDING_PAUSED
RECORDING_RESUMED = EventKind.RECORDING_RESUMED
RECORDING_SAVED = EventKind.RECORDING_SAVED
PROVIDER_ERROR = EventKind.PROVIDER_ERROR


@dataclass(frozen=True, slots=True)
class CallEvent:
    """One thing that happened on a call. ``at`` is ``time.monotonic()`` seconds."""

    kind: EventKind | str
    at: float
    call_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


Listener = Callable[[CallEvent], None]


class EventLog:
    """A bounded, thread-safe log with synchronous subscribers.

    Subscribers run on whichever thread produced the event (the event loop or a flow thread), so they must
    be quick and must not block; a failing subscriber is logged and never breaks the call.
    """

    def __init__(self, maxlen: int = 128) -> None:
        self._events: deque[CallEvent] = deque(maxlen=maxlen)
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()
        self.call_id: str | None = None

    def emit(self, kind: EventKind | str, **data: Any) -> CallEvent:
        event = CallEvent(kind, time.monotonic(), self.call_id, data)
        with self._lock:
            self._events.append(event)
            listeners = tuple(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:  # a broken subscriber must never break the call
                log.exception("call event listener %r failed on %s", listener, kind)
        return event

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Add ``listener``; returns a function that removes it."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def snapshot(self, kind: str | None = None) -> list[CallEvent]:
        with self._lock:
            events = list(self._events)
        return events if kind is None else [e for e in events if e.kind == kind]

    def clear(self) -> None:
        with self._lock:
            self._events.clear()
