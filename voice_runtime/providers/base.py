"""The small contracts every speech provider implements.

Why protocols and not base classes: providers wrap very different SDKs (a WebSocket client, a native SDK
firing callbacks on its own threads, a worker subprocess). The session and transport only need a handful of
attributes and methods, so structural typing keeps vendors free and keeps this package importable without
any vendor SDK installed.

Audio conventions (the one thing every provider must agree on):

* The inbound queue carries **G.711 μ-law, 8 kHz, mono** ``bytes`` (normally 160 bytes = 20 ms per item,
  but any size is legal). ``None`` is the end-of-stream sentinel: the call is over.
* ``TtsProvider.synthesize`` yields **G.711 μ-law, 8 kHz, mono** ``bytes`` chunks of any size.

**What a provider may use of a session** (:class:`ProviderSession`; nothing else, so a provider works with
any object that offers these — a hand-written session, a test double):

* ``is_disconnected`` (property, bool) — the call is over: stop and report ``call_disconnected``;
* ``put_outbound_sync(chunk)`` — queue μ-law 8 kHz agent audio (blocks while the buffer is full; raises
  :class:`~voice_runtime.errors.CallHangupError` once the call is gone);
* ``tap_agent(chunk)`` — hand the same audio to the session's monitor/recorder taps;
* ``send_mark_and_wait(name, timeout=...)`` — block until the caller has heard everything queued so far
  (may raise ``TimeoutError``).

A real :class:`~voice_runtime.session.VoiceSession` is driven through its public ``speak(...)`` instead,
which adds barge-in, STT echo handling and the event log on top of the same four steps.

Threads: ``SttProvider.start``/``stop`` run on the event loop. Callbacks (``on_committed`` and friends) may
be invoked from the event loop or from a provider's own thread; the session's handlers are thread-safe.
``TtsProvider.synthesize`` and ``speak`` run on the *flow* thread (a plain thread), never on the loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover - typing only
    from voice_runtime.session import VoiceSession

InboundQueue = asyncio.Queue  # asyncio.Queue[bytes | None]; kept un-subscripted for 3.11 runtime use

log = logging.getLogger(__name__)

#: The session methods a provider may call (see the module docstring). Tested against an object offering
#: exactly these in ``tests/compat/test_provider_session_contract.py``.
PROVIDER_SESSION_METHODS = ("is_disconnected", "put_outbound_sync", "tap_agent", "send_mark_and_wait")


class ProviderSession(Protocol):
    """The part of a session a TTS provider drives (0.1.x's contract, unchanged)."""

    @property
    def is_disconnected(self) -> bool: ...

    def put_outbound_sync(self, data: bytes) -> None: ...

    def tap_agent(self, chunk: bytes) -> None: ...

    def send_mark_and_wait(self, mark_name: str, timeout: float = 10.0) -> Any: ...


class SttProvider(Protocol):
    """Speech-to-text over a live μ-law 8 kHz stream.

    ``on_committed(text)`` fires once per finished utterance; ``on_recognizing(text)`` with interim
    hypotheses; ``on_error(message)`` once when the provider gives up (fatal error or retries exhausted).
    Providers that can tell when the caller *starts* speaking also expose an ``on_speech_started``
    attribute (a zero-argument callable) which the session uses for barge-in.
    """

    on_committed: Callable[[str], None] | None
    on_recognizing: Callable[[str], None] | None
    on_error: Callable[[str], None] | None

    def set_speaking(self, speaking: bool) -> None:
        """Tell the provider whether the agent is currently talking (for echo handling)."""

    async def start(self, inbound_queue: asyncio.Queue[bytes | None]) -> None:
        """Begin consuming ``inbound_queue``. Returns once running; owns any tasks it creates.

        Optional: a provider that only buffers each chunk may also have a ``feed_audio(ulaw: bytes) -> None``
        attribute once ``start`` has returned; the session then calls it on the event loop with every caller
        chunk instead of putting it on the queue (it must not block or await; the end of input still arrives on
        the queue as ``None``). Per 20 ms frame that saves the queue's put, a Future and a task step. Ours set
        it in ``start``, and not for a subclass with its own queue reader (:func:`reads_its_queue_itself`).
        """

    async def stop(self) -> None:
        """Stop, cancelling and awaiting every task the provider owns. Idempotent."""


class TtsProvider(Protocol):
    """Text-to-speech. ``speak`` keeps the prior art's blocking, session-driving shape."""

    on_error: Callable[[str], None] | None

    def speak(
        self, text: str, session: VoiceSession, stop_event: threading.Event | None = None
    ) -> dict[str, Any]:
        """Say ``text`` on ``session``; return ``{"last_spoken", "interrupted"?, "call_disconnected"?, "error"?}``."""


@runtime_checkable
class StreamingTts(Protocol):
    """A TTS that can stream audio for one utterance. This is what ``VoiceSession.speak`` drives.

    ``synthesize`` yields μ-law 8 kHz chunks as soon as they exist (first audio before the whole text is
    synthesized) and must stop promptly once ``stop_event`` is set. Failures raise ``ProviderError``.

    The session cannot interrupt an iterator that is blocked inside the provider, so every provider bounds its
    own waits (connect, first chunk, between chunks) with timeouts and raises ``ProviderError`` when one
    expires — that is what keeps ``speak`` from hanging on a stalled service.
    """

    on_error: Callable[[str], None] | None

    def synthesize(self, text: str, stop_event: threading.Event) -> Iterator[bytes]: ...


class StreamingTtsBase:
    """Mixin giving a :class:`StreamingTts` the prior-art ``speak(text, session, stop_event)`` for free.

    On a :class:`VoiceSession`, ``speak`` routes through :meth:`VoiceSession.speak` so that marks, barge-in,
    the event log and error reporting behave identically for every provider. On any other session-like
    object it uses only the :class:`ProviderSession` methods (:func:`speak_on`).
    """

    on_error: Callable[[str], None] | None = None

    def synthesize(self, text: str, stop_event: threading.Event) -> Iterator[bytes]:  # pragma: no cover
        raise NotImplementedError

    def speak(
        self, text: str, session: VoiceSession, stop_event: threading.Event | None = None
    ) -> dict[str, Any]:
        from voice_runtime.session import VoiceSession

        if isinstance(session, VoiceSession):
            result = session.speak(text, wait=True, tts=self, stop_event=stop_event)  # type: ignore[arg-type]
            return result.as_dict()
        return speak_on(self, text, session, stop_event)

    def close(self) -> None:
        """Release long-lived resources (sockets, worker processes). Default: nothing to release."""


def speak_on(
    tts: StreamingTts, text: str, session: ProviderSession, stop_event: threading.Event | None = None
) -> dict[str, Any]:
    """Say ``text`` on any :class:`ProviderSession` (the 0.1.x ``speak`` contract).

    Returns ``{"last_spoken", "interrupted"}`` plus ``call_disconnected`` (the call was already gone:
    ``last_spoken`` is ``""``) or ``error`` (synthesis failed; ``tts.on_error`` was called once). A mark
    ``tts_complete`` follows the audio and is waited for (``tts.mark_timeout``, default 30 s; a timeout is
    logged, not raised).
    """
    from voice_runtime.errors import CallHangupError

    if not text or not text.strip():
        return {"last_spoken": "", "interrupted": False}
    if _flag(session.is_disconnected):
        return {"last_spoken": "", "interrupted": False, "call_disconnected": True}
    stop = stop_event if stop_event is not None else threading.Event()
    interrupted = False
    try:
        for chunk in tts.synthesize(text, stop):
            if stop.is_set():
                interrupted = True
                break
            if chunk:
                session.put_outbound_sync(chunk)
                session.tap_agent(chunk)
    except CallHangupError:
        return {"last_spoken": "", "interrupted": False, "call_disconnected": True}
    except Exception as exc:  # a provider failure is reported, never raised into the flow
        message = f"{type(exc).__name__}: {exc}"
        on_error = getattr(tts, "on_error", None)
        if on_error is not None:
            try:
                on_error(message)
            except Exception:
                log.exception("tts on_error callback failed")
        return {"last_spoken": text, "interrupted": False, "error": message}
    if interrupted or stop.is_set():
        return {"last_spoken": text, "interrupted": True}
    timeout = float(getattr(tts, "mark_timeout", 30.0))
    try:
        session.send_mark_and_wait("tts_complete", timeout=timeout)
    except TimeoutError:
        log.warning("no playback confirmation for %r within %.0f s", text[:40], timeout)
    return {"last_spoken": text, "interrupted": False}


def _flag(value: object) -> bool:
    """A session's boolean property; anything that is not a real ``True`` (e.g. an unset test double) is False."""
    return value is True


def reads_its_queue_itself(provider: object, base: type, reader: str) -> bool:
    """True when ``provider``'s class replaces ``base``'s queue reader ``reader`` (a subclass's own consumer).

    Why: a provider offers ``feed_audio`` (the inline path) from its ``start``, but a subclass that reads the
    queue its own way (a test double that stalls, one that counts each frame) must keep getting every frame
    through the queue, or its override would silently stop seeing audio."""
    return getattr(type(provider), reader) is not getattr(base, reader)
