"""``CallAudio``: the one object the call loop writes a call's audio to, fanned out to every tap.

The loop sees a single :class:`~voice_runtime.recording.Recorder`. Behind it:

* the call's **sink** (the default WAV, a callback sink, your own recorder, or none);
* the session's **mixer taps**: every frame goes through ``session.tap_caller`` / ``session.tap_agent``,
  which forward to a mixer installed with ``session.set_mixer`` (the prior art's taps, now fed);
* **live listeners** added while the call runs (the live calls page's listen-in).

Everything sees the same audio in the same order with the same timestamps (``at`` = when it plays on the
call's monotonic clock), and everything sees the **pause** windows: ``session.pause_recording()`` masks
what plays until ``resume_recording()`` with silence for every tap, so a card number read out reaches no
file, no mixer and no listener.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voice_runtime import call_events as ev
from voice_runtime.call_events import CallEvent
from voice_runtime.recording.base import Recorder, RecorderFactory
from voice_runtime.recording.pause import PauseWindows

if TYPE_CHECKING:
    from voice_runtime.session import VoiceSession

__all__ = ["CallAudio", "call_audio_of"]

log = logging.getLogger(__name__)

_by_session: weakref.WeakKeyDictionary[Any, CallAudio] = weakref.WeakKeyDictionary()
_by_session_lock = threading.Lock()


def call_audio_of(session: VoiceSession) -> CallAudio | None:
    """The :class:`CallAudio` of a live call (``None`` before its stream started)."""
    with _by_session_lock:
        return _by_session.get(session)


class CallAudio:
    """Fan-out recorder for one call (see the module docstring)."""

    def __init__(self, session: VoiceSession, sink: Recorder | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.session = session
        self.sink = sink
        self.pauses = PauseWindows()
        self._clock = clock
        self._listeners: tuple[Recorder, ...] = ()
        self._lock = threading.Lock()
        self._closed = False
        self.tap_errors = 0
        self._demand_watchers: tuple[Callable[[bool], None], ...] = ()
        self._unsubscribe = session.add_event_listener(self._on_event)
        self._unwatch_mixer = session.watch_mixer(self._demand_changed)
        with _by_session_lock:
            _by_session[session] = self
        if sink is not None:
            session.log.emit(
                ev.RECORDING_STARTED,
                path=str(getattr(sink, "path", "") or ""),
                started_at=getattr(sink, "started_at", None),
            )

    @classmethod
    def create(cls, session: VoiceSession, sink_factory: RecorderFactory | None) -> CallAudio:
        """The call's ``CallAudio`` around ``sink_factory(session)`` (a failing factory: no sink, logged)."""
        sink = None
        if sink_factory is not None:
            try:
                sink = sink_factory(session)
            except Exception:
                log.exception("recorder_factory failed; call %s continues unrecorded", session.call_sid)
        return cls(session, sink)

    @property
    def path(self) -> Path | None:
        path = getattr(self.sink, "path", None)
        return Path(path) if path else None

    # ------------------------------------------------------------------ pause (from the session's events)
    def _on_event(self, event: CallEvent) -> None:
        if event.kind == ev.RECORDING_PAUSED:
            self.pauses.pause(event.at)
        elif event.kind == ev.RECORDING_RESUMED:
            self.pauses.resume(event.at)

    @property
    def paused(self) -> bool:
        return self.pauses.paused

    # ------------------------------------------------------------------ demand: is anyone taking the audio?
    @property
    def wants_audio(self) -> bool:
        """True while something takes this call's audio: a sink, a ``set_mixer`` mixer or a live listener.

        A pause alone is not a use: it only masks what the taps get. Once closed, nothing is."""
        if self._closed:
            return False
        mixer = self.session.mixer
        return self.sink is not None or bool(self._listeners) or (mixer is not None and mixer is not self)

    def watch_demand(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(wants_audio)`` now and again whenever it may have changed, from whichever thread changed
        it. The call loop uses it to skip the write per frame while nobody takes the audio (most calls)."""
        with self._lock:
            self._demand_watchers = (*self._demand_watchers, callback)
        callback(self.wants_audio)

    def _demand_changed(self) -> None:
        wanted = self.wants_audio
        for callback in self._demand_watchers:
            callback(wanted)

    # ------------------------------------------------------------------ live listeners
    def add_listener(self, listener: Recorder) -> Callable[[], None]:
        """Feed ``listener`` from now on; returns a function that detaches it (it is not closed for you)."""
        with self._lock:
            self._listeners = (*self._listeners, listener)
        self._demand_changed()

        def remove() -> None:
            with self._lock:
                self._listeners = tuple(x for x in self._listeners if x is not listener)
            self._demand_changed()

        return remove

    # ------------------------------------------------------------------ the recorder protocol
    # Per frame of a call while something takes its audio (see watch_demand).
    def write_caller(self, ulaw: bytes, at: float | None = None) -> None:
        if self.pauses.active:
            ulaw = self.pauses.mask(ulaw, self._clock() if at is None else at)
        sink = self.sink
        if sink is not None:
            sink.write_caller(ulaw, at)
        session = self.session
        mixer = session.mixer
        if mixer is not None and mixer is not self:
            self._feed(session.tap_caller, ulaw, at)
        if self._listeners:
            for listener in self._listeners:
                self._feed(listener.write_caller, ulaw, at)

    def write_agent(self, ulaw: bytes, at: float | None = None) -> None:
        if self.pauses.active:
            ulaw = self.pauses.mask(ulaw, self._clock() if at is None else at)
        sink = self.sink
        if sink is not None:
            sink.write_agent(ulaw, at)
        session = self.session
        mixer = session.mixer
        if mixer is not None and mixer is not self:
            self._feed(session.tap_agent, ulaw, at)
        if self._listeners:
            for listener in self._listeners:
                self._feed(listener.write_agent, ulaw, at)

    def truncate_agent(self, at: float) -> None:
        sink = self.sink
        if sink is not None:
            sink.truncate_agent(at)
        mixer = self.session.mixer
        truncate = getattr(mixer, "truncate_agent", None)
        if truncate is not None and mixer is not self:
            self._feed(truncate, at)
        for listener in self._listeners:
            self._feed(listener.truncate_agent, at)

    def _feed(self, fn: Callable[..., object], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            self.tap_errors += 1
            if self.tap_errors == 1:
                log.exception("an audio tap of call %s failed (further failures are counted)", self.session.call_sid)

    @property
    def close_blocks(self) -> bool:
        """Whether :meth:`close` may block (a sink or live listeners to close): else it is run inline.

        Why: most calls record nothing, and a thread started per call end (``run_off_loop``) is pure loop
        and GIL cost — under a reconnecting flood, one per hostile session.
        """
        return self.sink is not None or bool(self._listeners)

    def close(self) -> Path | None:
        """Close the sink (blocking: call off the loop). Live listeners are detached. Idempotent."""
        with self._lock:
            if self._closed:
                return self.path
            self._closed = True
            listeners, self._listeners = self._listeners, ()
        self._unsubscribe()
        self._unwatch_mixer()
        self._demand_changed()
        for listener in listeners:
            self._feed(listener.close)
        sink = self.sink
        if sink is None:
            return None
        try:
            return sink.close()
        except Exception:
            log.exception("closing the recording of call %s failed", self.session.call_sid)
            return None
