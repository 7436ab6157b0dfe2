"""The carrier side a campaign worker needs: dial, look up call records, hang up.

A worker that dies mid-dial leaves a question only the carrier can answer: did the call go out? So besides
``dial`` a :class:`Dialer` can list the account's recent calls to a number (Twilio: ``GET /Calls.json?To=``)
and fetch one call's status, which is how a reclaimed job is reconciled instead of blindly redialled.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

log = logging.getLogger(__name__)

__all__ = ["CallRecord", "Dialer", "TwilioDialer", "DialRejected", "TERMINAL_STATUSES", "dialer_for"]

TERMINAL_STATUSES = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})


class DialRejected(Exception):
    """The carrier answered the dial request with an error: the call was not placed."""


@dataclass(frozen=True)
class CallRecord:
    sid: str
    status: str
    created: float  # epoch seconds (carrier clock)


class Dialer(Protocol):
    account: str
    #: The carrier's registry name (``voice_runtime.carriers``); a worker takes only its carrier's campaigns.
    carrier: str

    def dial(self, number: str, *, before_send: Callable[[], None] | None = None, **options: Any) -> Any:
        """Place the call; returns an ``OutboundCall`` (``call_id``, ``session``, ``wait_answered``).

        ``before_send`` runs right before the dial request goes on the wire (the CPS gate: everything that
        can be prepared — session, TwiML, the request — is done before it, so the send follows the slot
        closely). Raises :class:`DialRejected` when the carrier refused it; any other exception means
        *unknown*."""

    def find_calls(self, number: str, since: float) -> list[CallRecord]:
        """The account's calls to ``number`` created at or after ``since`` (epoch s), newest first."""

    def call_status(self, sid: str, *, number: str = "", since: float = 0.0) -> str:
        """The carrier's status of call ``sid``. ``number`` and ``since`` (the job's number and dial intent)
        let a carrier whose first call id is not its final one (Plivo's request_uuid) find the call."""

    def hangup(self, sid: str) -> None: ...

    def forget(self, sid: str) -> None: ...


class TwilioDialer:
    """A :class:`Dialer` over a :class:`~voice_runtime.transports.twilio_control.TwilioCallControl`.

    It wraps the SDK client's HTTP layer once, so that ``before_send`` runs inside ``http_client.request``
    for the ``POST …/Calls.json`` of this thread's dial: after the SDK built the request, before it is sent.
    """

    carrier = "twilio"

    def __init__(self, control: Any) -> None:
        self.control = control
        self.account = control.credentials.account_sid
        self._gate = threading.local()
        client = control.client
        if not isinstance(client.http_client, _GatedHttpClient):
            client.http_client = _GatedHttpClient(client.http_client, self._gate)

    def warm_up(self) -> None:
        """One cheap authenticated request, so the first real dial does not pay for imports and TLS/TCP setup.

        Measured: a cold first dial left ~0.3 s later than its CPS slot; that lateness bunches dials at the
        carrier. ``CampaignWorker.start`` calls this.
        """
        from voice_runtime.transports.twilio_call import build_stream_twiml

        build_stream_twiml("wss://warm.invalid/stream", {"warm": "1"}, status_callback=None, default_path=None)
        try:
            self.control.client.calls.list(limit=1)
        except Exception as exc:
            log.warning("carrier warm-up request failed: %s", exc)

    def dial(self, number: str, *, before_send: Callable[[], None] | None = None, **options: Any) -> Any:
        from twilio.base.exceptions import TwilioRestException

        self._gate.before_send = before_send
        try:
            return self.control.dial(number, **options)
        except TwilioRestException as exc:
            raise DialRejected(f"HTTP {exc.status} code {exc.code}: {exc.msg}") from exc
        finally:
            self._gate.before_send = None

    def find_calls(self, number: str, since: float) -> list[CallRecord]:
        records = []
        for call in self.control.client.calls.list(to=number, limit=50):
            created = call.date_created.timestamp() if isinstance(call.date_created, datetime) else 0.0
            if created >= since:
                records.append(CallRecord(call.sid, str(call.status), created))
        return sorted(records, key=lambda r: -r.created)

    def call_status(self, sid: str, *, number: str = "", since: float = 0.0) -> str:
        return str(self.control.client.calls(sid).fetch().status)

    def hangup(self, sid: str) -> None:
        self.control.hangup_call(sid)

    def forget(self, sid: str) -> None:
        self.control.forget(sid)


class _GatedHttpClient:
    """The SDK's HTTP client, running this thread's ``before_send`` (once) before a call-create request."""

    def __init__(self, inner: Any, gate: threading.local) -> None:
        self.inner = inner
        self.gate = gate

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        before_send = getattr(self.gate, "before_send", None)
        if before_send is not None and method.upper() == "POST" and url.split("?", 1)[0].endswith("/Calls.json"):
            self.gate.before_send = None
            before_send()
        return self.inner.request(method, url, *args, **kwargs)


def dialer_for(control: Any) -> Any:
    """The campaign dialer for a call control, chosen through the carrier registry by ``control.carrier``:
    ``dialer_for(TwilioCallControl(...))`` is a :class:`TwilioDialer`, ``dialer_for(PlivoCallControl(...))``
    a :class:`~voice_runtime.campaign.plivo_dialer.PlivoDialer`."""
    from voice_runtime.carriers import get_carrier

    name = getattr(control, "carrier", None)
    if not name:
        raise ValueError(f"{type(control).__name__} names no carrier: pass a carrier's call control")
    return get_carrier(str(name)).load_campaign_dialer()(control)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
