"""What every carrier's webhooks share: bounded bodies, a nonce cache, and idempotent inbound answers.

Why one module: a webhook route is the first code an unauthenticated stranger reaches. Three things must hold
for every carrier, and they are easy to get subtly wrong once per carrier:

* **Bounded bodies.** The signature can only be checked over the whole body, so the body must be read first —
  but never unboundedly. :func:`read_limited` refuses a declared ``Content-Length`` over the limit before
  reading a byte, and stops a chunked body the moment it passes the limit (413, see :func:`too_large`).
* **Replayed nonces.** Plivo signs ``URL + nonce``; a captured request stays valid forever unless each nonce is
  accepted once. :class:`NonceCache` remembers the nonces it saw for a while (bounded in size and time).
* **Idempotent inbound answers.** A carrier retries a webhook that timed out, and an attacker can replay a
  captured one. Either way one carrier call (CallSid / CallUUID) must get at most one session and one flow,
  ever. :class:`InboundAnswers` builds the answer document once per call id and hands the *same* document to
  every later request for that id (its stream token is single use, so a replayed answer opens nothing).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from voice_runtime.once import NonceCache

log = logging.getLogger(__name__)

#: Carrier webhook bodies are a few hundred bytes; anything far larger is not a carrier.
MAX_WEBHOOK_BODY = 64 * 1024


async def read_limited(request: Request, limit: int = MAX_WEBHOOK_BODY) -> bytes | None:
    """The request body, or None once it exceeds ``limit`` bytes (checked before buffering it all).

    A declared ``Content-Length`` over the limit is refused without reading; a chunked (or lying) body is read
    chunk by chunk and abandoned as soon as it passes the limit, so at most ``limit`` + one chunk is buffered.
    A client that disconnects mid-body is treated as oversized (there is nothing to answer).
    """
    declared = request.headers.get("content-length", "").strip()
    if declared:
        if not declared.isdigit() or int(declared) > limit:
            return None
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
    except ClientDisconnect:
        return None
    return b"".join(chunks)


def too_large() -> Response:
    """413 with ``Connection: close``: the rest of an oversized body is not worth reading."""
    return Response("request body too large", status_code=413, headers={"connection": "close"})


class _Answer:
    __slots__ = ("document", "expires_at", "ready")

    def __init__(self, expires_at: float) -> None:
        self.document: str | None = None
        self.expires_at = expires_at
        self.ready = asyncio.Event()


class InboundAnswers:
    """One answer per carrier call id, ever (within ``ttl``): the first request builds it, the rest reuse it.

    ``answer(call_id, build)`` runs on the event loop. The first request for a call id runs ``build`` (which
    creates the session, issues its single-use stream token and starts the flow) and stores the document it
    returns; concurrent and later requests for the same id wait for and return that same document, without
    calling ``build``. ``build`` returning None (e.g. "reject: draining") stores nothing, so a retry is
    answered afresh. Entries live ``ttl`` seconds (carriers retry within seconds; a day is generous) and at
    most ``max_calls`` are kept, oldest forgotten first.
    """

    def __init__(self, *, ttl: float = 86_400.0, max_calls: int = 50_000, wait_timeout: float = 10.0) -> None:
        self.ttl = ttl
        self.max_calls = max_calls
        self.wait_timeout = wait_timeout
        self.stats: Counter[str] = Counter()
        self._answers: OrderedDict[str, _Answer] = OrderedDict()

    def known(self, call_id: str) -> bool:
        entry = self._answers.get(call_id)
        return entry is not None and entry.expires_at > time.monotonic()

    async def answer(self, call_id: str, build: Callable[[], Awaitable[str | None]]) -> tuple[str | None, bool]:
        """``(document, fresh)``: ``fresh`` is True when this request built it, False for a retry or replay."""
        now = time.monotonic()
        self._prune(now)
        entry = self._answers.get(call_id)
        if entry is not None:
            self.stats["repeated"] += 1
            try:
                await asyncio.wait_for(entry.ready.wait(), self.wait_timeout)
            except asyncio.TimeoutError:
                return None, False
            return entry.document, False
        entry = self._answers[call_id] = _Answer(now + self.ttl)
        try:
            document = await build()
        except BaseException:
            self._answers.pop(call_id, None)
            entry.ready.set()
            raise
        if document is None:
            self._answers.pop(call_id, None)
        else:
            entry.document = document
            self.stats["answered"] += 1
        entry.ready.set()
        return document, True

    def _prune(self, now: float) -> None:
        answers = self._answers
        while answers:
            oldest = next(iter(answers.values()))
            if oldest.expires_at > now and len(answers) < self.max_calls:
                break
            if not oldest.ready.is_set():  # still being built: never drop it (bounded by concurrent requests)
                break
            answers.popitem(last=False)

    def __len__(self) -> int:
        return len(self._answers)


def refuse_repoint(calls: dict[str, Any], call_id: str, session: Any) -> bool:
    """Bind ``call_id`` to ``session`` unless it is already bound to another session (returns whether bound).

    The call id → session map steers status and AMD callbacks; letting a second request re-point it would hand
    the real call's callbacks to an impostor (and let the impostor's clean-up forget the real call).
    """
    current = calls.get(call_id)
    if current is not None and current is not session:
        log.warning("refused to re-bind call %s to a second session (replayed or duplicated webhook?)", call_id)
        return False
    calls[call_id] = session
    return True


__all__ = ["MAX_WEBHOOK_BODY", "InboundAnswers", "NonceCache", "read_limited", "refuse_repoint", "too_large"]
