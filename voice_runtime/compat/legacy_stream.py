"""Serving ``register_voice_websocket`` the way 0.1.x callers drive it.

Two adapters, both thin:

* :class:`CallbackWire` — a :class:`~voice_runtime.server.connection.WireSocket` over any object with the
  Starlette ``WebSocket`` methods 0.1.x used (``receive_text``, ``send_text``, ``close(code)``), so the route
  runs on test doubles as well as on uvicorn. It remembers who closed the socket: after the carrier closed it
  (or we did) it never sends a second close — a server-side close of a Twilio bidirectional stream is logged
  by Twilio as error 31921, so an unnecessary one is not harmless.
* :func:`serve_session_like` — for a *session-like* object that is not a :class:`VoiceSession` (0.1.x
  users subclassed or imitated the session and relied on the transport calling its public methods). It
  speaks the 0.1.x transport-side protocol to that object: ``call_sid`` / ``signal_ws_connected(stream_sid)``
  on ``start``, ``put_inbound(audio)`` + ``tap_caller(audio)`` per media frame, ``signal_mark_received(name)``,
  ``signal_disconnected()`` once at the end; agent audio from ``await get_outbound()`` and marks from
  ``await get_pending_mark()``; and the STT from ``stt_factory``/``stt_secondary_factory``/``on_stt_ready``,
  started on ``inbound`` and stopped at the end. A real ``VoiceSession`` never comes here: it gets the
  full connection loop.
"""

from __future__ import annotations

import asyncio
import binascii
import json
import logging
from base64 import b64decode, b64encode
from typing import Any

from voice_runtime.server.connection import WireClosed

log = logging.getLogger(__name__)

__all__ = ["CallbackWire", "opening_dialect", "serve_session_like"]


class CallbackWire:
    """``WireSocket`` over ``receive_text``/``send_text``/``close(code)``; closes at most once, never after the peer."""

    __slots__ = ("ws", "peer_closed", "closed_by_us", "_pushed_back")

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.peer_closed = False
        self.closed_by_us = False
        self._pushed_back: list[str | bytes] = []

    def push_back(self, message: str | bytes) -> None:
        """Return a message already read (it is the next one :meth:`receive` gives)."""
        self._pushed_back.append(message)

    async def receive(self) -> str | bytes:
        if self._pushed_back:
            return self._pushed_back.pop()
        if self.peer_closed or self.closed_by_us:
            raise WireClosed("closed")
        try:
            return await self.ws.receive_text()
        except asyncio.CancelledError:
            raise
        except KeyError:  # Starlette: a binary frame has no "text" — a countable protocol error, not a close
            return b""
        except Exception as exc:  # WebSocketDisconnect, or RuntimeError after a disconnect message
            self.peer_closed = True
            raise WireClosed(str(exc)) from None

    async def send(self, text: str) -> None:
        try:
            await self.ws.send_text(text)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise WireClosed(str(exc)) from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.peer_closed or self.closed_by_us:
            return
        self.closed_by_us = True
        try:
            await self.ws.close(code=code)
        except asyncio.CancelledError:
            raise
        except Exception:
            pass


async def opening_dialect(wire: CallbackWire) -> Any:
    """The dialect for this stream, read from its first message (which is pushed back for the loop).

    The carriers' own openings are detected as everywhere else. A bare ``{"event": "connected"}`` — what
    0.1.x-era fakes and bridges send, without Twilio's ``protocol``/``version`` — is Twilio's: the 0.1.x route
    was a Twilio Media Streams route. Anything else is left to the connection (which refuses it).
    """
    from voice_runtime.errors import RemoteProtocolError
    from voice_runtime.protocols import detect_dialect, get_dialect

    try:
        first = await wire.receive()
    except WireClosed:
        return None
    wire.push_back(first)
    if isinstance(first, bytes):
        return None
    try:
        return detect_dialect(first)
    except RemoteProtocolError:
        pass
    try:
        message = json.loads(first)
    except ValueError:
        return None
    if isinstance(message, dict) and message.get("event") == "connected":
        return get_dialect("twilio")
    return None


def _media(stream_sid: str | None, chunk: bytes) -> str:
    return json.dumps({"event": "media", "streamSid": stream_sid, "media": {"payload": b64encode(chunk).decode()}})


def _mark(stream_sid: str | None, name: str) -> str:
    return json.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


async def _pull(wire: CallbackWire, session: Any, getter: str, encode: Any) -> None:
    """Forward ``await session.<getter>()`` to the wire until it ends; a failed send ends the call."""
    read = getattr(session, getter)
    while True:
        item = await read()
        try:
            await wire.send(encode(getattr(session, "stream_sid", None), item))
        except WireClosed:
            return


def _build_stt(session: Any) -> Any:
    stt = getattr(session, "stt", None)
    factory = getattr(session, "stt_factory", None)
    if stt is None and factory is not None:
        stt = factory()
        secondary = getattr(session, "stt_secondary_factory", None)
        if secondary is not None:
            from voice_runtime.stt_tee import SttTee

            stt = SttTee(stt, secondary())
        session.stt = stt
    if stt is not None:
        ready = getattr(session, "on_stt_ready", None)
        if ready is not None:
            ready(stt)
    return stt


async def serve_session_like(wire: CallbackWire, session: Any, *, max_bad_messages: int = 1000) -> None:
    """Run one stream for a session-like object (see module doc). Never raises for peer misbehaviour."""
    tasks: list[asyncio.Task[Any]] = []
    stt: Any = None
    ended = False
    bad = 0
    try:
        while True:
            try:
                text = await wire.receive()
            except WireClosed:
                break
            try:
                msg = json.loads(text) if text else None
                event = msg.get("event") if isinstance(msg, dict) else None
            except ValueError:
                event = None
            if event is None:
                bad += 1
                if bad > max_bad_messages:
                    await wire.close(1008)
                    break
                continue
            if event == "media":
                try:
                    audio = b64decode(msg["media"]["payload"], validate=True)  # type: ignore[index]  # narrow ignore so scripts/typecheck.sh holds zero errors; a real fix is for this module's owner
                except (KeyError, TypeError, binascii.Error, ValueError):
                    bad += 1
                    continue
                session.put_inbound(audio)
                session.tap_caller(audio)
            elif event == "mark":
                name = (msg.get("mark") or {}).get("name") if isinstance(msg.get("mark"), dict) else None  # type: ignore[union-attr]  # narrow ignore so scripts/typecheck.sh holds zero errors; a real fix is for this module's owner
                if isinstance(name, str):
                    session.signal_mark_received(name)
            elif event == "start" and not tasks:
                start = msg.get("start") if isinstance(msg.get("start"), dict) else {}  # type: ignore[union-attr]  # narrow ignore so scripts/typecheck.sh holds zero errors; a real fix is for this module's owner
                stream_sid = msg.get("streamSid") or start.get("streamSid")  # type: ignore[union-attr]  # narrow ignore so scripts/typecheck.sh holds zero errors; a real fix is for this module's owner
                if start.get("callSid"):
                    session.call_sid = start["callSid"]
                session.signal_ws_connected(stream_sid)
                tasks.append(asyncio.ensure_future(_pull(wire, session, "get_outbound", _media)))
                tasks.append(asyncio.ensure_future(_pull(wire, session, "get_pending_mark", _mark)))
                try:
                    stt = _build_stt(session)
                    if stt is not None:
                        tasks.append(asyncio.ensure_future(stt.start(session.inbound)))
                except Exception:
                    log.exception("STT could not be created; the call continues without speech recognition")
            elif event == "stop":
                ended = True
                session.signal_disconnected()
                break
    finally:
        if not ended:
            session.signal_disconnected()
        if stt is not None:
            try:
                await asyncio.wait_for(stt.stop(), 5.0)
            except Exception:
                log.exception("STT stop failed")
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await wire.close(1000)
