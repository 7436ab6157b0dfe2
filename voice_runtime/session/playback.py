"""Playback of recorded audio for one call: ``play``, pause/resume, false barge-in recovery, hold, beds, tones.

Why a collaborator of its own: everything here rests on one piece of knowledge the rest of the session does
not need — **how much of a piece of audio the caller has actually heard**. That is what makes pause/resume
and false barge-in recovery possible without repeating or skipping anything.

How the heard position is known. A played item is queued in segments, each followed by a *position mark*
(the first after one 20 ms frame, then every 200 ms). A mark's echo says "the carrier has played everything up
to this byte", and its arrival time anchors the carrier's playout clock. When a clear stops playback (pause,
barge-in, a key), the heard position is the last echoed offset plus the whole frames the carrier played since
that echo, up to the moment the clear went out (the clear's time is when the session resolved the pending
marks as cleared), and never past the next mark that was not echoed. Resuming queues the item again from that
byte. The estimate is exact to the frame while the carrier plays continuously; the one thing no runtime can
know is whether the carrier played one more frame while the clear was on the wire (under 1 ms on loopback,
one 20 ms frame in the worst case) — see docs/audio.md.

Threads: ``play`` queues audio on the calling (flow) thread, like ``speak``, so order with speech is kept.
Looping items, hold prompts, and resumes after a false barge-in run on short-lived helper threads. The session's
event log is the only input from the loop side (barge-in, DTMF, clears, transcripts): one listener, which
never blocks and never queues audio itself.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from voice_runtime import call_events as ev
from voice_runtime.audio.background import BackgroundMixer
from voice_runtime.audio.dtmf import dtmf_tones
from voice_runtime.audio.frames import FRAME_BYTES, FRAME_INTERVAL, SAMPLE_RATE, ulaw_duration
from voice_runtime.audio.sources import Source, scale_ulaw, to_ulaw_source
from voice_runtime.errors import CallHangupError, CallTimeoutError
from voice_runtime.logs import start_thread_in_context
from voice_runtime.marks import Mark, MarkOutcome
from voice_runtime.session.speech import SpeechResult

if TYPE_CHECKING:  # pragma: no cover
    from voice_runtime.session.core import VoiceSession

log = logging.getLogger(__name__)

__all__ = ["Playback", "PlayResult", "PLAYBACK_PAUSED", "PLAYBACK_RESUMED", "BARGE_IN_FALSE", "BARGE_IN_CONFIRMED"]

# Event kinds this collaborator emits (documented in voice_runtime.call_events).
PLAYBACK_STARTED = ev.EventKind.PLAYBACK_STARTED
PLAYBACK_PAUSED = ev.EventKind.PLAYBACK_PAUSED
PLAYBACK_RESUMED = ev.EventKind.PLAYBACK_RESUMED
PLAYBACK_STOPPED = ev.EventKind.PLAYBACK_STOPPED
BARGE_IN_FALSE = ev.EventKind.BARGE_IN_FALSE  # barge-in cut the agent, no words followed: playback resumed
BARGE_IN_CONFIRMED = ev.EventKind.BARGE_IN_CONFIRMED  # words followed the barge-in: the cut stands
DTMF_BARGE_IN = ev.EventKind.DTMF_BARGE_IN
HOLD_STARTED = ev.EventKind.HOLD_STARTED
HOLD_ENDED = ev.EventKind.HOLD_ENDED

SEGMENT_BYTES = 1600  # 200 ms between position marks
LOOP_LOOKAHEAD_BYTES = 8000  # a looping item keeps at most ~1 s queued ahead of what was heard
_ids = itertools.count(1)


@dataclass(eq=False)
class PlayResult(SpeechResult):
    """What happened to one ``play`` — the same handle as ``speak``'s (``wait``, ``heard``, ``interrupted``).

    ``wait`` follows the item across a pause or a false barge-in: it returns when the item was heard to the
    end, stopped for good, or the call ended — not at the clear that paused it.
    """

    def wait(self, timeout: float | None = 30.0) -> MarkOutcome | None:
        if self.item is None:
            return super().wait(timeout)
        return self._follow_item(timeout)

    @property
    def heard_seconds(self) -> float:
        """How much of the item the caller heard (the estimate pause/resume uses)."""
        item: _Item | None = self.item
        return 0.0 if item is None else ulaw_duration(item.heard_bytes)


class _Item:
    """One played piece of audio and what is known about its playback."""

    def __init__(
        self,
        label: str,
        audio: bytes | Iterator[bytes],
        *,
        loop: bool,
        volume: float,
        interruptible: bool,
        dtmf_interrupt: bool,
    ) -> None:
        self.id = next(_ids)
        self.label = label
        self.loop = loop
        self.volume = volume
        self.interruptible = interruptible
        self.dtmf_interrupt = dtmf_interrupt
        if isinstance(audio, bytes):
            self.audio = bytearray(scale_ulaw(audio, volume))
            self._stream: Iterator[bytes] | None = None
        else:
            self.audio = bytearray()
            self._stream = audio
        self.complete = self._stream is None  # all of the audio is known
        self.marks: list[tuple[int, Mark]] = []  # (offset the mark follows, mark), current run only
        self.run_start = 0
        self.queued = 0  # offset queued so far in the current run
        self.heard_bytes = 0  # of this item, over all its runs
        self.heard_base = 0  # heard_bytes when the current run started
        self.resume_at = 0  # where the next run starts after a suspension
        #: The current run's stop flag. Each run gets a fresh one from whoever starts it (:meth:`new_run`), and a
        #: feeder only ever looks at the flag of its own run: a feeder still inside a cut run (parked in a read
        #: or a throttle) can then never be revived by the next run and queue audio beside it.
        self.stop = threading.Event()
        self.cond = threading.Condition()
        self.state = "new"  # new | playing | suspended | done
        self.suspend_reason = ""
        self.finished = False
        self.outcome: MarkOutcome | None = None
        self.started = False  # its first frame reached the caller (the start mark was echoed)

    def new_run(self) -> threading.Event:
        """A fresh stop flag for the next run; the cut run's flag stays set for whoever still holds it."""
        self.stop = threading.Event()
        return self.stop

    # ---------------------------------------------------------------- reading
    def read(self, offset: int, size: int, stop: threading.Event | None = None) -> bytes:
        """Up to ``size`` bytes at ``offset`` (pulling from the stream as needed); b"" at the end."""
        if self.loop:
            length = len(self.audio)
            if not length:
                return b""
            start = offset % length
            chunk = bytes(self.audio[start : start + size])
            return chunk
        while not self.complete and len(self.audio) < offset + size:
            assert self._stream is not None
            try:
                chunk = next(self._stream)
            except StopIteration:
                self.complete = True
                break
            if chunk:
                self.audio += scale_ulaw(chunk, self.volume)
        return bytes(self.audio[offset : offset + size])

    @property
    def length(self) -> int | None:
        return None if self.loop or not self.complete else len(self.audio)

    # ---------------------------------------------------------------- what was heard
    def heard_position(self, latency: float) -> int:
        """The first byte (absolute offset in this item's run) the caller has not heard; see the module doc."""
        played = [(off, m) for off, m in self.marks if m.outcome is MarkOutcome.PLAYED]
        if not played:
            return self.run_start
        last_off, last_mark = max(played, key=lambda p: p[0])
        later = [off for off, m in self.marks if off > last_off and m.outcome is not MarkOutcome.PLAYED]
        if not later:
            return last_off
        # When the carrier stopped: marks that were on the wire resolved CLEARED when the clear went out.
        on_wire = [m.resolved_at for _o, m in self.marks if m.outcome is MarkOutcome.CLEARED and m.sent_at and m.resolved_at]
        local = [m.resolved_at for _o, m in self.marks if m.outcome is MarkOutcome.CLEARED and m.resolved_at]
        cut = min(on_wire) if on_wire else min(local) if local else time.monotonic()
        # The carrier's clock: when did it reach ``last_off``? Each recent echo implies a time (its arrival plus
        # the audio between it and last_off); the earliest is the one least delayed on its way back to us.
        # The run's start mark is left out: with nothing playing before it, the carrier echoes it on arrival,
        # before the first frame plays.
        anchors = [
            (m.resolved_at or cut) + (last_off - off) / SAMPLE_RATE
            for off, m in played
            if last_off - off <= SAMPLE_RATE and (off > self.run_start or len(played) == 1)
        ]
        reached = min(anchors) if anchors else (last_mark.resolved_at or cut)
        frames = int(max(0.0, cut - reached + latency) / FRAME_INTERVAL)
        return min(min(later), last_off + frames * FRAME_BYTES)

    def finish(self, outcome: MarkOutcome) -> None:
        with self.cond:
            if self.finished:
                return
            self.finished, self.outcome, self.state = True, outcome, "done"
            self.cond.notify_all()

    def set_state(self, state: str) -> None:
        with self.cond:
            self.state = state
            self.cond.notify_all()


class _SpeechItem(_Item):
    """A resumable ``speak``'s audio, appended by its synthesis thread while it is queued and heard.

    Synthesis runs on to the end whatever happens to playback (a pause or a false barge-in does not stop it),
    so a resume can continue with audio that was synthesized while the caller heard nothing. It stops only
    when the item is finished for good (stopped, a confirmed barge-in, a key, the call's end).
    """

    def __init__(self, label: str, *, dtmf_interrupt: bool) -> None:
        super().__init__(label, iter(()), loop=False, volume=1.0, interruptible=True, dtmf_interrupt=dtmf_interrupt)
        self.complete = False
        self.resume_request: int | None = None  # set by a resume for the speech worker to pick up
        #: The speech worker is inside ``feed_speech`` (feeding a run, or parked until a resume or the end). While
        #: it is, only it feeds this item: a resume hands it the offset instead of feeding on the caller's thread.
        self.worker_active = False
        self.synthesis_stop = threading.Event()  # handed to the provider: set once the item is finished

    def finish(self, outcome: MarkOutcome) -> None:
        super().finish(outcome)
        self.synthesis_stop.set()  # stopped for good (or heard, or hung up): no more audio is wanted

    def append(self, chunk: bytes) -> None:
        with self.cond:
            self.audio += chunk
            self.cond.notify_all()

    def close(self) -> None:
        """Synthesis ended (all of it, or stopped): nothing more will be appended."""
        with self.cond:
            self.complete = True
            self.cond.notify_all()

    def read(self, offset: int, size: int, stop: threading.Event | None = None) -> bytes:
        """``size`` bytes at ``offset``, waiting until they are synthesized (fewer at the end); b"" at the end,
        or when this run (``stop``, the feeder's own run flag) was cut: the feed then stops. Waiting for whole
        segments keeps position marks 200 ms apart whatever the provider's chunk size."""
        stop = self.stop if stop is None else stop
        with self.cond:
            while len(self.audio) < offset + size and not self.complete and not stop.is_set() and not self.finished:
                self.cond.wait(0.2)
            return bytes(self.audio[offset : offset + size])


class Playback:
    """The playback side of one :class:`~voice_runtime.session.VoiceSession` (``session.playback``)."""

    def __init__(self, session: VoiceSession) -> None:
        self.session = session
        self.background = BackgroundMixer()
        #: Barge-in that is not followed by words within this many seconds is undone: the interrupted items
        #: resume from their first unheard byte. ``None`` turns recovery off (the cut always stands).
        self.false_barge_in_window: float | None = None
        #: Added to the time since the last mark echo when estimating the heard position: the carrier's
        #: own delay between playing a frame and echoing the mark after it (a few ms on a LAN).
        self.playout_latency = 0.002
        self._lock = threading.RLock()  # items and pause state
        self._feed_lock = threading.Lock()  # one producer pushes a segment + its mark at a time
        self._items: list[_Item] = []  # live items (not finished), in queue order
        self._paused = False
        self._hold: _Hold | None = None
        self._pushes = 0  # segments queued so far (lets a cut tell whether a producer slipped one in)
        self._last_words_at = 0.0  # when the STT last reported words (partial or final)
        self._recovery_cancel = threading.Event()
        self._speech_dtmf: bool | None = None  # the latest speak's dtmf_interrupt
        self._unsubscribe = session.add_event_listener(self._on_event)

    # ================================================================ play
    def play(
        self,
        source: Source,
        *,
        wait: bool = False,
        interruptible: bool = True,
        loop: bool = False,
        volume: float = 1.0,
        dtmf_interrupt: bool | None = None,
        timeout: float | None = None,
        label: str | None = None,
    ) -> PlayResult:
        session = self.session
        name = label or _describe(source)
        if session.is_disconnected:
            return PlayResult(name, call_disconnected=True)
        audio = to_ulaw_source(source)
        if loop and not isinstance(audio, bytes):
            audio = b"".join(audio)  # a loop needs the whole period
        dtmf = getattr(session, "dtmf_barge_in", True) if dtmf_interrupt is None else dtmf_interrupt
        item = _Item(name, audio, loop=loop, volume=volume, interruptible=interruptible, dtmf_interrupt=dtmf)
        result = PlayResult(name, item=item)
        if loop and not item.audio:
            raise ValueError("cannot loop empty audio")
        self.background.thinking = False
        with self._lock:
            self._items.append(item)
        session.log.emit(PLAYBACK_STARTED, label=name, item=item.id, loop=loop, interruptible=interruptible)
        if loop:
            start_thread_in_context(self._feed_safely, item, 0, name=f"play-loop-{item.id}")
        else:
            self._feed_safely(item, 0)
        result.mark = item.marks[-1][1] if item.marks else None
        result.audio_seconds = ulaw_duration(len(item.audio)) if not loop else 0.0
        if wait:
            try:
                result.wait(timeout if timeout is not None else max(30.0, 2 * result.audio_seconds + 10))
            except CallTimeoutError:
                result.error = "timed out waiting for playback"
        return result

    # ================================================================ resumable speech
    def begin_speech(self, label: str, *, dtmf_interrupt: bool) -> _SpeechItem:
        """A resumable ``speak`` starts: its audio becomes an item (position marks, pause/resume) of its own."""
        item = _SpeechItem(label, dtmf_interrupt=dtmf_interrupt)
        self.background.thinking = False
        with self._lock:
            self._items.append(item)
        return item

    def feed_speech(self, item: _SpeechItem) -> None:
        """The speech worker's half: queue ``item`` as it is synthesized, and again from where it was cut after
        each resume; returns once all of it is queued, or it was stopped for good, or the call ended.

        While the item is paused the worker waits here, so speech submitted after it waits too (it would
        otherwise be heard during the pause, or before the rest of this utterance).
        """
        start = 0
        with item.cond:
            item.worker_active = True
        try:
            while True:
                self._feed_safely(item, start)
                with item.cond:
                    while True:
                        if item.finished or self.session.is_disconnected:
                            item.worker_active = False
                            return
                        if item.resume_request is not None:
                            start, item.resume_request = item.resume_request, None
                            break
                        if item.state == "playing" and not item.stop.is_set() and item.complete and item.queued >= len(item.audio):
                            item.worker_active = False  # decided under the lock a resume checks it with
                            return  # all queued: the marks now tell the rest
                        item.cond.wait(0.5)
        finally:
            with item.cond:
                item.worker_active = False

    def stop_speech(self) -> None:
        """``stop_speaking``: resumable speech stops for good (the caller of this clears the buffer)."""
        with self._lock:
            items: list[_Item] = [i for i in self._items if isinstance(i, _SpeechItem)]
        if items:
            self._cut(items)
            for item in items:
                self._stop_for_good(item, "stopped")

    def _feed_safely(self, item: _Item, start: int) -> None:
        try:
            self._feed(item, start)
        except CallHangupError:
            item.finish(MarkOutcome.HUNG_UP)
        except Exception as exc:  # a broken source must not kill the flow thread with a half-played prompt
            log.exception("playback of %r failed", item.label)
            self.session.log.emit(PLAYBACK_STOPPED, label=item.label, item=item.id, error=f"{type(exc).__name__}: {exc}")
            item.finish(MarkOutcome.CLEARED)
            self._forget(item)

    def _feed(self, item: _Item, start: int) -> None:
        """Queue ``item`` from byte ``start``: segments of audio, each followed by a position mark."""
        session = self.session
        stop = item.stop  # this run's flag, made by whoever started the run; never cleared
        marks: list[tuple[int, Mark]] = []  # this run's (a feeder that lets go late must not touch the next run's)
        item.marks = marks
        item.run_start = item.queued = start
        item.set_state("playing")
        self._push_mark(item, start, first=True)
        size = FRAME_BYTES  # the first segment is one frame: its echo anchors the clock within 20 ms of start
        while not stop.is_set():
            chunk = item.read(item.queued, size, stop)
            if not chunk:
                break
            with self._feed_lock:
                if stop.is_set():
                    break
                session.put_outbound_sync(chunk, timeout=None)
                item.queued += len(chunk)
                self._push_mark(item, item.queued)
                self._pushes += 1
            size = SEGMENT_BYTES
            if item.loop:
                self._throttle(item, stop)
        if not marks:
            return
        final = marks[-1][1]
        final.add_done_callback(lambda mark, it=item, st=stop: self._run_ended(it, mark, st))  # type: ignore[misc]  # narrow ignore so scripts/typecheck.sh holds zero errors; a real fix is for this module's owner

    def _push_mark(self, item: _Item, offset: int, first: bool = False) -> None:
        mark = self.session.send_mark(f"play{item.id}")
        item.marks.append((offset, mark))
        if mark.outcome is not None and mark.outcome is MarkOutcome.HUNG_UP:
            raise CallHangupError("call ended while queueing playback")
        if first:
            mark.add_done_callback(lambda m, it=item: self._started(it, m))  # type: ignore[misc]  # narrow ignore so scripts/typecheck.sh holds zero errors; a real fix is for this module's owner
        else:
            mark.add_done_callback(lambda m, it=item, off=offset: self._progress(it, off, m))  # type: ignore[misc]  # narrow ignore so scripts/typecheck.sh holds zero errors; a real fix is for this module's owner
        if len(item.marks) > 64:  # keep the newest echoed mark and everything after it
            played = [i for i, (_o, m) in enumerate(item.marks) if m.outcome is MarkOutcome.PLAYED]
            if played and played[-1] > 0:
                del item.marks[: played[-1]]

    def _started(self, item: _Item, mark: Mark) -> None:
        if mark.outcome is MarkOutcome.PLAYED:
            item.started = True

    def _progress(self, item: _Item, offset: int, mark: Mark) -> None:
        if mark.outcome is MarkOutcome.PLAYED:
            item.heard_bytes = max(item.heard_bytes, offset - item.run_start + item.heard_base)

    def _throttle(self, item: _Item, stop: threading.Event) -> None:
        """A looping item waits until the caller is within ~1 s of what is queued (or its run is cut)."""
        target = item.queued - LOOP_LOOKAHEAD_BYTES
        for offset, mark in list(item.marks):
            if offset >= target:
                while not stop.is_set() and not mark.done:
                    try:
                        mark.wait(0.2)
                    except CallTimeoutError:
                        pass
                return

    def _run_ended(self, item: _Item, mark: Mark, stop: threading.Event) -> None:
        """The last mark of a run resolved: the item is done, unless a pause or barge-in suspended it.

        ``stop`` is that run's flag, not the item's current one: the callback may fire after a resume has
        started the next run (the cut run's feeder let go late), and must not judge the new run by it."""
        if mark.outcome is MarkOutcome.PLAYED and not stop.is_set():
            item.heard_bytes = item.heard_base + item.queued - item.run_start
            item.finish(MarkOutcome.PLAYED)
            self._forget(item)
        elif mark.outcome is MarkOutcome.HUNG_UP:
            item.finish(MarkOutcome.HUNG_UP)
            self._forget(item)
        elif not stop.is_set():  # cleared by someone else (the flow's own request_clear_buffer): for good
            self._stop_for_good(item, "cleared")
        # otherwise the path that cut it (pause, barge-in, key, stop) decides: suspended or stopped

    def _forget(self, item: _Item) -> None:
        with self._lock:
            if item in self._items:
                self._items.remove(item)

    # ================================================================ stopping
    def stop(self, result: PlayResult | None = None) -> None:
        """Stop one played item (or every one), dropping its audio at once."""
        with self._lock:
            items = [result.item] if result is not None and result.item is not None else list(self._items)
        self._cut(items)
        for item in items:
            self._stop_for_good(item, "stopped")

    def _cut(self, items: list[_Item], *, pause: bool = False) -> None:
        """Stop feeding ``items`` and clear the buffer (local and at the carrier), so nothing more plays.

        A pause keeps the speeches queued behind (a resumable speech's worker holds them until the resume)."""
        for item in items:
            item.stop.set()
        pushes = self._pushes
        self.session._clear_buffer(cancel_queued_speech=not pause)
        # A producer may have been mid-segment (the clear also unblocked it): once it has let go, clear again
        # if it queued anything after the first clear. Its stop flag keeps it from queueing more.
        with self._feed_lock:
            slipped = self._pushes != pushes
        if slipped:
            self.session._clear_buffer(cancel_queued_speech=not pause)

    def _stop_for_good(self, item: _Item, why: str) -> None:
        if item.finished:
            return
        item.heard_bytes = item.heard_base + item.heard_position(self.playout_latency) - item.run_start
        item.finish(MarkOutcome.CLEARED)
        self._forget(item)
        self.session.log.emit(PLAYBACK_STOPPED, label=item.label, item=item.id, reason=why, heard_seconds=ulaw_duration(item.heard_bytes))

    def _suspend(self, item: _Item, reason: str) -> int:
        """Remember where ``item`` was cut; returns that offset."""
        position = item.heard_position(self.playout_latency)
        item.heard_bytes = item.heard_base + position - item.run_start
        item.resume_at = position
        item.suspend_reason = reason
        item.set_state("suspended")
        return position

    # ================================================================ pause / resume
    def pause(self) -> bool:
        """Stop playback at once (the carrier's buffer is cleared); :meth:`resume` continues where it stopped."""
        with self._lock:
            if self._paused:
                return False
            items = [i for i in self._items if i.state == "playing"]
            self._paused = bool(items)
        if not items:  # speech (or nothing) is playing: stop it at once; speech cannot be resumed
            self.session.request_clear_buffer()
            self.session.log.emit(PLAYBACK_PAUSED, items=[])
            return False
        self._cut(items, pause=True)
        self._await_cut(items)
        positions = [(item.label, ulaw_duration(self._suspend(item, "pause"))) for item in items]
        self.session.log.emit(PLAYBACK_PAUSED, items=positions)
        return True

    def resume(self) -> bool:
        """Continue every paused item from its first unheard byte (nothing heard twice, nothing skipped)."""
        with self._lock:
            if not self._paused:
                return False
            self._paused = False
            items = [i for i in self._items if i.state == "suspended" and i.suspend_reason == "pause"]
        self._requeue(items, "resume")
        return bool(items)

    @property
    def paused(self) -> bool:
        return self._paused

    def _await_cut(self, items: list[_Item], timeout: float = 2.0) -> None:
        """Wait until the clear reached the wire (every mark of the cut runs resolved), bounded."""
        deadline = time.monotonic() + timeout
        for item in items:
            for _offset, mark in list(item.marks):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                try:
                    mark.wait(remaining)
                except CallTimeoutError:
                    return

    def _requeue(self, items: list[_Item], why: str) -> None:
        for item in items:
            if item.finished or self.session.is_disconnected:
                continue
            start = getattr(item, "resume_at", item.run_start)
            item.heard_base = item.heard_bytes
            item.new_run()  # before any feeder sees it: a cut landing from here on stops the new run too
            self.session.log.emit(PLAYBACK_RESUMED, label=item.label, item=item.id, reason=why, at_seconds=ulaw_duration(start))
            if isinstance(item, _SpeechItem):
                with item.cond:
                    # Its speech worker feeds it (speech after it keeps waiting), even if the worker has not
                    # yet noticed the cut: it picks the offset up as soon as its cut run lets go.
                    if item.worker_active:
                        item.resume_request = start
                        item.cond.notify_all()
                        continue
            if item.loop:
                start_thread_in_context(self._feed_safely, item, start, name=f"play-loop-{item.id}")
            else:
                self._feed_safely(item, start)

    # ================================================================ barge-in, keys, transcripts
    def allows_barge_in(self) -> bool:
        """False while a non-interruptible item is being heard (the session's barge-in asks this)."""
        with self._lock:
            return not any(i.state == "playing" and not i.interruptible and i.started for i in self._items)

    def _on_event(self, event: ev.CallEvent) -> None:
        kind = event.kind
        if kind == ev.BARGE_IN:
            self._on_barge_in(event.at)
        elif kind in (ev.STT_FINAL, ev.STT_PARTIAL):
            self._last_words_at = event.at
            self._recovery_cancel.set()
            if kind == ev.STT_FINAL and self.background.thinking_bed is not None and not self.background.thinking:
                self.background.thinking = True
                self.session.wake_outbound()
        elif kind == ev.TTS_START:
            self.background.thinking = False
        elif kind == ev.CALL_ENDED:
            self._on_call_ended()

    def _on_barge_in(self, at: float) -> None:
        """Loop side. The session is about to clear: decide what happens to each live item once it has."""
        with self._lock:
            items = [i for i in self._items if i.state == "playing"]
        if not items:
            return
        for item in items:
            item.stop.set()
        window = self.false_barge_in_window
        keep = [i for i in items if not i.interruptible]  # never dropped: they continue after the clear
        cut = [i for i in items if i.interruptible]
        cancel = self._recovery_cancel = threading.Event()  # set by the next words the STT reports
        self._spawn(self._after_barge_in, keep, cut, window, at, cancel)

    def _after_barge_in(
        self, keep: list[_Item], cut: list[_Item], window: float | None, at: float, cancel: threading.Event
    ) -> None:
        """Helper thread: once the clear is out, re-queue what must not be cut, then decide on the rest."""
        self._await_cut(keep + cut)
        for item in keep:
            self._suspend(item, "barge_in")
        for item in cut:
            if window is None:
                self._stop_for_good(item, "barge_in")
            else:
                self._suspend(item, "barge_in")
        self._requeue(keep, "not_interruptible")
        if window is None or not cut:
            return
        words = cancel.wait(max(0.0, at + window - time.monotonic())) or self._last_words_at >= at
        if words or self.session.is_disconnected:
            self.session.log.emit(BARGE_IN_CONFIRMED, items=[i.label for i in cut])
            for item in cut:
                self._stop_for_good(item, "barge_in")
            return
        self.session.log.emit(BARGE_IN_FALSE, window=window, items=[i.label for i in cut])
        self.session.stats["false_barge_ins"] += 1
        self._requeue(cut, "false_barge_in")

    def note_speech(self, dtmf_interrupt: bool | None) -> None:
        """``speak`` is starting: whether a key may stop it (None: no, as speech always behaved)."""
        self._speech_dtmf = dtmf_interrupt

    def key_pressed(self, digit: str) -> None:
        """Loop side: a key stops the item being heard if it allows that, else the speech being heard."""
        with self._lock:
            items = [i for i in self._items if i.state == "playing"]
        if not items:
            session = self.session
            if self._speech_dtmf and session.agent_speaking and not session.is_disconnected:
                session.stats["dtmf_barge_ins"] += 1
                session.log.emit(DTMF_BARGE_IN, digit=digit, label="speech")
                session.stop_speaking()
            return
        if not items[0].dtmf_interrupt:
            return
        self.session.stats["dtmf_barge_ins"] += 1
        self.session.log.emit(DTMF_BARGE_IN, digit=digit, label=items[0].label)
        for item in items:
            item.stop.set()
        self.session.request_clear_buffer()
        self._spawn(self._after_key, items)

    def _after_key(self, items: list[_Item]) -> None:
        self._await_cut(items)
        for item in items:
            self._stop_for_good(item, "dtmf")

    def _on_call_ended(self) -> None:
        with self._lock:
            items, self._items = list(self._items), []
            hold = self._hold
        for item in items:
            item.stop.set()
            item.finish(MarkOutcome.HUNG_UP)
        if hold is not None:
            hold.stop.set()
        self.background.thinking = False

    def close(self) -> None:
        """Detach from the session's events (the session is being reset for another call)."""
        self._on_call_ended()
        self._unsubscribe()

    @staticmethod
    def _spawn(target: Any, *args: Any) -> None:
        start_thread_in_context(target, *args, name="playback-helper")

    # ================================================================ background, thinking, hold
    def set_background(self, source: Source | None, *, volume: float = 0.1, loop: bool = True) -> None:
        self.background.set_bed(None if source is None else _whole(source), volume=volume, loop=loop)
        self.session.log.emit(ev.EventKind.BACKGROUND_SET, on=source is not None, volume=volume)
        self.session.wake_outbound()

    def set_thinking_sound(self, source: Source | None, *, volume: float = 0.3) -> None:
        self.background.set_thinking(None if source is None else _whole(source), volume=volume)

    def hold(self, music: Source, *, still_holding_prompt: Source | None = None, period: float = 30.0, volume: float = 1.0) -> None:
        """Play ``music`` in every silence until :meth:`unhold`; after each ``period`` s of music, the prompt.

        The music is a background layer (never queued), so it costs no buffer and stops the instant ``unhold``
        is called; it pauses under the prompt rather than mixing with it.
        """
        if period <= 0:
            raise ValueError("period must be > 0")
        self.unhold()
        self.background.set_hold(_whole(music), volume=volume)
        self.session.wake_outbound()
        hold = _Hold(still_holding_prompt, period)
        with self._lock:
            self._hold = hold
        self.session.log.emit(HOLD_STARTED, period=period)
        if still_holding_prompt is not None:
            prompt = _whole(still_holding_prompt)
            start_thread_in_context(self._hold_prompts, hold, prompt, name="hold-prompts")

    def _hold_prompts(self, hold: _Hold, prompt: bytes) -> None:
        while not hold.stop.wait(hold.period):
            if self.session.is_disconnected:
                return
            result = self.play(prompt, label="still_holding", interruptible=False, dtmf_interrupt=False)
            hold.prompts.append(result)
            hold.count += 1
            try:  # the period runs from the end of one prompt to the start of the next
                result.wait(ulaw_duration(len(prompt)) + 10)
            except CallTimeoutError:
                pass

    def unhold(self) -> float:
        """End hold: music stops at once (a prompt in progress is cut). Returns the seconds spent on hold."""
        with self._lock:
            hold, self._hold = self._hold, None
        if hold is None:
            return 0.0
        hold.stop.set()
        self.background.set_hold(None)
        for result in hold.prompts:
            if not (result.item is None or result.item.finished):
                self.stop(result)
        seconds = time.monotonic() - hold.started
        self.session.log.emit(HOLD_ENDED, seconds=seconds, prompts=hold.count)
        return seconds

    @property
    def on_hold(self) -> bool:
        return self._hold is not None

    # ================================================================ DTMF out, in band
    def send_tones(self, digits: str, *, tone_ms: int = 100, gap_ms: int = 100) -> PlayResult:
        """Dial ``digits`` as Q.23 dual tones in the media path (after any audio already queued)."""
        audio = dtmf_tones(digits, tone_ms=tone_ms, gap_ms=gap_ms)
        self.session.log.emit(ev.DTMF_SENT, digits=digits, method="tones")
        return self.play(audio, label=f"dtmf:{digits}", interruptible=False, dtmf_interrupt=False)


class _Hold:
    def __init__(self, prompt: Source | None, period: float) -> None:
        self.prompt = prompt
        self.period = period
        self.stop = threading.Event()
        self.started = time.monotonic()
        self.count = 0
        self.prompts: list[PlayResult] = []


def _whole(source: Source) -> bytes:
    audio = to_ulaw_source(source)
    return audio if isinstance(audio, bytes) else b"".join(audio)


def _describe(source: Source) -> str:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"audio:{len(source) / SAMPLE_RATE:.2f}s"
    if isinstance(source, str) or hasattr(source, "__fspath__"):
        return str(source).rsplit("/", 1)[-1]
    return type(source).__name__
