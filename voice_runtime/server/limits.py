"""Server-wide limits: connections, calls, header deadlines — and log lines that cannot become a flood.

Why: a voice server's costly resources (file descriptors, paid STT/TTS sessions, flow threads) are reachable
by anyone who can open a TCP connection. Without caps, 1,100 half-sent upgrades made a genuine signed call
fail its handshake and the process logged ~135k ``accept() out of system resource`` ERROR lines in seconds.
With them:

* ``max_connections`` — TCP connections served at once (HTTP and WebSocket, both modes). Over it, a new
  connection gets ``503`` + ``Retry-After`` at once and is closed; it is never read. The default leaves room
  under the process's file-descriptor limit (half of ``RLIMIT_NOFILE``) so ``accept()`` never hits ``EMFILE``.
* ``max_calls`` — live media streams (calls). Over it, an upgrade gets ``503`` + ``Retry-After`` before any
  session exists, and inbound webhooks answer ``503`` too (the carrier retries or uses its fallback URL).
* ``header_timeout`` — a connection must finish its request head (or the upgrade request) this soon after
  it opens, or after its previous response on keep-alive. A slowloris socket is closed at the deadline.

Every refusal is counted in ``stats``; the log line for each kind is rate-limited (:class:`RateLimitedLog`:
at most one per ``interval``, saying how many were suppressed), and :func:`quiet_accept_errors` does the
same for asyncio's own ``accept() out of system resource`` line.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


#: The listen backlog of every runner (uvicorn's default, and ``workers.py``'s sockets). asyncio's
#: ``create_server`` defaults to 100, which the websockets-native and picows modes inherited: while the loop
#: is busy (a burst of calls, a GC pause) Linux queues at most backlog + 1 finished handshakes, and drops the
#: SYNs after those, so the 102nd caller of a burst waited for its 1 s SYN retransmit, or timed out.
#: (The kernel caps it at ``net.core.somaxconn``.)
LISTEN_BACKLOG = 2048


def _fd_limit() -> int:
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        return int(soft) if soft > 0 else 1024
    except (ImportError, OSError, ValueError):
        return 1024


def default_max_connections() -> int:
    """Half the descriptor limit: each call also holds provider sockets, files, pipes."""
    return max(64, _fd_limit() // 2)


class RateLimitedLog:
    """One log line per ``key`` per ``interval`` seconds; the next one says how many were suppressed."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, key: str, level: int, message: str, *args: object) -> bool:
        """Log unless ``key`` was logged less than ``interval`` ago; returns whether it logged."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self._suppressed[key] += 1
                return False
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            message += f" ({suppressed} more like this in the last {self.interval:.0f}s)"
        self.logger.log(level, message, *args)
        return True


@dataclass
class ServerLimits:
    """The caps and deadlines one :class:`~voice_runtime.server.app.VoiceServer` enforces (both modes)."""

    max_connections: int | None = field(default_factory=default_max_connections)
    max_calls: int | None = None
    header_timeout: float = 10.0
    retry_after: int = 5  # seconds, in every 503 we send
    stats: Counter[str] = field(default_factory=Counter)
    log_interval: float = 10.0
    _limited_log: RateLimitedLog | None = field(default=None, repr=False)

    @property
    def limited_log(self) -> RateLimitedLog:
        if self._limited_log is None:
            self._limited_log = RateLimitedLog(log, self.log_interval)
        return self._limited_log

    def refused(self, kind: str, message: str, *args: object) -> None:
        """Count a refusal of ``kind`` and log it (WARNING, rate-limited per kind)."""
        self.stats[kind] += 1
        self.limited_log(kind, logging.WARNING, message, *args)

    def service_unavailable(self) -> bytes:
        """A complete HTTP/1.1 503 with Retry-After, written to a socket we will not read from."""
        body = b"server at capacity, retry later\n"
        return (
            b"HTTP/1.1 503 Service Unavailable\r\n"
            + f"Retry-After: {self.retry_after}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n".encode()
            + b"Connection: close\r\n\r\n"
            + body
        )


class _AcceptErrorFilter(logging.Filter):
    """Rate-limits asyncio's accept-storm lines when file descriptors run out (``EMFILE``).

    asyncio's accept loop tries up to ``backlog`` (uvicorn: 2048) accepts per wake-up and, on ``EMFILE``, logs
    ``socket.accept() out of system resource`` *and* schedules a retry of ``_start_serving`` for every one of
    those attempts — thousands of ERROR lines per burst, and as many ``Exception in callback …_start_serving``
    tracebacks if the server stops meanwhile. One line per kind per ``interval`` is enough to say what happened.
    """

    PATTERNS = (("accept", "out of system resource"), ("start_serving", "_start_serving"))

    def __init__(self, interval: float) -> None:
        super().__init__()
        self.interval = interval
        self._last: dict[str, float] = {}
        self.suppressed: Counter[str] = Counter()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        kind = next((k for k, needle in self.PATTERNS if needle in message), None)
        if kind is None:
            return True
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.interval:
                self.suppressed[kind] += 1
                return False
            self._last[kind] = now
            suppressed = self.suppressed.pop(kind, 0)
        if suppressed:
            record.msg = f"{message} ({suppressed} more in the last {self.interval:.0f}s: file descriptors exhausted)"
            record.args = None
        return True


_accept_filter: _AcceptErrorFilter | None = None


def quiet_accept_errors(interval: float = 10.0) -> logging.Filter:
    """Install (once) the rate limit on asyncio's accept-error log line; returns the filter."""
    global _accept_filter
    if _accept_filter is None:
        _accept_filter = _AcceptErrorFilter(interval)
        logging.getLogger("asyncio").addFilter(_accept_filter)
    return _accept_filter


__all__ = ["LISTEN_BACKLOG", "RateLimitedLog", "ServerLimits", "default_max_connections", "quiet_accept_errors"]
