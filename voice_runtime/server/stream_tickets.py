"""Replay safety for the tokenless ``/stream`` route: one session per CallSid, and optional per-call tickets.

The threat. A call we answer through our own webhook streams to ``/stream/{token}``: the token is single use,
so a replayed upgrade opens nothing. The tokenless ``/stream`` route exists for static TwiML (a TwiML Bin or
a number configured once with ``<Connect><Stream url="wss://…/stream">``). Its upgrade is signed with
``X-Twilio-Signature`` — but a Twilio signature covers only the URL, with no nonce and no timestamp, so a
captured signed upgrade (a proxy log, a debugging dump, a compromised intermediary) is valid *forever*:
each replay used to open a new session, STT, TTS and flow, billed to you.

Two defences, both checked on the stream's ``start`` message (the first point where the CallSid is known):

* **One session per CallSid, ever** (always on): :class:`StartGuard` remembers the call ids it admitted
  (bounded, for ``remember_seconds``); a second ``start`` for the same call is refused (close 1008). A replay
  with a *fresh* CallSid in its ``start`` still gets through this alone, hence:
* **Per-call tickets** (opt-in, ``VoiceServer.stream_tickets = StreamTickets(secret)``): the webhook that
  produces the TwiML adds ``<Parameter name="vr_ticket" value="…">`` — an HMAC over CallSid + expiry made with
  a server secret. Twilio passes it back in ``start.customParameters``; a ``start`` without a valid,
  unexpired ticket for *its own* CallSid is refused. A replay can neither mint a ticket for a new CallSid nor
  reuse an old one past its expiry, and within the expiry the CallSid rule refuses it.

::

    tickets = StreamTickets(os.environ["VOICE_STREAM_SECRET"])
    server.stream_tickets = tickets                 # /stream now requires a ticket
    twiml = build_stream_twiml("wss://voice.example.com/stream", tickets.parameters(call_sid))
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections import Counter
from voice_runtime.once import NonceCache, ReplayCache

log = logging.getLogger(__name__)

PARAMETER = "vr_ticket"


class StreamTickets:
    """Issues and checks ``expiry.signature`` tickets bound to one CallSid (HMAC-SHA256 with ``secret``)."""

    def __init__(self, secret: str | bytes | None = None, *, ttl: float = 300.0) -> None:
        if secret is None:
            secret = secrets.token_bytes(32)  # per process: fine for one server, not for a fleet
        self._key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
        if len(self._key) < 16:
            raise ValueError("a stream ticket secret needs at least 16 bytes")
        self.ttl = ttl

    def _mac(self, call_sid: str, expiry: int) -> str:
        message = f"{call_sid}|{expiry}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def issue(self, call_sid: str, *, now: float | None = None) -> str:
        """A ticket for ``call_sid`` valid ``ttl`` seconds (wall-clock: it crosses the carrier and back)."""
        if not call_sid:
            raise ValueError("a stream ticket needs the call's id (CallSid / CallUUID)")
        expiry = int((time.time() if now is None else now) + self.ttl)
        return f"{expiry}.{self._mac(call_sid, expiry)}"

    def parameters(self, call_sid: str) -> dict[str, str]:
        """``{"vr_ticket": …}`` for the TwiML ``<Parameter>`` list."""
        return {PARAMETER: self.issue(call_sid)}

    def check(self, call_sid: str, ticket: str | None, *, now: float | None = None) -> str | None:
        """None when ``ticket`` is valid for ``call_sid`` now; else why not (``missing``/``malformed``/…)."""
        if not ticket:
            return "missing"
        expiry_text, _, mac = ticket.partition(".")
        if not expiry_text.isdigit() or not mac:
            return "malformed"
        if not hmac.compare_digest(mac, self._mac(call_sid, int(expiry_text))):
            return "invalid"
        if int(expiry_text) < (time.time() if now is None else now):
            return "expired"
        return None


class StartGuard:
    """Checked on every tokenless stream's ``start``: each CallSid once, and a valid ticket when required."""

    def __init__(self, *, remember_seconds: float = 6 * 3600.0, max_calls: int = 100_000) -> None:
        self.seen: ReplayCache = NonceCache(ttl=remember_seconds, max_size=max_calls)  # fleet: fleet_replay.py
        self.stats: Counter[str] = Counter()

    def admit(self, call_id: str, custom_parameters: dict[str, str], tickets: StreamTickets | None) -> bool:
        if not call_id:
            self.stats["refused_no_call_id"] += 1
            log.warning("refused stream: its start carries no call id")
            return False
        if tickets is not None:
            problem = tickets.check(call_id, custom_parameters.get(PARAMETER))
            if problem is not None:
                self.stats[f"refused_ticket_{problem}"] += 1
                log.warning("refused stream for call %s: stream ticket %s", call_id, problem)
                return False
        if not self.seen.first_use(call_id):
            self.stats["refused_repeated_call"] += 1
            log.warning("refused stream for call %s: that call already had a session (replayed upgrade?)", call_id)
            return False
        self.stats["admitted"] += 1
        return True


__all__ = ["PARAMETER", "StartGuard", "StreamTickets"]
