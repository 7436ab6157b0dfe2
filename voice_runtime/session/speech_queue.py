"""The call's speech worker: ``speak()`` returns at once, utterances are synthesized in order on their own thread.

Why: a flow must be able to start an LLM request (or listen) while its greeting is still being synthesized, and
to stream an LLM's tokens into speech. So ``VoiceSession.speak`` only *submits* a job here and returns its
:class:`~voice_runtime.session.SpeechResult` at once; one worker thread per call (started on demand, gone when
the queue is empty) runs the jobs strictly in submission order, so speech never reorders.

Ordering with the rest of the outbound stream: audio or marks queued *directly* by another thread
(``put_outbound_sync``, ``send_mark``) wait until every speech submitted before them has been synthesized
(:meth:`SpeechQueue.barrier`), so ``speak(a); send_mark_and_wait()`` still means "after a".

Cancelling: a clear (``request_clear_buffer``, barge-in) cancels every job not yet started — an interrupted
agent must not carry on with the rest of its queue — and the call's end cancels them all. A cancelled job's
result is ``stopped`` with a mark resolved ``CLEARED`` (or ``HUNG_UP``), so waiters wake at once.

Streaming text: :func:`sentences` groups a token stream into sentence-sized pieces for providers without a
streaming-input API; providers that have one (``synthesize_stream(tokens, stop_event)``, e.g. ElevenLabs'
stream-input WebSocket) get the tokens as they come (:func:`text_stream_source`).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

log = logging.getLogger(__name__)

#: A sentence ends at . ! ? … ; : or a newline, followed by whitespace (so "3.5" and "e.g." mid-word do not split).
_SENTENCE_END = re.compile(r"[.!?…;:\n]+[\"')\]]*\s")


def sentences(tokens: Iterable[str], *, max_chars: int = 250, min_chars: int = 12) -> Iterator[str]:
    """Regroup streamed text into sentences: each is yielded as soon as its end has arrived.

    A piece shorter than ``min_chars`` waits for the next sentence (no one-word utterances with their own
    prosody); one longer than ``max_chars`` is cut at the last space. The rest is yielded at the end.
    """
    buffer = ""
    for token in tokens:
        if not token:
            continue
        buffer += token
        while True:
            cut = None
            for match in _SENTENCE_END.finditer(buffer):
                if match.end() >= min_chars:
                    cut = match.end()
                    break
            if cut is None and len(buffer) > max_chars:
                space = buffer.rfind(" ", 0, max_chars)
                cut = space + 1 if space > 0 else max_chars
            if cut is None:
                break
            piece, buffer = buffer[:cut].strip(), buffer[cut:]
            if piece:
                yield piece
    if buffer.strip():
        yield buffer.strip()


class TextStreamSource:
    """Presents a token iterable as one ``synthesize(text, stop_event)`` source for the session's speak path.

    ``sent`` collects the text actually taken from the stream (what the caller may have heard).
    """

    def __init__(self, provider: Any, tokens: Iterable[str]) -> None:
        self.provider = provider
        self.sent: list[str] = []
        self.streaming_input = callable(getattr(provider, "synthesize_stream", None))

        def recording() -> Iterator[str]:
            for token in tokens:
                token = str(token)
                self.sent.append(token)
                yield token

        self._tokens = recording()

    @property
    def on_error(self) -> Callable[[str], None] | None:
        return getattr(self.provider, "on_error", None)

    @property
    def text(self) -> str:
        return "".join(self.sent)

    def synthesize(self, _text: str, stop_event: threading.Event) -> Iterator[bytes]:
        if self.streaming_input:  # token by token into the provider's streaming-input API
            yield from self.provider.synthesize_stream(self._tokens, stop_event)
            return
        for sentence in sentences(self._tokens):  # one synthesis per sentence, each as soon as it is complete
            if stop_event.is_set():
                return
            yield from self.provider.synthesize(sentence, stop_event)


def text_stream_source(provider: Any, tokens: Iterable[str]) -> TextStreamSource:
    return TextStreamSource(provider, tokens)


class _Job:
    __slots__ = ("run", "cancel", "started")

    def __init__(self, run: Callable[[], None], cancel: Callable[[bool], None]) -> None:
        self.run, self.cancel, self.started = run, cancel, False


class SpeechQueue:
    """One call's FIFO of speech jobs and the worker thread that runs them."""

    def __init__(self, name: str = "speech") -> None:
        self.name = name
        self._cond = threading.Condition()
        self._jobs: deque[_Job] = deque()
        self._running: _Job | None = None
        self._worker: threading.Thread | None = None
        self.jobs_run = 0
        self.jobs_cancelled = 0

    @property
    def pending(self) -> int:
        """Jobs submitted and not finished (queued or running)."""
        with self._cond:
            return len(self._jobs) + (self._running is not None)

    def in_worker(self) -> bool:
        return threading.current_thread() is self._worker

    def submit(self, run: Callable[[], None], cancel: Callable[[bool], None]) -> None:
        """Queue ``run``; ``cancel(hung_up)`` is called instead if the job is dropped before it starts."""
        # Each job runs in its submitter's context (a flow thread's: the call's id on whatever it logs).
        job = _Job(partial(contextvars.copy_context().run, run), cancel)
        with self._cond:
            self._jobs.append(job)
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name=self.name, daemon=True)
                self._worker.start()

    def _work(self) -> None:
        while True:
            with self._cond:
                if not self._jobs:
                    self._worker = None
                    self._cond.notify_all()
                    return
                job = self._running = self._jobs.popleft()
                job.started = True
            try:
                job.run()
            except Exception:  # a job reports its own errors in its result; this is a bug guard
                log.exception("speech job failed")
            finally:
                with self._cond:
                    self._running = None
                    self.jobs_run += 1
                    self._cond.notify_all()

    def cancel_pending(self, *, hung_up: bool = False) -> int:
        """Drop every job not yet started (their results resolve at once); returns how many."""
        with self._cond:
            dropped = list(self._jobs)
            self._jobs.clear()
            self.jobs_cancelled += len(dropped)
            self._cond.notify_all()
        for job in dropped:
            try:
                job.cancel(hung_up)
            except Exception:
                log.exception("speech job cancel failed")
        return len(dropped)

    def barrier(self, timeout: float | None = 30.0) -> bool:
        """Block until every job submitted so far has finished. False at the deadline.

        A no-op on the worker itself and on an event loop (loop-side senders such as ``send_audio`` must never
        block; their order with respect to queued speech is theirs to keep).
        """
        if self.in_worker() or (not self._jobs and self._running is None):  # the common case: nothing queued
            return True
        try:
            asyncio.get_running_loop()
            return True
        except RuntimeError:
            pass
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._jobs or self._running is not None:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True


__all__ = ["SpeechQueue", "TextStreamSource", "sentences", "text_stream_source"]
