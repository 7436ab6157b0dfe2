"""The small contracts every speech provider implements.

Why protocols and not base classes: providers wrap very different SDKs (a WebSocket client, a native SDK
firing callbacks on its own threads, a worker subprocess). The session and transport only need a handful of
attributes and methods, so structural typing keeps vendors free and keeps this package importable without
any vendor SDK installed.

Audio conventions (the one thing every provider must agree on):

* The inbound queue carries **G.711 μ-law, 8 kHz, mono** ``bytes`` (normally 160 bytes = 20 ms per item,
  but any size is legal). ``None`` is the end-of-stream sentinel: the call is over.
* ``TtsProvider.synthesize`` yields **G.711 μ-law, 8 kHz, mono** ``bytes`` chunks of any size.

Threads: ``SttProvider.start``/``stop`` run on the event loop. Callbacks (``on_committed`` and friends) may
be invoked from the event loop or from a provider's own thread; the session's handlers are thread-safe.
``TtsProvider.synthesize`` and ``speak`` run on the *flow* thread (a plain thread), never on the loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover - typing only
    from voice_runtime.session import VoiceSession

InboundQueue = asyncio.Queue  # asyncio.Queue[bytes | None]; kept un-subscripted for 3.11 runtime use


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
        """Begin consuming ``inbound_queue``. Returns once running; owns any tasks it creates."""

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

    ``speak`` routes through :meth:`VoiceSession.speak` so that marks, barge-in, the event log and error
    reporting behave identically for every provider.
    """

    on_error: Callable[[str], None] | None = None

    def synthesize(self, text: str, stop_event: threading.Event) -> Iterator[bytes]:  # pragma: no cover
        raise NotImplementedError

    def speak(
        self, text: str, session: VoiceSession, stop_event: threading.Event | None = None
    ) -> dict[str, Any]:
        result = session.speak(text, wait=True, tts=self, stop_event=stop_event)  # type: ignore[arg-type]
        return result.as_dict()

    def close(self) -> None:
        """Release long-lived resources (sockets, worker processes). Default: nothing to release."""
