"""A fake Plivo on loopback: the REST API our SDK calls, and the webhooks + media stream Plivo makes to us.

Real HTTP on 127.0.0.1 (``http.server`` in a thread), so the plivo SDK's requests go over a real socket:
point the SDK here with ``PlivoCallControl(api_base_url=fake.base_url)`` or ``PLIVO_API_URL`` (the SDK has no
base-URL option; see ``transports/_plivo_client.py``). Every request is recorded exactly (method, path,
query, Basic-auth pair, headers, raw body and parsed JSON) for assertions.

It then behaves like Plivo towards the app: for a call it POSTs the ring and answer webhooks (form-encoded,
signed with ``X-Plivo-Signature-V3`` by the SDK's own signing code), parses the returned XML, and connects a
:class:`~voice_runtime.testing.phone.SimulatedPhone` speaking the Plivo dialect to the ``<Stream>`` URL with
the XML's ``contentType`` and a signed upgrade — like the real Plivo does. Hangups over REST end the stream
and POST the hangup callback; machine detection can be reported on demand.

Responses follow Plivo's documented shapes: ``201 {"api_id", "message": "call fired", "request_uuid"}``,
``204`` for a hangup, ``404 {"api_id", "error"}`` for a call that is gone, ``202 {"api_id", "message":
"message(s) queued", "message_uuid": [...]}`` for SMS, ``401`` for wrong credentials.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import secrets
import socket
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import httpx

from voice_runtime.testing.fake_twilio import _SO_TIMESTAMPNS, _arrival_time
from voice_runtime.testing.phone import SimulatedPhone

log = logging.getLogger(__name__)


class _CarrierHttpServer(ThreadingHTTPServer):
    """A carrier's API takes hundreds of simultaneous requests: a listen backlog of 5 (the stdlib default)
    would turn a burst of hangups into connection resets that no real carrier would produce."""

    request_queue_size = 1024
    daemon_threads = True

    def server_bind(self) -> None:
        super().server_bind()
        if _SO_TIMESTAMPNS is not None:  # inherited by accepted sockets: kernel arrival times (see fake_twilio)
            self.socket.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)

_ACCOUNT_PATH = re.compile(r"^/v1/Account/(?P<auth_id>[^/]+)/(?P<rest>.*)$")


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    auth: tuple[str, str] | None
    headers: dict[str, str]
    body: bytes
    json: Any
    #: Monotonic time the request reached the fake's socket (the kernel's receive timestamp where the platform
    #: has one, else when it was handled): CPS measurements do not depend on this busy process's scheduling.
    at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class WebhookCall:
    """One webhook the fake made to the app: what it sent and what came back."""

    kind: str
    url: str
    params: dict[str, str]
    status: int
    body: str


def plivo_sign_headers(auth_token: str, method: str, uri: str, params: dict[str, str] | None = None) -> dict[str, str]:
    """``X-Plivo-Signature-V3`` + nonce headers for a request, computed with the plivo SDK's signing code."""
    from voice_runtime.transports.plivo_security import NONCE_HEADER, SIGNATURE_HEADER, sign

    nonce = "".join(secrets.choice("0123456789") for _ in range(20))
    return {SIGNATURE_HEADER: sign(auth_token, method, uri, nonce, params), NONCE_HEADER: nonce}


def ws_signature_uri(stream_url: str, style: str) -> str:
    """The URI a given Plivo implementation signs for a stream upgrade (telephony-protocols §2.6)."""
    parts = urlsplit(stream_url)
    if style == "exact":
        return stream_url
    if style in ("https", "http"):
        return urlunsplit((style, parts.netloc, parts.path, parts.query, ""))
    if style == "python-sdk":
        return urlunsplit(("http", parts.netloc, parts.path + "/websocket", parts.query, ""))
    raise ValueError(f"unknown signature style {style!r}")


@dataclass
class FakeCall:
    """One call the fake placed (outbound) or delivered (inbound)."""

    fake: FakePlivo
    request_uuid: str
    call_uuid: str
    from_: str
    to: str
    direction: str
    request: dict[str, Any] = field(default_factory=dict)  # the JSON body of POST /Call/ (outbound)
    status: str = "queued"
    answer_xml: str = ""
    stream_url: str = ""
    stream_attributes: dict[str, str] = field(default_factory=dict)
    phone: SimulatedPhone | None = None
    ended: threading.Event = field(default_factory=threading.Event)
    #: Each Transfer API request's fetched XML (``<Dial>`` …), in order; see :meth:`FakePlivo._transfer`.
    transfers: list[str] = field(default_factory=list)
    transferred: threading.Event = field(default_factory=threading.Event)
    #: Carrier-clock times (epoch s) for the call records (CDR / live / queued lookups).
    created: float = field(default_factory=time.time)
    answered_at: float | None = None
    ended_at: float | None = None
    hangup_cause: str = ""

    # ------------------------------------------------------------------ Plivo → app
    def _base_params(self) -> dict[str, str]:
        return {
            "CallUUID": self.call_uuid,
            "RequestUUID": self.request_uuid,
            "ALegUUID": self.call_uuid,
            "ALegRequestUUID": self.request_uuid,
            "From": self.from_,
            "To": self.to,
            "Direction": self.direction,
        }

    def ring(self) -> WebhookCall | None:
        url = self.request.get("ring_url")
        if not url:
            return None
        self.status = "ringing"
        return self.fake.post_webhook("ring", url, {**self._base_params(), "CallStatus": "ringing", "Event": "Ring"})

    def fetch_answer(self, answer_url: str | None = None) -> WebhookCall:
        """POST the answer webhook and keep the XML (without connecting the stream)."""
        url = answer_url or self.request["answer_url"]
        params = {**self._base_params(), "CallStatus": "in-progress", "Event": "StartApp", "CallerName": self.from_}
        hook = self.fake.post_webhook("answer", url, params)
        self.answer_xml = hook.body
        self.status = "in-progress"
        self.answered_at = self.answered_at or time.time()
        if hook.status == 200:
            self._parse_xml(hook.body)
        return hook

    def _parse_xml(self, text: str) -> None:
        root = ET.fromstring(text)
        if root.tag != "Response":
            raise AssertionError(f"answer XML root must be <Response>, got <{root.tag}>")
        stream = root.find("Stream")
        if stream is None:
            return
        self.stream_attributes = dict(stream.attrib)
        self.stream_url = (stream.text or "").strip()

    def connect_stream(self, *, signature: str | None = None, connect_timeout: float = 5.0, **phone_kwargs: Any) -> SimulatedPhone:
        """Open the ``<Stream>`` WebSocket like Plivo: Plivo-dialect phone, the XML's contentType, signed upgrade.

        ``signature``: ``https`` (Plivo's Node stream SDK, default), ``http``, ``exact`` (the ws(s) URL as in
        the XML), ``python-sdk`` (``http://…/websocket``), ``none`` (unsigned) or ``bad`` (a wrong signature).
        """
        if not self.stream_url:
            raise AssertionError(f"the answer XML has no <Stream> URL: {self.answer_xml!r}")
        style = signature or self.fake.ws_signature
        if style == "none":
            headers: dict[str, str] = {}
        elif style == "bad":
            headers = plivo_sign_headers("not-the-auth-token", "GET", ws_signature_uri(self.stream_url, "https"))
        else:
            headers = plivo_sign_headers(self.fake.auth_token, "GET", ws_signature_uri(self.stream_url, style))
        extra = self.stream_attributes.get("extraHeaders", "")
        custom = dict(pair.split("=", 1) for pair in extra.split(",") if "=" in pair) if extra else {}
        phone_kwargs.setdefault("content_type", self.stream_attributes.get("contentType", "audio/x-l16;rate=8000"))
        phone_kwargs.setdefault("call_id", self.call_uuid)
        phone_kwargs.setdefault("stream_id", str(uuid.uuid4()))
        phone_kwargs.setdefault("account_id", self.fake.auth_id)
        phone_kwargs.setdefault("custom_parameters", custom)
        phone = SimulatedPhone(self.stream_url, carrier="plivo", headers=headers, **phone_kwargs)
        self.phone = phone
        self.fake._phones.append(phone)
        return phone.connect(connect_timeout)

    def answer(self, *, signature: str | None = None, **phone_kwargs: Any) -> SimulatedPhone:
        """Ring, fetch the answer XML and connect the stream: what Plivo does when the callee picks up."""
        self.ring()
        hook = self.fetch_answer()
        if hook.status != 200:
            raise AssertionError(f"answer webhook returned HTTP {hook.status}: {hook.body[:200]!r}")
        return self.connect_stream(signature=signature, **phone_kwargs)

    def detect_machine(self, machine: bool = True) -> WebhookCall | None:
        """Report async machine detection to ``machine_detection_url`` (outbound calls only)."""
        url = self.request.get("machine_detection_url")
        if not url:
            return None
        params = {
            **self._base_params(),
            "Machine": "true" if machine else "false",
            "IfMachine": "continue",
            "Event": "MachineDetection",
            "CallStatus": "in-progress",
        }
        return self.fake.post_webhook("machine", url, params)

    def transfer_to(self, url: str, method: str = "POST") -> WebhookCall:
        """What Plivo does on a Transfer API request: fetch the new XML for the A leg, leave the ``<Stream>``
        (the media stream ends: ``stop`` + close) and carry on with the new XML — no hangup callback, since
        the call itself goes on."""
        params = {**self._base_params(), "CallStatus": "in-progress", "Event": "Transfer"}
        hook = self.fake.post_webhook("transfer", url, params)
        self.transfers.append(hook.body)
        if hook.status == 200:
            root = ET.fromstring(hook.body)
            if root.tag != "Response":
                self.fake.errors.append(f"transfer XML root must be <Response>, got <{root.tag}>")
        if self.phone is not None:
            self.phone.hangup()
        self.transferred.set()
        return hook

    def end(self, status: str = "completed", cause: str = "NORMAL_CLEARING", *, close_stream: bool = True) -> None:
        """End the call on Plivo's side: close the stream (``stop`` + close) and POST the hangup callback."""
        if self.ended.is_set():
            return
        self.status = status
        self.hangup_cause = cause
        self.ended_at = time.time()
        self.ended.set()
        with self.fake._cond:
            self.fake._cond.notify_all()
        if close_stream and self.phone is not None:
            self.phone.hangup()
        url = self.request.get("hangup_url")
        if url:
            params = {**self._base_params(), "CallStatus": status, "HangupCause": cause, "Event": "Hangup", "Duration": "1", "BillDuration": "60"}
            try:
                self.fake.post_webhook("hangup", url, params)
            except httpx.TransportError as exc:  # the app is gone (a killed worker): the call ended all the same
                log.info("hangup callback for %s not delivered: %s", self.call_uuid, exc)


class FakePlivo:
    """The fake; use as a context manager. ``base_url`` goes to ``api_base_url`` / ``PLIVO_API_URL``."""

    def __init__(
        self,
        auth_id: str = "MAXXXXXXXXXXXXXXXXXX",
        auth_token: str = "fake-plivo-auth-token-0123456789",
        *,
        ws_signature: str = "https",
        sign_webhooks: bool = True,
        latency: float = 0.0,
        before_dial_response: Callable[[FakeCall], None] | None = None,
        on_dial: Callable[[FakeCall], None] | None = None,
    ) -> None:
        """``before_dial_response(call)`` runs before ``POST /Call/`` is answered: a carrier whose answer
        webhook (or stream) beats its own REST response, which real Plivo does under load."""
        self.auth_id = auth_id
        self.before_dial_response = before_dial_response
        #: Called in a background thread for every call created over REST, after the ``201``: lets a test
        #: play the callee (answer, busy, no-answer ...), e.g. :class:`~voice_runtime.testing.carrier_plan.PlivoCarrierPlan`.
        self.on_dial = on_dial
        #: Seconds each REST request takes to be answered (a slow carrier API; drain tests use 1 s).
        self.latency = latency
        self._stopping = threading.Event()
        self.auth_token = auth_token
        self.ws_signature = ws_signature
        self.sign_webhooks = sign_webhooks
        self.requests: list[RecordedRequest] = []
        self.webhooks: list[WebhookCall] = []
        self.calls: dict[str, FakeCall] = {}  # request_uuid -> call
        self.messages: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._cond = threading.Condition()
        self._phones: list[SimulatedPhone] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._http = httpx.Client(timeout=10.0)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> FakePlivo:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def handle(self) -> None:
                # HTTP/1.0: one request per connection, so the peeked first byte is this request's.
                self.arrived = _arrival_time(self.connection)
                super().handle()

            def _handle(self) -> None:
                fake._dispatch(self)

            do_GET = do_POST = do_DELETE = do_PUT = _handle

        self._server = _CarrierHttpServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-plivo", daemon=True)
        self._thread.start()
        return self

    @property
    def base_url(self) -> str:
        assert self._server is not None, "FakePlivo not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"  # type: ignore[str-bytes-safe]  # an AF_INET address: host is a str

    def stop(self) -> None:
        for phone in self._phones:
            phone.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self._http.close()

    close = stop

    def requests_for(self, method: str, path_suffix: str) -> list[RecordedRequest]:
        with self._cond:
            return [r for r in self.requests if r.method == method and r.path.endswith(path_suffix)]

    def __enter__(self) -> FakePlivo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ waiting
    def wait_for_call(self, timeout: float = 10.0, *, index: int = 0) -> FakeCall:
        return self._wait(lambda: list(self.calls.values())[index] if len(self.calls) > index else None, timeout, "call")

    def wait_for_request(self, predicate: Callable[[RecordedRequest], bool], timeout: float = 10.0) -> RecordedRequest:
        return self._wait(lambda: next((r for r in self.requests if predicate(r)), None), timeout, "request")

    def wait_for_webhook(self, kind: str, timeout: float = 10.0) -> WebhookCall:
        return self._wait(lambda: next((w for w in self.webhooks if w.kind == kind), None), timeout, f"{kind} webhook")

    def _wait(self, probe: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = probe()
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"fake Plivo saw no {what} within {timeout}s")
                self._cond.wait(remaining)

    # ------------------------------------------------------------------ Plivo → app
    def post_webhook(self, kind: str, url: str, params: dict[str, str]) -> WebhookCall:
        """POST form-encoded ``params`` to ``url`` signed like Plivo; records and returns the exchange."""
        headers = plivo_sign_headers(self.auth_token, "POST", url, params) if self.sign_webhooks else {}
        response = self._http.post(url, data=params, headers=headers)
        hook = WebhookCall(kind, url, dict(params), response.status_code, response.text)
        with self._cond:
            self.webhooks.append(hook)
            self._cond.notify_all()
        return hook

    def inbound_call(self, answer_url: str, from_: str = "+14155550100", to: str = "+14155550199", **phone_kwargs: Any) -> FakeCall:
        """A caller dials our number: POST the answer URL, then connect the stream it returns."""
        call = FakeCall(self, str(uuid.uuid4()), str(uuid.uuid4()), from_, to, "inbound")
        with self._cond:
            self.calls[call.request_uuid] = call
            self._cond.notify_all()
        hook = call.fetch_answer(answer_url)
        if hook.status == 200 and call.stream_url:
            call.connect_stream(**phone_kwargs)
        return call

    # ------------------------------------------------------------------ app → Plivo (REST)
    def _dispatch(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        arrived = getattr(handler, "arrived", None)
        record = RecordedRequest(
            handler.command,
            parts.path,
            parse_qs(parts.query, keep_blank_values=True),
            _basic_auth(handler.headers.get("Authorization", "")),
            {k: v for k, v in handler.headers.items()},
            body,
            parsed,
            at=time.monotonic() - (time.time() - arrived) if arrived else time.monotonic(),
        )
        with self._cond:
            self.requests.append(record)
            self._cond.notify_all()
        if self.latency > 0:
            self._stopping.wait(self.latency)  # the carrier's API latency (cut short when the fake stops)
        status, payload = self._route(record)
        data = b"" if payload is None else json.dumps(payload).encode()
        handler.send_response(status)
        if data:
            handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if data:
            handler.wfile.write(data)

    def _route(self, req: RecordedRequest) -> tuple[int, Any]:
        api_id = str(uuid.uuid4())
        match = _ACCOUNT_PATH.match(req.path)
        if match is None or not req.path.endswith("/"):
            return 404, {"api_id": api_id, "error": "not found"}
        if req.auth != (self.auth_id, self.auth_token) or match["auth_id"] != self.auth_id:
            return 401, {"api_id": api_id, "error": "authentication failed"}
        rest = match["rest"].rstrip("/").split("/")
        if req.method == "POST" and rest == ["Call"]:
            return self._create_call(req, api_id)
        if req.method == "GET" and rest == ["Call"]:
            return self._list_calls(req, api_id)
        if req.method == "GET" and len(rest) == 2 and rest[0] == "Call":
            return self._get_call(rest[1], req, api_id)
        if req.method == "POST" and len(rest) == 2 and rest[0] == "Call":
            return self._transfer(rest[1], req, api_id)
        if req.method == "DELETE" and len(rest) == 2 and rest[0] == "Call":
            return self._hangup(rest[1], api_id)
        if req.method == "DELETE" and len(rest) == 2 and rest[0] == "Request":
            return self._cancel(rest[1], api_id)
        if req.method == "POST" and rest == ["Message"]:
            return self._message(req, api_id)
        return 404, {"api_id": api_id, "error": "not found"}

    def _create_call(self, req: RecordedRequest, api_id: str) -> tuple[int, Any]:
        body = req.json if isinstance(req.json, dict) else None
        if body is None or req.headers.get("Content-Type") != "application/json":
            return 400, {"api_id": api_id, "error": "expected a JSON body"}
        missing = [k for k in ("from", "to", "answer_url") if not body.get(k)]
        if missing:
            return 400, {"api_id": api_id, "error": f"{', '.join(missing)} parameter(s) missing"}
        call = FakeCall(self, str(uuid.uuid4()), str(uuid.uuid4()), body["from"], body["to"], "outbound", request=body)
        with self._cond:
            self.calls[call.request_uuid] = call
            self._cond.notify_all()
        if self.before_dial_response is not None:
            self.before_dial_response(call)
        if self.on_dial is not None:
            on_dial = self.on_dial
            threading.Thread(target=on_dial, args=(call,), name="fake-plivo-callee", daemon=True).start()
        return 201, {"api_id": api_id, "message": "call fired", "request_uuid": call.request_uuid}

    # ------------------------------------------------------------------ call lookups
    # Plivo keeps three views of a call, and a caller that lost track of one (a worker that died mid-dial)
    # needs all three: ``status=queued`` (fired, not yet placed: known by request_uuid only), ``status=live``
    # (ringing or up: by CallUUID, and the record names its request_uuid), and the call detail record (CDR,
    # once the call has ended: by CallUUID; it does not carry the request_uuid).
    def _list_calls(self, req: RecordedRequest, api_id: str) -> tuple[int, Any]:
        """``GET /Call/``: ``status=live|queued`` → ``{"api_id", "calls": [ids]}``; otherwise the CDR list
        ``{"api_id", "meta": {limit, next, offset, previous, total_count}, "objects": [CDR, ...]}`` with the
        documented filters ``to_number``, ``from_number``, ``call_direction``, ``end_time__{gt,gte,lt,lte}``
        (``YYYY-MM-DD HH:MM[:SS]``, UTC), ``limit`` (max 20) and ``offset``."""
        q = {k: v[-1] for k, v in req.query.items()}
        status = q.get("status", "")
        with self._cond:
            calls = list(self.calls.values())
        if status in ("live", "queued"):
            chosen = [c for c in calls if _live(c)] if status == "live" else [c for c in calls if c.status == "queued" and c.direction == "outbound"]
            for name, attr in (("to_number", "to"), ("from_number", "from_")):
                if q.get(name):
                    chosen = [c for c in chosen if _digits(getattr(c, attr)) == _digits(q[name])]
            if q.get("call_direction"):
                chosen = [c for c in chosen if c.direction == q["call_direction"]]
            ids = [c.call_uuid if status == "live" else c.request_uuid for c in chosen]
            return 200, {"api_id": api_id, "calls": ids}
        if status:
            return 400, {"api_id": api_id, "error": "status must be live or queued"}
        try:
            limit = min(int(q.get("limit", "20")), 20)
            offset = int(q.get("offset", "0"))
            bounds = {op: _parse_plivo_time(q[f"end_time__{op}"]) for op in ("gt", "gte", "lt", "lte") if f"end_time__{op}" in q}
        except ValueError as exc:
            return 400, {"api_id": api_id, "error": f"bad filter: {exc}"}
        ended = [c for c in calls if c.ended_at is not None]
        if q.get("to_number"):
            ended = [c for c in ended if _digits(c.to) == _digits(q["to_number"])]
        if q.get("from_number"):
            ended = [c for c in ended if _digits(c.from_) == _digits(q["from_number"])]
        if q.get("call_direction"):
            ended = [c for c in ended if c.direction == q["call_direction"]]
        checks = {"gt": lambda t, b: t > b, "gte": lambda t, b: t >= b, "lt": lambda t, b: t < b, "lte": lambda t, b: t <= b}
        ended = [c for c in ended if all(checks[op](int(c.ended_at or 0), b) for op, b in bounds.items())]
        ended.sort(key=lambda c: -(c.ended_at or 0.0))
        page = ended[offset : offset + limit]
        meta = {"limit": limit, "next": None, "offset": offset, "previous": None, "total_count": len(ended)}
        return 200, {"api_id": api_id, "meta": meta, "objects": [self._cdr(c) for c in page]}

    def _get_call(self, uuid_: str, req: RecordedRequest, api_id: str) -> tuple[int, Any]:
        """``GET /Call/{uuid}/``: the CDR of an ended call; ``?status=live`` a live call (by CallUUID);
        ``?status=queued`` a queued request (by request_uuid). 404 ``{"api_id", "error"}`` otherwise."""
        status = (req.query.get("status") or [""])[-1]
        with self._cond:
            calls = list(self.calls.values())
        if status == "queued":
            call = next((c for c in calls if c.request_uuid == uuid_ and c.status == "queued"), None)
            if call is None:
                return 404, {"api_id": api_id, "error": "not found"}
            return 200, {
                "api_id": api_id, "call_status": "queued", "caller_name": call.request.get("caller_name", ""),
                "direction": call.direction, "from": call.from_, "request_uuid": call.request_uuid, "to": call.to,
            }
        call = next((c for c in calls if c.call_uuid == uuid_), None)
        if status == "live":
            if call is None or not _live(call):
                return 404, {"api_id": api_id, "error": "not found"}
            return 200, {
                "api_id": api_id, "call_status": call.status, "call_uuid": call.call_uuid, "caller_name": "",
                "direction": call.direction, "from": call.from_, "request_uuid": call.request_uuid,
                "session_start": _plivo_time(call.created, micro=True), "to": call.to,
            }
        if status:
            return 400, {"api_id": api_id, "error": "status must be live or queued"}
        if call is None or call.ended_at is None:
            return 404, {"api_id": api_id, "error": "call not found"}
        return 200, {"api_id": api_id, **self._cdr(call)}

    def _cdr(self, call: FakeCall) -> dict[str, Any]:
        """A call detail record in Plivo's shape (``answer_time`` null for an unanswered call)."""
        state, name, code = _CDR_STATE.get(call.status, ("FAILED", "Unknown Error", 1000))
        duration = int(round((call.ended_at or 0) - call.answered_at)) if call.answered_at else 0
        return {
            "answer_time": _plivo_time(call.answered_at) if call.answered_at else None,
            "bill_duration": duration,
            "billed_duration": 60 * -(-duration // 60),
            "call_direction": call.direction,
            "call_duration": duration,
            "call_state": state if call.answered_at is None else "ANSWER",
            "call_uuid": call.call_uuid,
            "end_time": _plivo_time(call.ended_at or 0.0),
            "from_number": call.from_.lstrip("+"),
            "hangup_cause_code": code,
            "hangup_cause_name": name,
            "hangup_source": "Callee" if call.status in ("busy", "no-answer") else "API",
            "initiation_time": _plivo_time(call.created),
            "parent_call_uuid": None,
            "resource_uri": f"/v1/Account/{self.auth_id}/Call/{call.call_uuid}/",
            "to_number": call.to.lstrip("+"),
            "total_amount": "0.00000",
            "total_rate": "0.00850",
        }

    def _find(self, uuid_: str) -> FakeCall | None:
        for call in self.calls.values():
            if uuid_ in (call.call_uuid, call.request_uuid):
                return call
        return None

    def _hangup(self, call_uuid: str, api_id: str) -> tuple[int, Any]:
        call = next((c for c in self.calls.values() if c.call_uuid == call_uuid), None)
        if call is None or call.ended.is_set() or call.status == "queued":
            return 404, {"api_id": api_id, "error": "not found"}
        threading.Thread(target=call.end, name="fake-plivo-hangup", daemon=True).start()
        return 204, None

    def _transfer(self, call_uuid: str, req: RecordedRequest, api_id: str) -> tuple[int, Any]:
        """``POST /Call/{uuid}/`` (Transfer a call): ``legs`` aleg/bleg/both and the matching ``*_url``."""
        body = req.json if isinstance(req.json, dict) else None
        call = next((c for c in self.calls.values() if c.call_uuid == call_uuid), None)
        if call is None or call.ended.is_set() or call.status != "in-progress":
            return 404, {"api_id": api_id, "error": "call not found"}
        if body is None or body.get("legs") not in ("aleg", "bleg", "both"):
            return 400, {"api_id": api_id, "error": "legs parameter must be aleg, bleg or both"}
        url = body.get("aleg_url")
        if body["legs"] in ("aleg", "both") and not url:
            return 400, {"api_id": api_id, "error": "aleg_url is required to transfer the aleg"}
        if url:
            method = body.get("aleg_method") or "POST"
            threading.Thread(target=call.transfer_to, args=(url, method), name="fake-plivo-transfer", daemon=True).start()
        return 202, {"api_id": api_id, "message": "call transferred"}

    def _cancel(self, request_uuid: str, api_id: str) -> tuple[int, Any]:
        call = self.calls.get(request_uuid)
        if call is None or call.ended.is_set() or call.status not in ("queued", "ringing"):
            return 404, {"api_id": api_id, "error": "not found"}
        threading.Thread(target=call.end, args=("cancel", "ORIGINATOR_CANCEL"), daemon=True).start()
        return 204, None

    def _message(self, req: RecordedRequest, api_id: str) -> tuple[int, Any]:
        body = req.json if isinstance(req.json, dict) else None
        if body is None or not body.get("dst") or not (body.get("src") or body.get("powerpack_uuid")):
            return 400, {"api_id": api_id, "error": "src and dst are required"}
        message_uuid = str(uuid.uuid4())
        with self._cond:
            self.messages.append({**body, "message_uuid": message_uuid})
            self._cond.notify_all()
        return 202, {"api_id": api_id, "message": "message(s) queued", "message_uuid": [message_uuid]}


#: Fake call status -> (CDR call_state, hangup_cause_name, hangup_cause_code) for an unanswered call.
_CDR_STATE = {
    "completed": ("ANSWER", "Normal Hangup", 4000),
    "busy": ("BUSY", "Busy Line", 3010),
    "no-answer": ("NO_ANSWER", "No Answer", 3020),
    "timeout": ("NO_ANSWER", "Ring Timeout Reached", 3030),
    "cancel": ("CANCEL", "Cancelled", 1010),
    "failed": ("FAILED", "Unknown Error", 1000),
}


def _live(call: FakeCall) -> bool:
    return call.status in ("ringing", "in-progress") and not call.ended.is_set()


def _digits(number: str) -> str:
    return "".join(ch for ch in number if ch.isdigit())


def _plivo_time(epoch: float, *, micro: bool = False) -> str:
    """Plivo's CDR times: ``YYYY-MM-DD HH:MM:SS+00:00`` (live ``session_start``: microseconds, no offset)."""
    from datetime import datetime, timezone

    moment = datetime.fromtimestamp(epoch, timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f") if micro else moment.strftime("%Y-%m-%d %H:%M:%S+00:00")


def _parse_plivo_time(text: str) -> int:
    """A CDR filter time (``YYYY-MM-DD HH:MM[:SS[.ffffff]]``, UTC) as whole epoch seconds."""
    from datetime import datetime, timezone

    for fmt in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"):
        try:
            return int(datetime.strptime(text, fmt).replace(tzinfo=timezone.utc).timestamp())
        except ValueError:
            continue
    raise ValueError(f"time {text!r} is not YYYY-MM-DD HH:MM[:SS[.ffffff]]")


def _basic_auth(header: str) -> tuple[str, str] | None:
    if not header.startswith("Basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except ValueError:
        return None
    return user, password


__all__ = ["FakeCall", "FakePlivo", "RecordedRequest", "WebhookCall", "plivo_sign_headers", "ws_signature_uri"]
