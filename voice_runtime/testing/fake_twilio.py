"""A fake Twilio on loopback: the REST API our SDK client talks to, and the carrier that calls us back.

It is a real HTTP server on ``127.0.0.1`` speaking the documented wire format of the few resources the runtime
uses (``Calls.json``, ``Calls/{sid}.json``, ``Messages.json`` under ``/2010-04-01/Accounts/{AccountSid}``):

* records every request exactly (method, path, query, form fields in order, headers, Basic-auth user and
  whether the secret matched — never the secret itself);
* answers with realistic JSON, and with Twilio's error documents (``{"code": 20404, ...}``) for unknown
  calls, bad credentials (20003) or failures you inject with :meth:`FakeTwilio.fail_next`;
* acts as the carrier: signs and posts status / AMD / stream-status callbacks and inbound voice webhooks
  with the SDK's ``RequestValidator``, and "answers" a dialled call by connecting a :class:`SimulatedPhone`
  to the ``<Stream url>`` of the call's TwiML with the signed upgrade header and the ``<Parameter>`` values;
* like Twilio, ends the media stream (``stop`` + close) when a call is completed or redirected over REST.

Point the SDK at it with :meth:`FakeTwilio.http_client` (a ``TwilioHttpClient`` subclass that rewrites
``https://*.twilio.com`` to this server — requests still cross a real socket) or, for code that builds its
own clients from the environment, with ``with fake.installed(): ...``.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import json
import logging
import re
import secrets
import socket
import struct
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator

from voice_runtime.testing.phone import SimulatedPhone

log = logging.getLogger(__name__)


API_PREFIX = "/2010-04-01/Accounts/"
ORIGINAL_HOST_HEADER = "X-Fake-Twilio-Original-Host"
ENDED = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _rfc2822(ts: float | None = None) -> str:
    return email.utils.formatdate(ts or time.time(), usegmt=False)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as it arrived on the fake's socket."""

    method: str
    path: str
    query: dict[str, list[str]]
    form: list[tuple[str, str]]
    headers: dict[str, str]  # lower-case names; Authorization removed
    body: bytes
    auth_user: str | None
    auth_ok: bool
    original_host: str | None  # the *.twilio.com host the SDK meant to reach
    at: float = field(default_factory=time.monotonic)
    #: When the request's first byte reached the fake's socket (kernel receive timestamp, epoch seconds), so
    #: rate measurements do not depend on when this busy test process got round to handling it.
    arrived: float | None = None

    def value(self, name: str) -> str | None:
        """Last value of form field ``name``."""
        found = [v for k, v in self.form if k == name]
        return found[-1] if found else None

    def values(self, name: str) -> list[str]:
        return [v for k, v in self.form if k == name]

    @property
    def form_dict(self) -> dict[str, str]:
        return dict(self.form)


@dataclass
class FakeCall:
    """A call the fake knows about (dialled through REST or placed inbound by the test)."""

    sid: str
    to: str
    from_: str
    direction: str
    status: str
    form: dict[str, str] = field(default_factory=dict)
    status_callback_events: list[str] = field(default_factory=list)
    twiml: str | None = None
    twiml_updates: list[str] = field(default_factory=list)
    phone: SimulatedPhone | None = None
    stream_sid: str = field(default_factory=lambda: new_sid("MZ"))
    sequence: int = 0
    created_at: float = field(default_factory=time.time)

    @property
    def status_callback(self) -> str | None:
        return self.form.get("StatusCallback")

    @property
    def amd_callback(self) -> str | None:
        return self.form.get("AsyncAmdStatusCallback")

    def stream(self) -> tuple[str, dict[str, str], str | None]:
        """``(url, parameters, statusCallback)`` of the ``<Connect><Stream>`` in this call's TwiML."""
        if not self.twiml:
            raise ValueError(f"call {self.sid} has no TwiML")
        return parse_stream_twiml(self.twiml)


def parse_stream_twiml(twiml: str) -> tuple[str, dict[str, str], str | None]:
    """Extract ``(url, parameters, statusCallback)`` from ``<Response><Connect><Stream>`` TwiML."""
    root = ET.fromstring(twiml)
    stream = root.find("./Connect/Stream")
    if stream is None or not stream.get("url"):
        raise ValueError("TwiML has no <Connect><Stream url=...>")
    parameters = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    return stream.get("url", ""), parameters, stream.get("statusCallback")


@dataclass
class _Failure:
    method: str
    path: re.Pattern[str]
    status: int
    code: int | None
    message: str
    stall: float = 0.0  # seconds to hold the request before answering (timeout tests)
    times: int = 1


class FakeTwilioHttpClient(TwilioHttpClient):
    """The SDK's own HTTP client, with ``https://*.twilio.com`` rewritten to the fake's base URL.

    Everything else — request building, auth, the real socket, response parsing — is the SDK's code path.
    The host the SDK meant to reach (region/edge routing) travels in ``X-Fake-Twilio-Original-Host``.
    """

    def __init__(self, base_url: str, timeout: float | None = 5.0, **kwargs: Any) -> None:
        super().__init__(timeout=timeout, **kwargs)
        self.base_url = base_url.rstrip("/")

    def request(  # type: ignore[override]
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Any:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if host == "twilio.com" or host.endswith(".twilio.com"):
            headers = dict(headers or {})
            headers[ORIGINAL_HOST_HEADER] = parts.netloc
            base = urlsplit(self.base_url)
            url = urlunsplit((base.scheme, base.netloc, parts.path, parts.query, ""))
        return super().request(method, url, params, data, headers, auth, timeout, allow_redirects)


class FakeTwilio:
    """Fake Twilio REST API + carrier callbacks. Use as a context manager (starts and stops the server)."""

    def __init__(
        self,
        *,
        account_sid: str | None = None,
        auth_token: str | None = None,
        phone_number: str = "+15550001000",
        api_keys: Mapping[str, str] | None = None,
        end_streams_on_update: bool = True,
        completed_callbacks: bool = True,
        on_dial: Callable[[FakeCall], None] | None = None,
        latency: float = 0.0,
    ) -> None:
        self.account_sid = account_sid or new_sid("AC")
        self.auth_token = auth_token or secrets.token_hex(16)
        self.phone_number = phone_number
        self.api_keys = dict(api_keys or {})
        self.end_streams_on_update = end_streams_on_update
        self.completed_callbacks = completed_callbacks
        #: Called (in a background thread) for every call created over REST: lets a test play the callee
        #: (answer, busy, no-answer ...) automatically, e.g. :class:`~voice_runtime.testing.carrier_plan.CarrierPlan`.
        self.on_dial = on_dial
        #: Seconds each REST request takes to be answered (a slow carrier API; drain tests use 1 s).
        self.latency = latency
        self.requests: list[RecordedRequest] = []
        self.calls: dict[str, FakeCall] = {}
        self.messages: list[dict[str, Any]] = []
        self.callback_responses: list[tuple[str, int]] = []
        self._cond = threading.Condition()
        self._failures: list[_Failure] = []
        self._release = threading.Event()
        self._workers: list[threading.Thread] = []
        self._phones: list[SimulatedPhone] = []
        self._validator = RequestValidator(self.auth_token)
        self._http = httpx.Client(timeout=5.0)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ============================================================================== lifecycle
    def start(self) -> FakeTwilio:
        fake = self

        class Handler(_Handler):
            owner = fake

        class Server(ThreadingHTTPServer):
            request_queue_size = 1024  # hundreds of simultaneous REST requests (drains, many workers): never refuse

            def server_bind(self) -> None:
                super().server_bind()
                if _SO_TIMESTAMPNS is not None:  # inherited by accepted sockets: kernel arrival times
                    self.socket.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-twilio", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._release.set()
        for worker in list(self._workers):
            worker.join(10)
        for phone in self._phones:
            if not phone.closed:  # a phone whose call ended has already stopped its own loop
                phone.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._http.close()

    def __enter__(self) -> FakeTwilio:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "FakeTwilio is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"  # type: ignore[str-bytes-safe]  # an AF_INET address: host is a str

    # ============================================================================== pointing clients here
    def http_client(self, timeout: float | None = 5.0) -> FakeTwilioHttpClient:
        return FakeTwilioHttpClient(self.base_url, timeout=timeout)

    def credentials(self, **overrides: Any) -> Any:
        from voice_runtime.transports.twilio_client import TwilioCredentials

        values: dict[str, Any] = {
            "account_sid": self.account_sid,
            "auth_token": self.auth_token,
            "from_number": self.phone_number,
        }
        values.update(overrides)
        return TwilioCredentials(**values)

    def client(self, **overrides: Any) -> Any:
        """A real ``twilio.rest.Client`` whose requests reach this fake."""
        from voice_runtime.transports.twilio_client import build_twilio_client

        credentials = self.credentials(**overrides)
        return build_twilio_client(credentials, http_client=self.http_client(credentials.http_timeout))

    def environ(self, **extra: str) -> dict[str, str]:
        """Environment variables for the env-driven functions (use with ``installed()``)."""
        env = {
            "TWILIO_ACCOUNT_SID": self.account_sid,
            "TWILIO_AUTH_TOKEN": self.auth_token,
            "TWILIO_PHONE_NUMBER": self.phone_number,
        }
        env.update(extra)
        return env

    @contextlib.contextmanager
    def installed(self) -> Iterator[FakeTwilio]:
        """Every Twilio client built by the runtime inside this block talks to the fake."""
        from voice_runtime.transports import twilio_client

        previous = twilio_client.set_http_client_factory(lambda timeout: self.http_client(timeout))
        try:
            yield self
        finally:
            twilio_client.set_http_client_factory(previous)

    # ============================================================================== observing
    def wait_for_request(
        self, predicate: Callable[[RecordedRequest], bool], timeout: float = 10.0, *, after: int = 0
    ) -> RecordedRequest:
        """Block until a recorded request (index ≥ ``after``) matches ``predicate``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for request in self.requests[after:]:
                    if predicate(request):
                        return request
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no matching request reached the fake Twilio in time")
                self._cond.wait(remaining)

    def wait_for_call(self, timeout: float = 10.0, *, index: int = 0) -> FakeCall:
        """Block until at least ``index + 1`` calls were dialled over REST; return that one."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                dialled = [c for c in self.calls.values() if c.direction == "outbound-api"]
                if len(dialled) > index:
                    return dialled[index]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no call was dialled in time")
                self._cond.wait(remaining)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait for the carrier-side actions started by REST requests (stream ends, callbacks) to finish."""
        deadline = time.monotonic() + timeout
        with self._cond:
            workers = list(self._workers)
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        return not any(w.is_alive() for w in workers)

    def requests_for(self, method: str, path_suffix: str) -> list[RecordedRequest]:
        with self._cond:
            return [r for r in self.requests if r.method == method and r.path.endswith(path_suffix)]

    def fail_next(
        self,
        method: str,
        path_pattern: str,
        *,
        status: int,
        code: int | None = None,
        message: str = "injected failure",
        stall: float = 0.0,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` matching requests with a Twilio error document (after ``stall`` s)."""
        with self._cond:
            self._failures.append(_Failure(method.upper(), re.compile(path_pattern), status, code, message, stall, times))

    # ============================================================================== acting as the carrier
    def sign(self, url: str, params: Mapping[str, str] | None = None) -> str:
        return self._validator.compute_signature(url, dict(params or {}))

    def post_signed(
        self,
        url: str,
        params: Mapping[str, str],
        *,
        sign_url: str | None = None,
        headers: Mapping[str, str] | None = None,
        signature: str | None = None,
    ) -> httpx.Response:
        """POST a form like Twilio does, signed over ``sign_url`` (default ``url``)."""
        all_headers = {"X-Twilio-Signature": signature or self.sign(sign_url or url, params), "User-Agent": "TwilioProxy/1.1"}
        all_headers.update(headers or {})
        response = self._http.post(url, data=dict(params), headers=all_headers)
        with self._cond:
            self.callback_responses.append((url, response.status_code))
        return response

    def _call_params(self, call: FakeCall) -> dict[str, str]:
        call.sequence += 1
        return {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": call.sid,
            "CallStatus": call.status,
            "Called": call.to,
            "Caller": call.from_,
            "Direction": call.direction,
            "From": call.from_,
            "To": call.to,
            "SequenceNumber": str(call.sequence - 1),
            "Timestamp": _rfc2822(),
            "CallbackSource": "call-progress-events",
        }

    def send_status(self, call_sid: str, status: str, **extra: str) -> int:
        """Set the call's status and post the status callback; returns our server's HTTP status."""
        call = self.calls[call_sid]
        call.status = status
        if not call.status_callback:
            raise ValueError(f"call {call_sid} has no StatusCallback")
        params = self._call_params(call)
        params.update(extra)
        return self.post_signed(call.status_callback, params).status_code

    def send_amd(self, call_sid: str, answered_by: str, *, duration_ms: int = 2400) -> int:
        """Post the asynchronous answering-machine-detection result."""
        call = self.calls[call_sid]
        if not call.amd_callback:
            raise ValueError(f"call {call_sid} was dialled without AsyncAmdStatusCallback")
        params = {
            "AccountSid": self.account_sid,
            "CallSid": call_sid,
            "AnsweredBy": answered_by,
            "MachineDetectionDuration": str(duration_ms),
        }
        return self.post_signed(call.amd_callback, params).status_code

    def send_stream_status(self, call_sid: str, event: str, *, error: str | None = None) -> int:
        call = self.calls[call_sid]
        _, _, callback = call.stream()
        if not callback:
            raise ValueError(f"call {call_sid} has no stream statusCallback")
        params = {
            "AccountSid": self.account_sid,
            "CallSid": call_sid,
            "StreamSid": call.stream_sid,
            "StreamName": call.stream_sid,
            "StreamEvent": event,
            "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        }
        if error:
            params["StreamError"] = error
        return self.post_signed(callback, params).status_code

    def connect_stream(self, call: FakeCall, *, signed: bool = True, connect: bool = True, **phone_kwargs: Any) -> SimulatedPhone:
        """Open the call's media stream like Twilio: signed upgrade to ``<Stream url>`` with its parameters."""
        url, parameters, _ = call.stream()
        headers = dict(phone_kwargs.pop("headers", {}) or {})
        if signed:
            headers.setdefault("X-Twilio-Signature", self.sign(url))
        phone = SimulatedPhone(
            url,
            headers=headers,
            custom_parameters=parameters,
            call_id=call.sid,
            stream_id=call.stream_sid,
            account_id=self.account_sid,
            **phone_kwargs,
        )
        self._phones.append(phone)
        call.phone = phone
        return phone.connect() if connect else phone

    def answer(self, call_sid: str, *, callbacks: bool = True, **phone_kwargs: Any) -> SimulatedPhone:
        """The callee picks up: ringing/answered callbacks (if subscribed), then the media stream connects."""
        call = self.calls[call_sid]
        if callbacks and call.status_callback:
            if "ringing" in call.status_callback_events:
                self.send_status(call_sid, "ringing")
            call.status = "in-progress"
            if "answered" in call.status_callback_events:
                self.send_status(call_sid, "in-progress")
        call.status = "in-progress"
        return self.connect_stream(call, **phone_kwargs)

    def add_call(self, *, direction: str = "inbound", from_: str = "+15557654321", to: str | None = None) -> FakeCall:
        """A call the carrier knows about (in progress), without any webhook: for tests that open streams themselves."""
        call = FakeCall(new_sid("CA"), to or self.phone_number, from_, direction, "in-progress")
        with self._cond:
            self.calls[call.sid] = call
            self._cond.notify_all()
        return call

    def inbound_call(
        self, webhook_url: str, *, from_: str = "+15557654321", to: str | None = None, connect: bool = True, **phone_kwargs: Any
    ) -> tuple[FakeCall, httpx.Response, SimulatedPhone | None]:
        """Someone calls our number: signed voice webhook, then (if TwiML says so) the media stream."""
        call = FakeCall(new_sid("CA"), to or self.phone_number, from_, "inbound", "ringing")
        with self._cond:
            self.calls[call.sid] = call
            self._cond.notify_all()
        params = self._call_params(call)
        response = self.post_signed(webhook_url, params)
        phone = None
        if response.status_code == 200:
            call.twiml = response.text
            if connect and ET.fromstring(response.text).find("./Connect/Stream") is not None:
                call.status = "in-progress"
                phone = self.connect_stream(call, **phone_kwargs)
        return call, response, phone

    # ============================================================================== REST handling
    def _background(self, fn: Callable[[], None]) -> None:
        def run() -> None:
            try:
                fn()
            except Exception:
                log.exception("fake Twilio background action failed")

        worker = threading.Thread(target=run, name="fake-twilio-action", daemon=True)
        with self._cond:
            self._workers = [w for w in self._workers if w.is_alive()]
            self._workers.append(worker)
        worker.start()

    def _end_stream(self, call: FakeCall) -> None:
        phone = call.phone
        if phone is not None and not phone.closed:
            phone.hangup()

    def _auth(self, header: str | None) -> tuple[str | None, bool]:
        if not header or not header.startswith("Basic "):
            return None, False
        try:
            user, _, secret = base64.b64decode(header[6:]).decode("utf-8").partition(":")
        except Exception:
            return None, False
        expected = self.auth_token if user == self.account_sid else self.api_keys.get(user)
        return user, expected is not None and secrets.compare_digest(secret, expected)

    def _handle(
        self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes, arrived: float | None = None
    ) -> tuple[int, Any]:
        parts = urlsplit(raw_path)
        path = parts.path
        content_type = headers.get("content-type", "")
        form = parse_qsl(body.decode("utf-8"), keep_blank_values=True) if "x-www-form-urlencoded" in content_type else []
        user, auth_ok = self._auth(headers.get("authorization"))
        record = RecordedRequest(
            method=method,
            path=path,
            query=parse_qs(parts.query, keep_blank_values=True),
            form=form,
            headers={k: v for k, v in headers.items() if k != "authorization"},
            body=body,
            auth_user=user,
            auth_ok=auth_ok,
            original_host=headers.get(ORIGINAL_HOST_HEADER.lower()),
            at=time.monotonic() - (time.time() - arrived) if arrived else time.monotonic(),
            arrived=arrived,
        )
        with self._cond:
            self.requests.append(record)
            self._cond.notify_all()
            failure = next((f for f in self._failures if f.method == method and f.path.search(path)), None)
            if failure is not None:
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
        if self.latency > 0:
            self._release.wait(self.latency)  # the carrier's API latency (cut short when the fake closes)
        if failure is not None:
            if failure.stall:
                self._release.wait(failure.stall)
            return failure.status, self._error(failure.status, failure.code, failure.message)
        if not auth_ok:
            return 401, self._error(401, 20003, "Authenticate")
        match = re.fullmatch(r"/2010-04-01/Accounts/([^/]+)/(Calls|Messages)(?:/([^/]+))?\.json", path)
        if match is None:
            return 404, self._error(404, 20404, f"The requested resource {path} was not found")
        account, collection, sid = match.groups()
        if account != self.account_sid:
            return 404, self._error(404, 20404, f"The requested resource {path} was not found")
        values = dict(form)
        if collection == "Calls" and sid is None and method == "POST":
            return self._create_call(values, [v for k, v in form if k == "StatusCallbackEvent"])
        if collection == "Calls" and sid is None and method == "GET":
            return self._list_calls(record.query)
        if collection == "Calls" and sid is not None:
            return self._call_instance(method, sid, values, path)
        if collection == "Messages" and sid is None and method == "POST":
            return self._create_message(values)
        return 405, self._error(405, 20004, "Method not allowed")

    def _error(self, status: int, code: int | None, message: str) -> dict[str, Any]:
        return {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}" if code else None,
            "status": status,
        }

    def _list_calls(self, query: Mapping[str, list[str]]) -> tuple[int, Any]:
        """``GET Calls.json`` (``To``, ``Status``, ``PageSize`` filters), newest first, paged by ``Page`` with
        ``next_page_uri`` links like Twilio's (so clients that read every page can be tested)."""
        to, status = (query.get("To") or [None])[0], (query.get("Status") or [None])[0]  # type: ignore[list-item]  # narrow ignore so scripts/typecheck.sh holds zero errors; a real fix is for this module's owner
        size = int((query.get("PageSize") or ["50"])[0])
        page = max(0, int((query.get("Page") or ["0"])[0]))
        with self._cond:
            calls = [c for c in self.calls.values() if (to is None or c.to == to) and (status is None or c.status == status)]
        calls.sort(key=lambda c: -c.created_at)
        uri = f"{API_PREFIX}{self.account_sid}/Calls.json"
        start = page * size
        chunk = calls[start : start + size]
        keep = [(k, v) for k, values in query.items() if k not in ("Page", "PageToken") for v in values]
        next_uri = f"{uri}?{urlencode([*keep, ('Page', str(page + 1))])}" if start + size < len(calls) else None
        return 200, {
            "calls": [self._call_json(c) for c in chunk],
            "first_page_uri": uri, "next_page_uri": next_uri, "previous_page_uri": None,
            "page": page, "page_size": size, "start": start, "end": max(start, start + len(chunk) - 1), "uri": uri,
        }

    def _call_json(self, call: FakeCall) -> dict[str, Any]:
        uri = f"{API_PREFIX}{self.account_sid}/Calls/{call.sid}.json"
        now = _rfc2822()
        return {
            "sid": call.sid,
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "to": call.to,
            "to_formatted": call.to,
            "from": call.from_,
            "from_formatted": call.from_,
            "status": call.status,
            "direction": call.direction,
            "date_created": _rfc2822(call.created_at),
            "date_updated": now,
            "start_time": None,
            "end_time": None,
            "duration": None,
            "price": None,
            "price_unit": "USD",
            "answered_by": None,
            "caller_name": None,
            "forwarded_from": None,
            "group_sid": None,
            "parent_call_sid": None,
            "phone_number_sid": None,
            "queue_time": "0",
            "trunk_sid": None,
            "uri": uri,
            "subresource_uris": {
                "notifications": uri.replace(".json", "/Notifications.json"),
                "recordings": uri.replace(".json", "/Recordings.json"),
            },
        }

    def _create_call(self, values: dict[str, str], events: list[str]) -> tuple[int, Any]:
        if not values.get("To"):
            return 400, self._error(400, 21201, "No 'To' number is specified")
        if not values.get("From"):
            return 400, self._error(400, 21213, "No 'From' number is specified")
        if not (values.get("Url") or values.get("Twiml") or values.get("ApplicationSid")):
            return 400, self._error(400, 21205, "Url parameter is required.")
        call = FakeCall(
            new_sid("CA"), values["To"], values["From"], "outbound-api", "queued", values, events, values.get("Twiml")
        )
        with self._cond:
            self.calls[call.sid] = call
            self._cond.notify_all()
        if self.on_dial is not None:
            on_dial = self.on_dial
            self._background(lambda: on_dial(call))
        return 201, self._call_json(call)

    def _call_instance(self, method: str, sid: str, values: dict[str, str], path: str) -> tuple[int, Any]:
        call = self.calls.get(sid)
        if call is None:
            return 404, self._error(404, 20404, f"The requested resource {path} was not found")
        if method == "GET":
            return 200, self._call_json(call)
        if method == "DELETE":
            if call.status not in ENDED:
                return 400, self._error(400, 20009, "Cannot delete this resource before it is complete")
            return 204, None
        if method != "POST":
            return 405, self._error(405, 20004, "Method not allowed")
        status = values.get("Status")
        if status is not None:
            if status not in ("completed", "canceled"):
                return 400, self._error(400, 21218, f"Invalid value for Status: {status}")
            if call.status not in ENDED:
                call.status = status
                self._after_end(call)
        elif values.get("Twiml") or values.get("Url"):
            if call.status in ENDED:
                return 400, self._error(400, 21220, "Call is not in-progress. Cannot redirect.")
            call.twiml_updates.append(values.get("Twiml") or values.get("Url", ""))
            if self.end_streams_on_update:
                self._background(lambda: self._end_stream(call))  # replacing the TwiML ends <Connect><Stream>
        return 200, self._call_json(call)

    def _after_end(self, call: FakeCall) -> None:
        def end() -> None:
            if self.end_streams_on_update:
                self._end_stream(call)
            if self.completed_callbacks and call.status_callback:
                self.post_signed(call.status_callback, self._call_params(call))

        self._background(end)

    def _create_message(self, values: dict[str, str]) -> tuple[int, Any]:
        to = values.get("To", "")
        if not re.fullmatch(r"\+[1-9][0-9]{6,14}", to):
            return 400, self._error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if not values.get("Body") and not values.get("MediaUrl"):
            return 400, self._error(400, 21602, "Message body is required.")
        if not (values.get("From") or values.get("MessagingServiceSid")):
            return 400, self._error(400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required")
        sid = new_sid("SM")
        now = _rfc2822()
        message = {
            "sid": sid,
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": values.get("Body", ""),
            "to": to,
            "from": values.get("From"),
            "messaging_service_sid": values.get("MessagingServiceSid"),
            "status": "queued" if values.get("MessagingServiceSid") is None else "accepted",
            "direction": "outbound-api",
            "num_segments": "1",
            "num_media": "0",
            "date_created": now,
            "date_updated": now,
            "date_sent": None,
            "error_code": None,
            "error_message": None,
            "price": None,
            "price_unit": "USD",
            "uri": f"{API_PREFIX}{self.account_sid}/Messages/{sid}.json",
            "subresource_uris": {"media": f"{API_PREFIX}{self.account_sid}/Messages/{sid}/Media.json"},
        }
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()
        return 201, message


_SO_TIMESTAMPNS: int | None = getattr(socket, "SO_TIMESTAMPNS", 35 if sys.platform.startswith("linux") else None)


def _arrival_time(sock: socket.socket) -> float | None:
    """Kernel receive time of the first unread byte (``SO_TIMESTAMPNS``, peeked: nothing is consumed)."""
    if _SO_TIMESTAMPNS is None:
        return None
    try:
        _, ancillary, _, _ = sock.recvmsg(1, socket.CMSG_SPACE(16), socket.MSG_PEEK)
    except OSError:
        return None
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(data) >= 16:
            seconds, nanoseconds = struct.unpack("qq", data[:16])
            return seconds + nanoseconds / 1e9
    return None


class _Handler(BaseHTTPRequestHandler):
    owner: FakeTwilio
    protocol_version = "HTTP/1.1"

    def handle(self) -> None:
        # One request per connection (``Connection: close``), so the peeked first byte is this request's and
        # the read buffer is empty when we peek.
        self.arrived = _arrival_time(self.connection)
        self.close_connection = True
        try:
            self.handle_one_request()
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up first (a timeout test does so on purpose): not a fault of the fake's, so no
            # traceback on stderr; the request was already counted when it arrived.
            log.debug("fake twilio: the client left before the answer was written")

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, document = self.owner._handle(self.command, self.path, headers, body, getattr(self, "arrived", None))
        payload = b"" if document is None else json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Connection", "close")
        if payload:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    do_GET = do_POST = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("fake twilio: " + format, *args)


__all__ = [
    "FakeCall",
    "FakeTwilio",
    "FakeTwilioHttpClient",
    "ORIGINAL_HOST_HEADER",
    "RecordedRequest",
    "new_sid",
    "parse_stream_twiml",
]
