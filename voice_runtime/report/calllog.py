"""A minimal JSON-lines writer for one call's events, in the schema the timeline reads.

The full call log (with the ``call_report`` line) comes from ``voice_runtime.metrics`` when the server
writes it; this writer exists so the demo and tests can produce a log from a session's events alone. It
buffers in memory (bounded) and writes once, when the call ends, on its own thread: never file I/O on the
event loop, which is where ``call_ended`` is usually emitted.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voice_runtime.call_events import CALL_ENDED, CallEvent
from voice_runtime.thread_starter import start_soon

if TYPE_CHECKING:
    from voice_runtime.session import VoiceSession

__all__ = ["CallLogWriter", "event_record"]

log = logging.getLogger(__name__)


def event_record(event: CallEvent) -> dict[str, Any]:
    return {"kind": event.kind, "at": event.at, "call_id": event.call_id, "data": event.data}


class CallLogWriter:
    """Subscribe to a session; ``path`` is written when the call ends (``written`` is set then)."""

    def __init__(self, path: str | Path, *, max_events: int = 100_000) -> None:
        self.path = Path(path)
        self.max_events = max_events
        self.dropped = 0
        self.written = threading.Event()
        self._lines: list[str] = []
        self._lock = threading.Lock()

    def attach(self, session: VoiceSession) -> CallLogWriter:
        session.add_event_listener(self.on_event)
        return self

    def on_event(self, event: CallEvent) -> None:
        line = json.dumps(event_record(event), default=str)
        with self._lock:
            if len(self._lines) >= self.max_events:
                self.dropped += 1
                return
            self._lines.append(line)
        if event.kind == CALL_ENDED:
            # via the thread starter: CALL_ENDED is emitted on the event loop, which must not wait for a thread
            start_soon(threading.Thread(target=self.flush, name="call-log-writer", daemon=True))

    def flush(self) -> Path:
        """Write everything seen so far (also callable directly, e.g. after late events)."""
        with self._lock:
            text = "\n".join(self._lines) + "\n"
        try:
            self.path.write_text(text, encoding="utf-8")
        except OSError:
            log.exception("could not write call log %s", self.path)
            raise
        finally:
            self.written.set()
        return self.path
