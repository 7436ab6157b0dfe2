"""uvicorn with a header deadline and a connection cap (uvicorn has neither).

uvicorn times out idle keep-alive connections but never a request head that is still arriving: a socket that
sends ``GET /stream HTTP/1.1\\r\\nHost: x\\r\\n`` and then one byte a minute stays open forever (measured: 300
such sockets all open after 40 s; 1,100 made a genuine call fail its handshake). uvicorn's own
``limit_concurrency`` answers 503 only once a request head has been read, so it does not help either.

:func:`guarded_protocol` subclasses uvicorn's HTTP protocol (the one ``http="auto"`` picks) to add, per
connection:

* **a cap**: when ``max_connections`` connections (HTTP and upgraded WebSockets, uvicorn's own
  ``server_state.connections``) are already open, the new one is answered ``503`` + ``Retry-After`` and
  closed without reading a byte;
* **a header deadline**: the request head (up to the blank line) must arrive within ``header_timeout`` of
  the connection opening, and again after each response on a kept-alive connection; otherwise the socket is
  closed. Once a WebSocket upgrade completes uvicorn swaps in its WebSocket protocol and the deadline no
  longer applies (the call's own ``start_timeout`` takes over).

The runners (``VoiceServer.start``/``serve``) pass it as uvicorn's ``http=`` protocol class.
"""

from __future__ import annotations

import asyncio
from typing import Any

from voice_runtime.server.limits import ServerLimits

_END_OF_HEAD = b"\r\n\r\n"


def guarded_protocol(limits: ServerLimits, base: type | None = None) -> type:
    """A uvicorn HTTP protocol class enforcing ``limits`` (``base``: uvicorn's auto-selected protocol)."""
    if base is None:
        from uvicorn.protocols.http.auto import AutoHTTPProtocol

        base = AutoHTTPProtocol

    class GuardedHTTPProtocol(base):  # type: ignore[valid-type, misc]
        _vr_refused = False
        _vr_timer: asyncio.TimerHandle | None = None
        _vr_head_done = False
        _vr_tail = b""

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            cap = limits.max_connections
            if cap is not None and len(self.server_state.connections) >= cap:
                self._vr_refused = True
                limits.refused(
                    "connections_refused", "max_connections (%d) reached: new connections get 503 + Retry-After", cap
                )
                try:
                    transport.write(limits.service_unavailable())
                finally:
                    transport.close()
                return
            super().connection_made(transport)
            self._vr_arm()

        def _vr_arm(self) -> None:
            self._vr_head_done = False
            self._vr_tail = b""
            if self._vr_timer is not None:
                self._vr_timer.cancel()
            self._vr_timer = self.loop.call_later(limits.header_timeout, self._vr_expired)

        def _vr_expired(self) -> None:
            self._vr_timer = None
            if self._vr_head_done or self.transport.is_closing():
                return
            limits.refused(
                "header_timeouts", "closed a connection that sent no complete request head within %.1fs (slowloris?)",
                limits.header_timeout,
            )
            self.transport.close()

        def data_received(self, data: bytes) -> None:
            if self._vr_refused:
                return
            if not self._vr_head_done:
                window = self._vr_tail + data
                if _END_OF_HEAD in window:
                    self._vr_head_done = True
                    if self._vr_timer is not None:
                        self._vr_timer.cancel()
                        self._vr_timer = None
                else:
                    self._vr_tail = window[-3:]
            super().data_received(data)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._vr_arm()  # the next request on this kept-alive connection gets its own deadline

        def connection_lost(self, exc: Exception | None) -> None:
            if self._vr_timer is not None:
                self._vr_timer.cancel()
                self._vr_timer = None
            if self._vr_refused:
                return
            super().connection_lost(exc)

    GuardedHTTPProtocol.__name__ = f"Guarded{base.__name__}"
    return GuardedHTTPProtocol


__all__ = ["guarded_protocol"]
