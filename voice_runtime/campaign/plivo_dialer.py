"""The campaign :class:`~voice_runtime.campaign.dialer.Dialer` for Plivo.

Same contract as :class:`~voice_runtime.campaign.dialer.TwilioDialer`; what differs is how Plivo names a call.
``POST /Call/`` answers with a ``request_uuid`` only, and the CallUUID first appears when the call rings or is
answered (``transports/plivo_control.py``). So a worker records the request_uuid at dial time and, once the call
is answered, the CallUUID; a worker that died in between leaves either one in Redis, and reconciliation must
find the call from whichever it has. Plivo keeps three views of a call, each documented and reached through
the plivo SDK:

* **queued** (``GET /Call/{request_uuid}/?status=queued``, list ``?status=queued``): fired, not yet placed
  (beyond the account's CPS); known by its request_uuid only;
* **live** (``GET /Call/{call_uuid}/?status=live``, list ``?status=live&to_number=``): ringing or up; the
  record names the call's ``request_uuid``, which is how a request_uuid is matched to its CallUUID;
* **the call detail record** (``GET /Call/{call_uuid}/``, list ``GET /Call/?to_number=&end_time__gte=``): once
  the call has ended. A CDR carries no request_uuid, so a request_uuid whose call already ended is matched by
  number and time: the newest CDR to the job's number since the dial intent (one dial per attempt per
  number, which the campaign guarantees).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from voice_runtime.campaign.dialer import CallRecord, DialRejected

log = logging.getLogger(__name__)

__all__ = ["PlivoDialer", "cdr_status"]

#: CDR ``call_state`` of a call that was not answered -> the shared status vocabulary.
_CDR_STATES = {"BUSY": "busy", "NO_ANSWER": "no-answer", "CANCEL": "canceled", "FAILED": "failed", "ANSWER": "completed"}
#: How many live calls to one number a lookup inspects (a campaign dials a number once at a time).
_MAX_LIVE_SCAN = 20


def cdr_status(cdr: Any) -> str:
    """A Plivo call detail record's outcome in the vocabulary of ``TERMINAL_STATUSES``.

    An answered call (``answer_time`` set) is ``completed``. Otherwise ``call_state`` decides where present,
    then ``hangup_cause_name`` (``Busy Line``, ``No Answer``, ``Ring Timeout Reached``, ``Cancelled`` ...);
    anything else is ``failed`` — never a retryable outcome by guess."""
    if _get(cdr, "answer_time"):
        return "completed"
    state = str(_get(cdr, "call_state") or "").upper()
    if state in _CDR_STATES and state != "ANSWER":
        return _CDR_STATES[state]
    cause = str(_get(cdr, "hangup_cause_name") or "").lower()
    if "busy" in cause or "reject" in cause:
        return "busy"
    if "no answer" in cause or "timeout" in cause:
        return "no-answer"
    if "cancel" in cause:
        return "canceled"
    return "failed"


class PlivoDialer:
    """A :class:`Dialer` over a :class:`~voice_runtime.transports.plivo_control.PlivoCallControl`.

    ``before_send`` runs inside the SDK client's ``send_request`` for this thread's ``POST …/Call/``: after the
    SDK built the request, right before it goes on the wire (the CPS slot).
    """

    carrier = "plivo"

    def __init__(self, control: Any) -> None:
        self.control = control
        self.account = control.creds.auth_id
        self._gate = threading.local()
        self._lock = threading.Lock()
        self._queued: set[str] = set()  # request_uuids last seen queued (hang up = cancel the request)
        self._resolved: dict[str, str] = {}  # request_uuid -> CallUUID found by a lookup
        client = control.client
        if not getattr(client.send_request, "_voice_runtime_gated", False):
            client.send_request = _gated_send(client.send_request, self._gate)

    def warm_up(self) -> None:
        """One cheap authenticated request (the first dial then pays no TCP/TLS set-up; see TwilioDialer)."""
        try:
            self.control.client.live_calls.list_ids(limit=1)
        except Exception as exc:
            log.warning("carrier warm-up request failed: %s", exc)

    def dial(self, number: str, *, before_send: Callable[[], None] | None = None, **options: Any) -> Any:
        """Dial through the call control. A 4xx answer (validation, auth, permission) is :class:`DialRejected`:
        the call was not placed. Timeouts, transport errors and 5xx propagate: the worker reconciles them."""
        self._gate.before_send = before_send
        try:
            return self.control.dial(number, **options)
        except Exception as exc:
            status = getattr(exc, "status", None)
            if getattr(exc, "carrier", None) == "plivo" and isinstance(status, int) and 400 <= status < 500:
                raise DialRejected(f"Plivo refused the dial (HTTP {status}): {exc}") from exc
            raise
        finally:
            self._gate.before_send = None

    # ------------------------------------------------------------------ lookups
    def find_calls(self, number: str, since: float) -> list[CallRecord]:
        """Queued, live and ended calls to ``number`` since ``since`` (newest first)."""
        client = self.control.client
        records: list[CallRecord] = []
        for request_uuid in _ids(client.queued_calls.list_ids(limit=20)):
            queued = _lookup(lambda: client.queued_calls.get(request_uuid))
            if queued is not None and _same_number(_get(queued, "to"), number):
                with self._lock:
                    self._queued.add(request_uuid)
                records.append(CallRecord(request_uuid, "queued", time.time()))
        for call_uuid in _ids(client.live_calls.list_ids(to_number=_plivo_number(number), limit=_MAX_LIVE_SCAN)):
            live = _lookup(lambda: client.live_calls.get(call_uuid))
            if live is not None:
                created = _parse_time(_get(live, "session_start"))
                if created >= since:
                    records.append(CallRecord(call_uuid, str(_get(live, "call_status") or "in-progress"), created))
        for cdr in _cdrs(client, number, since):
            records.append(CallRecord(str(_get(cdr, "call_uuid")), cdr_status(cdr), _parse_time(_get(cdr, "initiation_time"))))
        return sorted(records, key=lambda r: -r.created)

    def call_status(self, sid: str, *, number: str = "", since: float = 0.0) -> str:
        """The status of ``sid`` — a request_uuid or a CallUUID; ``number`` and ``since`` (the job's number and
        dial intent) let a request_uuid whose call already ended be matched to its CDR."""
        client = self.control.client
        if _lookup(lambda: client.queued_calls.get(sid)) is not None:
            with self._lock:
                self._queued.add(sid)
            return "queued"
        with self._lock:
            self._queued.discard(sid)
            call_uuid = self._resolved.get(sid, sid)
        live = _lookup(lambda: client.live_calls.get(call_uuid))
        if live is not None:
            return str(_get(live, "call_status") or "in-progress")
        cdr = _lookup(lambda: client.calls.get(call_uuid))
        if cdr is not None:
            return cdr_status(cdr)
        # A request_uuid: its call is live under a CallUUID we have not seen, or has ended.
        to = _plivo_number(number) if number else None
        for live_uuid in _ids(client.live_calls.list_ids(to_number=to, limit=_MAX_LIVE_SCAN)):
            live = _lookup(lambda: client.live_calls.get(live_uuid))
            if live is not None and str(_get(live, "request_uuid")) == sid:
                with self._lock:
                    self._resolved[sid] = live_uuid
                return str(_get(live, "call_status") or "in-progress")
        if number:
            ended = sorted(_cdrs(client, number, since), key=lambda c: -_parse_time(_get(c, "initiation_time")))
            if ended:
                with self._lock:
                    self._resolved[sid] = str(_get(ended[0], "call_uuid"))
                return cdr_status(ended[0])
        raise LookupError(f"Plivo has no queued, live or ended call for {sid!r}")

    def canonical_id(self, sid: str) -> str:
        """The CallUUID a lookup matched request_uuid ``sid`` to (results then name the call, not the request)."""
        with self._lock:
            return self._resolved.get(sid) or self.control.call_uuid_of(sid) or sid

    def hangup(self, sid: str) -> None:
        """End ``sid``: our own call through the call control; a foreign one (a dead worker's) by what the last
        lookup found: a queued request is cancelled (``DELETE /Request/``), a call is hung up by CallUUID."""
        from plivo.exceptions import ResourceNotFoundError

        if self.control.session_for_call(sid) is not None:
            self.control.hangup_call(sid)
            return
        with self._lock:
            queued = sid in self._queued
            call_uuid = self._resolved.get(sid, sid)
        try:
            if queued:
                self.control.client.calls.cancel(sid)
            else:
                self.control.hangup_call(call_uuid)
        except ResourceNotFoundError:
            log.info("Plivo call %s had already ended", sid)

    def forget(self, sid: str) -> None:
        call_uuid = self.control.call_uuid_of(sid)
        self.control.forget(sid)
        if call_uuid and call_uuid != sid:
            self.control.forget(call_uuid)
        with self._lock:
            self._queued.discard(sid)
            self._resolved.pop(sid, None)


# ---------------------------------------------------------------------- helpers
def _gated_send(inner: Callable[..., Any], gate: threading.local) -> Callable[..., Any]:
    """The SDK client's ``send_request``, running this thread's ``before_send`` (once) before a call create."""

    def send_request(request: Any, **kwargs: Any) -> Any:
        before_send = getattr(gate, "before_send", None)
        url = str(getattr(request, "url", "")).split("?", 1)[0]
        if before_send is not None and str(getattr(request, "method", "")).upper() == "POST" and url.endswith("/Call/"):
            gate.before_send = None
            before_send()
        return inner(request, **kwargs)

    send_request._voice_runtime_gated = True  # type: ignore[attr-defined]
    return send_request


def _lookup(fetch: Callable[[], Any]) -> Any:
    """The record, or None when Plivo answers 404 (not in that view). Other errors propagate: *unknown*."""
    from plivo.exceptions import ResourceNotFoundError

    try:
        return fetch()
    except ResourceNotFoundError:
        return None


def _cdrs(client: Any, number: str, since: float) -> list[Any]:
    """CDRs of calls to ``number`` that ended at or after ``since`` (first page: at most 20)."""
    since_text = datetime.fromtimestamp(max(since, 0.0), timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    response = client.calls.list(to_number=_plivo_number(number), end_time__gte=since_text, limit=20)
    return [cdr for cdr in _objects(response) if _parse_time(_get(cdr, "initiation_time")) >= since - 1.0]


def _ids(response: Any) -> list[str]:
    calls = _get(response, "calls") or []
    return [str(c) for c in calls]


def _objects(response: Any) -> list[Any]:
    objects = _get(response, "objects")
    if objects is None:
        try:
            objects = list(response)
        except TypeError:
            objects = []
    return list(objects)


def _get(record: Any, name: str) -> Any:
    if isinstance(record, dict):
        return record.get(name)
    value = getattr(record, name, None)
    if value is None:
        try:
            value = record[name]
        except (KeyError, TypeError, IndexError):
            value = None
    return value


def _plivo_number(number: str) -> str:
    """Plivo filters and CDRs use E.164 digits without the ``+``."""
    return number.lstrip("+")


def _same_number(a: Any, b: str) -> bool:
    return "".join(ch for ch in str(a or "") if ch.isdigit()) == "".join(ch for ch in b if ch.isdigit())


def _parse_time(text: Any) -> float:
    """Plivo times: CDR ``YYYY-MM-DD HH:MM:SS+05:30``; live ``session_start`` ``YYYY-MM-DD HH:MM:SS.ffffff``
    (no offset: read as UTC). Unparseable -> 0.0."""
    if not text:
        return 0.0
    raw = str(text).strip()
    for fmt in ("%Y-%m-%d %H:%M:%S%z", "%Y-%m-%d %H:%M:%S.%f%z", "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S"):
        try:
            moment = datetime.strptime(raw, fmt)
        except ValueError:
            continue
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.timestamp()
    return 0.0
