"""uvicorn's WebSocket protocol, made fair to the other calls on the loop (the FastAPI mode, issue #13).

Why: uvicorn's ``WebSocketsSansIOProtocol.data_received`` parses a whole socket read at once — with uvloop up
to 256 KiB, about 1,000 Twilio media frames — and queues every message in that one callback. A hostile socket
flooding the server thus holds the loop for the whole read (several ms each time) while every other call's
marks and audio wait, and it goes on doing so after we have closed it 1008: uvicorn keeps reading (and
parsing) until the peer's close frame arrives, which comes after everything the flooder had already sent.

:func:`fair_websocket_protocol` makes a subclass that changes two things and nothing else (each counted in the
server's ``limits.stats``: ``ws_reads_sliced``, ``ws_policy_closes_unread``):

* **slices**: a read larger than :data:`SLICE` bytes is fed to the parser :data:`SLICE` bytes at a time, one
  slice per loop turn (``call_soon``), with the socket's reading paused until the backlog is parsed. A
  carrier's frame is ~200–400 bytes and it sends 50 a second, so its reads are far below a slice and take the
  unchanged path; only a peer that sends faster than we parse ever waits a turn;
* **no reading after a policy close**: once the application closes with 1008 (a flood, too many protocol
  errors, an unknown stream), the rest of the backlog is discarded unparsed and the socket is no longer read;
  the transport is closed :data:`POLICY_CLOSE_GRACE` seconds later (long enough for the peer to read our
  close frame, which is already written), instead of parsing its flood until its close echo arrives.

It also offers the media route a **direct channel** (issue #19), found in the ASGI scope under
:data:`DIRECT_CHANNEL` and used by :class:`~voice_runtime.server.wire.UvicornDirectWire`. Why: through ASGI every
carrier frame costs a message dict, an ``asyncio.Queue`` hop, a task wake-up and a ``pause_reading`` /
``resume_reading`` pair (uvicorn pauses the socket after each queued message), and every outbound message an
awaited ``send`` with its own dict. Once the call is live the connection takes messages pushed to it on the
parser's callback (``vr_push_to``, as in the picows mode) and sends with ``vr_send_nowait`` when the socket is
writable. The handshake, admission, the close and everything before ``start`` still go through ASGI and
Starlette, unchanged; a uvicorn without this protocol (another ``ws=`` setting) simply has no channel, and the
route falls back to plain ASGI.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState

from voice_runtime.server.connection import WireClosed
from voice_runtime.server.push import Deliver, Ended, deliver_one, discard

#: The ASGI scope extension under which the protocol offers its direct channel to the route.
DIRECT_CHANNEL = "voice_runtime.direct_channel"

#: Bytes parsed per loop turn from one socket: ~30 Twilio frames, about what ``max_messages_per_turn`` (32)
#: lets the receive loop dispatch before it yields, so parsing and dispatch take turns at the same grain.
SLICE = 8 * 1024

#: Seconds between our 1008 close frame and closing the transport, unread (the peer reads the frame meanwhile).
POLICY_CLOSE_GRACE = 1.0

_POLICY_VIOLATION = 1008


def fair_websocket_protocol(stats: Counter[str]) -> type[WebSocketsSansIOProtocol]:
    """uvicorn's websockets (sans-I/O) protocol, parsing at most :data:`SLICE` bytes per loop turn."""

    class FairWebSocketProtocol(WebSocketsSansIOProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._vr_backlog = bytearray()  # read from the socket, not yet parsed
            self._vr_scheduled = False  # a call_soon(_vr_step) is pending
            self._vr_deaf = False  # closed 1008: input is discarded unparsed
            self._vr_deliver: Deliver | None = None  # the call's, on the direct channel (server/push.py)
            self._vr_ended: Ended | None = None  # called once, when delivery stops

        # ------------------------------------------------------------ the direct channel (issue #19)
        def handle_connect(self, event: Any) -> None:
            super().handle_connect(event)
            scope = getattr(self, "scope", None)
            if scope is not None:  # an upgrade it accepts; the app's task has not run yet
                scope["extensions"][DIRECT_CHANNEL] = self

        def vr_push_to(self, deliver: Deliver, ended: Ended) -> None:
            """From now on hand every message to ``deliver`` as it is parsed (the contract: server/push.py).

            What ASGI already queued (frames that came while the session was built) goes first, in order.
            """
            queue = self.queue
            self._vr_deliver, self._vr_ended = deliver, ended
            while not queue.empty():
                message = queue.get_nowait()
                if message["type"] != "websocket.receive":  # a disconnect: the call is over
                    self._vr_signal_closed()
                    return
                text = message.get("text")
                # After an end, _vr_deliver is ``discard``: the rest of the queue is drained unread.
                result = deliver_one(self._vr_deliver, text if text is not None else message.get("bytes") or b"")
                if result is not None:
                    self._vr_stop_delivery(result)
            self.queue = _PushedQueue(self, queue)  # type: ignore[assignment]
            if self.disconnected:
                self._vr_signal_closed()
            elif self.read_paused:  # uvicorn paused reading after the last queued message
                self.read_paused = False
                if not self._vr_backlog and not self._vr_deaf:
                    self.transport.resume_reading()

        def _vr_signal_closed(self) -> None:
            self._vr_stop_delivery(None)

        def _vr_stop_delivery(self, result: object) -> None:
            """The call is over (``result``: its end reason, an exception, or None when the socket closed)."""
            ended, self._vr_ended = self._vr_ended, None
            if self._vr_deliver is not None:
                self._vr_deliver = discard
            if ended is not None:
                ended(result)

        def send_receive_event_to_app(self) -> None:
            deliver = self._vr_deliver
            if deliver is None:
                super().send_receive_event_to_app()
                return
            data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
            self.frames = []
            if self.close_sent:
                return  # as uvicorn: past our close, messages are discarded
            message: str | bytes = data
            if self.curr_msg_data_type == "text":
                try:
                    message = data.decode()
                except UnicodeDecodeError:
                    pass  # handed on as bytes: the connection counts it as a binary frame, as a wire library would
            try:  # free unless it raises (3.11): the push contract's per-message part, inlined
                result = deliver(message)
            except Exception as exc:  # a bug in the call ends that call, never uvicorn's callback
                result = exc
            if result is not None:
                self._vr_stop_delivery(result)
            # No pause_reading here: nothing is queued, the message has been handled.

        @property
        def vr_writable(self) -> bool:
            """The socket takes data now: open, no close sent, and the transport is not paused for writing."""
            return not self.disconnected and not self.close_sent and self.writable.is_set()

        def vr_send_nowait(self, data: str | bytes) -> None:
            """One text message, written at once (callers check :attr:`vr_writable` first)."""
            if self.disconnected or self.close_sent:
                raise WireClosed("carrier socket closed")
            try:
                self.conn.send_text(data if type(data) is bytes else data.encode())  # type: ignore[union-attr]
            except InvalidState:
                raise WireClosed("carrier socket closed") from None
            self.transport.write(b"".join(self.conn.data_to_send()))

        async def vr_send(self, data: str | bytes) -> None:
            """As :meth:`vr_send_nowait`, after waiting for the transport to take data (back-pressure)."""
            await self.writable.wait()  # set again on connection loss too
            self.vr_send_nowait(data)

        def data_received(self, data: bytes) -> None:
            if self._vr_deaf:
                return
            if not self._vr_backlog and len(data) <= SLICE:
                super().data_received(data)  # the carrier's path: one small read, parsed at once as before
                return
            if not self._vr_backlog:
                stats["ws_reads_sliced"] += 1
            self._vr_backlog += data
            self._vr_pause()  # no more reads until this backlog is parsed
            if not self._vr_scheduled:
                self._vr_step()

        def _vr_step(self) -> None:
            self._vr_scheduled = False
            if self._vr_deaf or self.transport.is_closing():
                self._vr_backlog.clear()
                return
            backlog = self._vr_backlog
            head = bytes(backlog[:SLICE])
            del backlog[:SLICE]
            super().data_received(head)
            if self._vr_deaf or self.transport.is_closing():
                backlog.clear()
            elif backlog:
                self._vr_scheduled = True
                self.loop.call_soon(self._vr_step)  # the other calls' callbacks run before our next slice
            elif not self.read_paused:
                self._vr_resume()  # backlog parsed and uvicorn's own queue is drained: read again

        def _vr_pause(self) -> None:
            transport = self.transport
            if transport is not None and not transport.is_closing():
                transport.pause_reading()

        def _vr_resume(self) -> None:
            transport = self.transport
            if transport is not None and not transport.is_closing() and not self._vr_deaf:
                transport.resume_reading()

        async def receive(self) -> Any:
            """As uvicorn's, but reading resumes only once our own backlog is parsed too."""
            message = await self.queue.get()
            if self.read_paused and self.queue.empty():
                self.read_paused = False
                if not self._vr_backlog and not self._vr_deaf:
                    self.transport.resume_reading()
            return message

        def handle_parser_exception(self) -> None:
            """A frame the parser refuses (over the size limit: 1009; malformed: 1002/1007), as uvicorn handles it
            but without closing the transport at once. uvicorn closes it right after writing the close frame,
            while the peer is usually still sending the rest of an oversized message: that close, with unread
            data, resets the connection, and a peer that had not yet read our close frame sees 1006, not the
            reason. Like a policy close: stop reading and close the transport :data:`POLICY_CLOSE_GRACE` later."""
            assert self.conn.close_sent is not None
            code, reason = self.conn.close_sent.code, self.conn.close_sent.reason
            self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.close_sent = True
            self._vr_deaf = True
            stats["ws_parser_closes_unread"] += 1
            self._vr_backlog.clear()
            self._vr_pause()
            if self.close_timer is not None:
                self.close_timer.cancel()
            self.close_timer = self.loop.call_later(POLICY_CLOSE_GRACE, self.transport.close)

        async def send(self, message: Any) -> None:
            policy_close = (
                message.get("type") == "websocket.close"
                and message.get("code") == _POLICY_VIOLATION
                and self.handshake_complete
                and not self.close_sent
            )
            await super().send(message)
            if policy_close and self.close_sent:
                # uvicorn resumes reading to wait for the peer's close echo; after a flood that echo is behind
                # everything the peer already sent. Stop reading instead and close the transport shortly.
                self._vr_deaf = True
                stats["ws_policy_closes_unread"] += 1
                self._vr_backlog.clear()
                self._vr_pause()
                if self.close_timer is not None:
                    self.close_timer.cancel()
                self.close_timer = self.loop.call_later(POLICY_CLOSE_GRACE, self.transport.close)

    return FairWebSocketProtocol


class _PushedQueue:
    """uvicorn's receive queue once the direct channel is in use: a disconnect reaches the consumer's
    ``closed()`` at once (uvicorn puts it here on connection loss, on the peer's close and on shutdown), and is
    kept for an ASGI ``receive()`` as before. Received messages are never queued (they are pushed)."""

    def __init__(self, protocol: Any, queue: Any) -> None:
        self._protocol, self._queue = protocol, queue

    def put_nowait(self, message: Any) -> None:
        self._queue.put_nowait(message)
        if message.get("type") == "websocket.disconnect":
            self._protocol._vr_signal_closed()

    def get_nowait(self) -> Any:
        return self._queue.get_nowait()

    async def get(self) -> Any:
        return await self._queue.get()

    def empty(self) -> bool:
        return self._queue.empty()


__all__ = ["DIRECT_CHANNEL", "POLICY_CLOSE_GRACE", "SLICE", "fair_websocket_protocol"]
