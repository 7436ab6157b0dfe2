"""A live transcript of one call from its events: what the agent says, what was heard, marks, barge-ins."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from voice_runtime import call_events as ev
from voice_runtime.call_events import CallEvent


class TranscriptPrinter:
    """Prints one line per interesting call event, timestamped from when the printer was made."""

    def __init__(self, out: TextIO = sys.stdout, t0: float | None = None, *, show_marks: bool = True) -> None:
        self.out = out
        self.t0 = time.monotonic() if t0 is None else t0
        self.show_marks = show_marks
        self._lock = threading.Lock()

    def line(self, who: str, text: str, at: float | None = None) -> None:
        at = time.monotonic() if at is None else at
        with self._lock:
            self.out.write(f"[{at - self.t0:6.2f}s] {who:<7} {text}\n")
            self.out.flush()

    def __call__(self, event: CallEvent) -> None:
        d, at = event.data, event.at
        kind = event.kind
        if kind == ev.STREAM_STARTED:
            self.line("CALL", f"media stream started ({d.get('carrier')}, {event.call_id})", at)
        elif kind == ev.TTS_START:
            self.line("AGENT", f'says: "{d.get("text")}"', at)
        elif kind == ev.MARK_PLAYED and self.show_marks:
            self.line("", f"mark '{d.get('name')}' played", at)
        elif kind == ev.MARK_CLEARED and self.show_marks:
            self.line("", f"mark '{d.get('name')}' cleared: the rest was not heard", at)
        elif kind == ev.BARGE_IN:
            self.line("BARGE", "caller talked over the agent: playback stopped", at)
        elif kind == ev.STT_FINAL:
            self.line("HEARD", f'"{d.get("text")}"', at)
        elif kind == ev.DTMF_RECEIVED:
            self.line("DTMF", str(d.get("digit")), at)
        elif kind == ev.CALL_STATUS:
            self.line("STATUS", str(d.get("status")), at)
        elif kind == ev.HANGUP_REQUESTED:
            self.line("CALL", "agent hangs up", at)
        elif kind == ev.CALL_ENDED:
            self.line("CALL", f"ended ({d.get('reason')})", at)
