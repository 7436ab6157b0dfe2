"""Replay guards shared by a fleet through Redis: a replay sent to another worker is refused there too.

Why: the replay guards are per process by default — the Plivo signature nonces
(:class:`~voice_runtime.once.NonceCache` in each ``PlivoSignatureValidator``), the tokenless ``/stream``
route's one-session-per-CallSid (``server.start_guard``) and the answered-call dedupe
(:class:`~voice_runtime.transports.webhooks.InboundAnswers` on each call control). Behind a load balancer a
captured signed webhook replayed to a *second* worker finds empty caches and is accepted: a new session, a
new flow, a new stream token, paid STT/TTS. With Redis already in the fleet (``[redis]``: campaigns,
workers), :func:`share_replay_guards` puts all three in Redis::

    import redis
    from voice_runtime.fleet_replay import share_replay_guards

    share_replay_guards(server, redis.Redis.from_url("redis://redis:6379/0"))   # every worker, same Redis

* :class:`RedisNonceCache` has ``NonceCache``'s interface (``first_use``), implemented as one
  ``SET key 1 NX PX ttl``: atomic across workers, expired by Redis, so nothing grows without bound.
* :class:`SharedInboundAnswers` claims each carrier call id fleet-wide with ``SET NX`` before building its
  answer, and stores the document it built, so a retry or replay on *any* worker gets the same document and
  creates nothing (the carriers retry webhooks; the same document is the right answer to a retry).

**Fail closed.** When Redis cannot be reached (timeout, refused connection) a guard cannot tell a first use
from a replay. It then refuses: a nonce counts as replayed (403), a tokenless stream's ``start`` is closed
1008, an answer webhook gets ``503`` + ``Retry-After`` (Plivo and Twilio retry, or use the fallback URL).
Accepting instead would reopen exactly the hole this closes, silently, while Redis is down. Each refusal is
counted in ``stats["redis_unavailable"]`` and logged at most once per ``log_interval``.
``fail_open=True`` (an explicit choice: availability over replay safety) falls back to the process's own
cache instead, so replays to the *same* worker stay refused while Redis is away.

The Redis calls are synchronous with a short ``socket_timeout`` (give the client one; 0.25 s is plenty on a
LAN): the nonce and ``start`` checks run inside the upgrade and webhook handlers, and the picows mode drives
admission synchronously. The answer claim runs in a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from voice_runtime.once import NonceCache, ReplayCache
from voice_runtime.server.limits import RateLimitedLog
from voice_runtime.transports.webhooks import InboundAnswers

if TYPE_CHECKING:  # pragma: no cover
    from voice_runtime.server.app import VoiceServer

log = logging.getLogger(__name__)

__all__ = ["RedisNonceCache", "SharedInboundAnswers", "SharedReplay", "share_replay_guards"]

#: Stored while the first worker is still building the answer document.
_BUILDING = b""


class _RedisGuard:
    """What both guards share: the client, the key namespace, fail-closed accounting."""

    def __init__(self, redis: Any, namespace: str, *, fail_open: bool, log_interval: float) -> None:
        self.redis = redis
        self.namespace = namespace
        self.fail_open = fail_open
        self.stats: Counter[str] = Counter()
        self._limited = RateLimitedLog(log, log_interval)

    def _unavailable(self, exc: Exception, what: str) -> None:
        self.stats["redis_unavailable"] += 1
        self._limited(
            "redis_unavailable", logging.ERROR,
            "replay guard cannot reach Redis (%s: %s); %s", type(exc).__name__, exc,
            f"{what} (fail_open: this worker's own cache only)" if self.fail_open else f"refusing {what} (fail closed)",
        )


class RedisNonceCache(_RedisGuard, ReplayCache):
    """:class:`~voice_runtime.once.NonceCache`'s interface (:class:`~voice_runtime.once.ReplayCache`) over
    Redis: each nonce accepted once per fleet."""

    def __init__(
        self,
        redis: Any,
        *,
        namespace: str,
        ttl: float = 600.0,
        fail_open: bool = False,
        fallback: NonceCache | None = None,
        log_interval: float = 10.0,
    ) -> None:
        super().__init__(redis, namespace, fail_open=fail_open, log_interval=log_interval)
        self.ttl = ttl
        self.fallback = fallback if fallback is not None else NonceCache(ttl=ttl)

    def first_use(self, nonce: str) -> bool:
        """True the first time ``nonce`` is seen by any worker within ``ttl``; False for a replay (or, failing
        closed, when Redis cannot say)."""
        try:
            fresh = bool(self.redis.set(self.namespace + nonce, b"1", nx=True, px=max(1, int(self.ttl * 1000))))
        except Exception as exc:  # redis-py raises ConnectionError/TimeoutError; anything else is as unknowable
            self._unavailable(exc, "a nonce")
            return self.fallback.first_use(nonce) if self.fail_open else False
        self.stats["accepted" if fresh else "replayed"] += 1
        return fresh


class SharedInboundAnswers(InboundAnswers):
    """:class:`InboundAnswers` whose "one answer per call id" holds across every worker sharing ``redis``.

    The first worker to ``SET NX`` the call id builds the answer (locally, as before) and stores the document;
    any other worker waits up to ``wait_timeout`` for that document and returns it (``fresh`` False), creating
    nothing. A build that answers None (reject) or raises releases the claim, so a retry is answered afresh.
    """

    def __init__(
        self,
        redis: Any,
        *,
        namespace: str,
        fail_open: bool = False,
        poll_interval: float = 0.05,
        log_interval: float = 10.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._guard = _RedisGuard(redis, namespace, fail_open=fail_open, log_interval=log_interval)
        self.poll_interval = poll_interval

    @property
    def redis_stats(self) -> Counter[str]:
        return self._guard.stats

    async def answer(self, call_id: str, build: Callable[[], Awaitable[str | None]]) -> tuple[str | None, bool]:
        if self.known(call_id):  # this worker answered it: the local entry has the document
            return await super().answer(call_id, build)
        redis, key = self._guard.redis, self._guard.namespace + call_id
        try:
            claimed = await asyncio.to_thread(redis.set, key, _BUILDING, nx=True, px=max(1, int(self.ttl * 1000)))
        except Exception as exc:
            self._guard._unavailable(exc, "an answer webhook")
            if self._guard.fail_open:
                return await super().answer(call_id, build)
            return None, False  # answered 503 + Retry-After by the carrier's route
        if not claimed:
            self.stats["repeated"] += 1
            self.stats["repeated_elsewhere"] += 1
            return await self._document_from_fleet(key), False
        try:
            document, fresh = await super().answer(call_id, build)
        except BaseException:
            await self._release(key)
            raise
        try:
            if document is None:
                await self._release(key)  # a refusal is not remembered: a retry is answered afresh
            else:
                await asyncio.to_thread(redis.set, key, document.encode(), xx=True, px=max(1, int(self.ttl * 1000)))
        except Exception as exc:  # this worker still answers; another worker's retry gets 503 until Redis is back
            self._guard._unavailable(exc, "storing an answer document")
        return document, fresh

    async def _document_from_fleet(self, key: str) -> str | None:
        """The document another worker built, waiting while it is still being built (None: not in time)."""
        deadline = time.monotonic() + self.wait_timeout
        while True:
            try:
                stored = await asyncio.to_thread(self._guard.redis.get, key)
            except Exception as exc:
                self._guard._unavailable(exc, "an answer webhook")
                return None
            if stored is None:  # released (the first build refused or failed) or expired: let the carrier retry
                return None
            if stored not in (b"", ""):  # "" is the claim of a build in progress (decode_responses or not)
                return stored.decode() if isinstance(stored, bytes) else str(stored)
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(self.poll_interval)  # no cross-process signal to wait on but the key itself

    async def _release(self, key: str) -> None:
        try:
            await asyncio.to_thread(self._guard.redis.delete, key)
        except Exception as exc:  # the claim then expires with its TTL
            self._guard._unavailable(exc, "releasing an answer claim")


class SharedReplay:
    """The configuration :func:`share_replay_guards` installs; applied to call controls registered later too."""

    def __init__(self, redis: Any, *, namespace: str = "vr:replay:", fail_open: bool = False) -> None:
        self.redis = redis
        self.namespace = namespace
        self.fail_open = fail_open

    def attach_server(self, server: VoiceServer) -> None:
        seen = server.start_guard.seen
        local = seen if isinstance(seen, NonceCache) else None
        server.start_guard.seen = RedisNonceCache(
            self.redis, namespace=self.namespace + "stream-call:", ttl=getattr(seen, "ttl", 6 * 3600.0),
            fail_open=self.fail_open, fallback=local,
        )

    def attach_call_control(self, control: Any) -> None:
        carrier = getattr(control, "carrier", "") or "carrier"
        old = control.inbound_answers
        control.inbound_answers = SharedInboundAnswers(
            self.redis, namespace=f"{self.namespace}{carrier}:answer:", fail_open=self.fail_open,
            ttl=old.ttl, max_calls=old.max_calls, wait_timeout=old.wait_timeout,
        )
        validator = getattr(control, "validator", None)  # absent while the control is still being built
        nonces = getattr(validator, "nonces", None)
        if validator is not None and isinstance(nonces, NonceCache):  # Plivo, shared after it was built: signature nonces fleet-wide
            validator.nonces = self.nonce_cache(carrier, nonces.ttl, fallback=nonces)

    def nonce_cache(self, carrier: str, ttl: float, *, fallback: NonceCache | None = None) -> RedisNonceCache:
        """A carrier's signature-nonce cache in Redis (``PlivoCallControl`` asks for it while it is built)."""
        return RedisNonceCache(
            self.redis, namespace=f"{self.namespace}{carrier}:nonce:", ttl=ttl, fail_open=self.fail_open, fallback=fallback
        )


def share_replay_guards(server: VoiceServer, redis: Any, *, namespace: str = "vr:replay:", fail_open: bool = False) -> SharedReplay:
    """Put ``server``'s replay guards in ``redis`` (see the module docstring); every worker calls it with the
    same Redis and ``namespace``. Call controls created before or after this call are both covered."""
    shared = SharedReplay(redis, namespace=namespace, fail_open=fail_open)
    server.shared_replay = shared
    shared.attach_server(server)
    for control in server.call_controls.values():
        shared.attach_call_control(control)
    return shared
