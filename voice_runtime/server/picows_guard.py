"""picows with a header deadline and a connection cap: the picows mode's share of :class:`ServerLimits`.

What picows offers and why it is not enough on its own:

* ``ws_create_server(websocket_handshake_timeout=...)`` closes a connection whose upgrade request has not
  arrived in time, but silently (one INFO line on picows' logger per socket): nothing counts it, and an
  operator cannot tell a slowloris from a slow network.
* it has no connection cap at all, and ``ws_create_server`` builds its protocol inside itself, so nothing can
  be said about a connection before its request head is read.

So this module builds the protocol itself: :func:`guarded_protocol_factory` returns a factory of a subclass of
picows' own ``WSProtocol`` (constructed with exactly the arguments ``ws_create_server`` passes) that adds, per
connection, the same two things :mod:`~voice_runtime.server.uvicorn_guard` adds to uvicorn:

* **a cap**: with ``max_connections`` TCP connections already open (handshakes and live calls alike), a new
  one is answered ``503`` + ``Retry-After`` and closed without a byte of it being read;
* **a header deadline**: the upgrade request must be answered within ``header_timeout`` of the connection
  opening, else the socket is closed, counted in ``stats["header_timeouts"]`` and logged (rate-limited).

Only ``connection_made`` and ``connection_lost`` are overridden: the per-frame path (``get_buffer`` /
``buffer_updated``, Cython) is untouched, so the mode keeps its speed. The listening socket is made with
``loop.create_server`` as ``ws_create_server`` does (picows' optional aiofastnet path is not used).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from picows import WSAutoPingStrategy
from picows import picows as _picows_ext

from voice_runtime.server.limits import ServerLimits

__all__ = ["guarded_protocol_factory", "OPEN_CONNECTIONS"]

#: The ``limits.stats`` key holding how many TCP connections the picows mode has open right now.
OPEN_CONNECTIONS = "picows_open_connections"

#: picows' server protocol class (not in its type stubs: ``ws_create_server`` builds it internally).
WSProtocol: Any = _picows_ext.WSProtocol  # type: ignore[attr-defined]


class _GuardedWSProtocol(WSProtocol):  # type: ignore[misc, valid-type]
    """picows' server protocol, refused over the cap and closed at the header deadline."""

    _vr_limits: ServerLimits  # set on the per-listener subclass
    _vr_refused = False
    _vr_counted = False
    _vr_timer: asyncio.TimerHandle | None = None
    _vr_raw: Any = None  # the asyncio transport under picows' WSTransport

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # picows' state first, so its connection_lost stays valid
        limits = self._vr_limits
        cap = limits.max_connections
        if cap is not None and limits.stats[OPEN_CONNECTIONS] >= cap:
            self._vr_refused = True
            limits.refused("connections_refused", "max_connections (%d) reached: new connections get 503 + Retry-After", cap)
            try:
                transport.write(limits.service_unavailable())
            finally:
                transport.close()  # flushes the 503; reading never starts
            return
        limits.stats[OPEN_CONNECTIONS] += 1
        self._vr_counted = True
        self._vr_raw = transport
        self._vr_timer = asyncio.get_running_loop().call_later(limits.header_timeout, self._vr_expired)

    def _vr_expired(self) -> None:
        self._vr_timer = None
        if self.listener is not None or self._vr_raw.is_closing():  # upgraded (a call), or already going
            return
        limits = self._vr_limits
        limits.refused(
            "header_timeouts", "closed a connection that sent no complete upgrade request within %.1fs (slowloris?)",
            limits.header_timeout,
        )
        self._vr_raw.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._vr_timer is not None:
            self._vr_timer.cancel()
            self._vr_timer = None
        if self._vr_counted:
            self._vr_counted = False
            self._vr_limits.stats[OPEN_CONNECTIONS] -= 1
        super().connection_lost(exc)


def guarded_protocol_factory(
    limits: ServerLimits,
    listener_factory: Callable[[Any], Any],
    *,
    max_frame_size: int,
    logger: logging.Logger | None = None,
) -> Callable[[], Any]:
    """A protocol factory for ``loop.create_server``: picows' server protocol with ``limits`` enforced.

    The options are the ones the picows mode passes to ``ws_create_server``: exceptions in a frame callback
    disconnect, no auto-ping (carriers do not answer pings on media streams), auto-pong on. picows' own
    handshake timeout is off: the guard's deadline replaces it, counted. One protocol is built here, so a
    picows whose ``WSProtocol`` takes other arguments fails at start-up with a clear error, not per connection.
    """
    protocol_class = type("GuardedWSProtocol", (_GuardedWSProtocol,), {"_vr_limits": limits})
    log = logger or logging.getLogger("picows.server")

    def factory() -> Any:
        return protocol_class(
            None,  # host:port (client side only)
            None,  # path (client side only)
            False,  # is_client_side
            listener_factory,
            log,
            True,  # disconnect_on_exception
            None,  # websocket_handshake_timeout: the guard's header deadline instead
            False, 20.0, 20.0, WSAutoPingStrategy.PING_WHEN_IDLE,  # auto-ping off
            True,  # enable_auto_pong
            max_frame_size,
            None,  # extra_headers
            16 * 1024,  # read_buffer_init_size (picows' default)
        )

    try:
        factory()
    except TypeError as exc:  # picows changed WSProtocol's constructor
        import picows

        raise RuntimeError(
            f"picows {getattr(picows, '__version__', '?')} is not supported by voice_runtime's connection guard: {exc}"
        ) from exc
    return factory
