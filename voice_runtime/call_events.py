"""The per-call structured event log.

Every interesting moment of a call (stream start, marks sent/played/cleared, clears, DTMF, STT partials and
finals, TTS start/first audio/end, barge-in, hangup) is recorded as one :class:`CallEvent` with a monotonic
timestamp. Metrics, recordings, transcripts and the demo's live view are all *subscribers*; the session
itself never formats or prints anything.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

# Event kinds (strings so that subscribers can filter cheaply and new kinds stay backwards compatible).
WS_CONNECTED = "ws_connected"
STREAM_STARTED = "stream_started"
MARK_SENT = "mark_sent"
MARK_PLAYED = "mark_played"
MARK_CLEARED = "mark_cleared"
CLEAR_REQUESTED = "clear_requested"
CLEAR_SENT = "clear_sent"
DTMF_RECEIVED = "dtmf_received"
DTMF_SENT = "dtmf_sent"
STT_SPEECH_STARTED = "stt_speech_started"
STT_PARTIAL = "stt_partial"
STT_FINAL = "stt_final"
STT_ERROR = "stt_error"
TTS_START = "tts_start"
TTS_FIRST_AUDIO = "tts_first_audio"
TTS_END = "tts_end"
TTS_ERROR = "tts_error"
BARGE_IN = "barge_in"
HANGUP_REQUESTED = "hangup_requested"
CALL_ENDED = "call_ended"
PROTOCOL_ERROR = "protocol_error"
ANSWERED_BY = "answered_by"
CALL_STATUS = "call_status"
RECORDING_SAVED = "recording_saved"


@dataclass(frozen=True, slots=True)
class CallEvent:
    """One thing that happened on a call. ``at`` is ``time.monotonic()`` seconds."""

    kind: str
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

    def emit(self, kind: str, **data: Any) -> CallEvent:
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
