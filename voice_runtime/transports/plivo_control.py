"""Plivo call control: outbound calls, the answer webhook (Plivo XML ``<Stream>``), hangup, AMD, callbacks.

::

    server = VoiceServer(stt_factory=..., tts_factory=..., public_url="https://voice.example.com")
    plivo = PlivoCallControl(server)                    # PLIVO_AUTH_ID / PLIVO_AUTH_TOKEN / PLIVO_PHONE_NUMBER

    with plivo.call("+14155550100") as session:         # dial, wait for the stream, hang up at the end
        session.speak("Hello from Plivo", wait=True)

How a Plivo call reaches its session. Plivo has no inline-XML parameter: ``POST /Call/`` only gets an
``answer_url`` and returns a ``request_uuid``; the CallUUID first appears when Plivo fetches that URL. So
each dial gets its own answer URL (``/plivo/answer/{key}``, ``key`` random and single use) whose XML holds
the ``/stream/{token}`` URL bound to the dialling session. Until the answer, the call is known by its
request_uuid (hangup then cancels the request); afterwards by its CallUUID.

Inbound calls: point the Plivo application's answer URL at ``/plivo/answer``. Each call gets a fresh session
and its own stream token, and the server's inbound flow runs on it (in its own thread) once the stream is
live.

Every webhook and every stream upgrade must carry a valid ``X-Plivo-Signature-V3`` (see
:mod:`voice_runtime.transports.plivo_security`); ``validate_signatures=False`` is a logged, development-only
opt-out.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request
from fastapi.responses import Response

from voice_runtime import call_events as ev
from voice_runtime.errors import CallError, ConfigError, LocalProtocolError
from voice_runtime.protocols.plivo import content_types, parse_content_type
from voice_runtime.server.app import VoiceServer
from voice_runtime.transports.call_control import Flow
from voice_runtime.session import VoiceSession
from voice_runtime.transports._plivo_client import PlivoCredentials, build_plivo_client, carrier_api_error, credentials
from voice_runtime.transports.call_control import CallControlBase, OutboundCall
from voice_runtime.transports.plivo_security import PlivoSignatureValidator
from voice_runtime.urls import to_http_url
from voice_runtime.server.connection import SessionUnavailable
from voice_runtime.transports.forwarded import ForwardedHeaders
from voice_runtime.transports.webhooks import MAX_WEBHOOK_BODY, read_limited, too_large

log = logging.getLogger(__name__)

#: CallUUIDs / request UUIDs are UUIDs; anything else in a DELETE path is refused (no path games).
_CALL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,127}$")
#: Plivo's extraHeaders: "Only characters [A-Z], [a-z], [0-9] allowed", max 512 bytes (XML reference).
_HEADER_TOKEN = re.compile(r"^[A-Za-z0-9]+$")

#: Event emitted on the session when its call is handed to another number (same name as Twilio's).
CALL_TRANSFERRED = "call_transferred"

#: Plivo hangup-callback CallStatus values mapped to the shared status vocabulary (call_control).
_STATUS_MAP = {"cancel": "canceled", "timeout": "no-answer"}


@dataclass
class _Pending:
    """A dialled call whose answer URL Plivo has not fetched yet."""

    session: VoiceSession
    stream_url: str
    content_type: str
    extra_headers: dict[str, str]
    request_uuid: str = ""


class PlivoCallControl(CallControlBase):
    """Plivo REST + webhooks for one account, attached to a :class:`VoiceServer`."""

    carrier = "plivo"

    def __init__(
        self,
        server: VoiceServer,
        *,
        auth_id: str | None = None,
        auth_token: str | None = None,
        from_number: str | None = None,
        public_url: str | None = None,
        content_type: str = "audio/x-mulaw;rate=8000",
        route_prefix: str = "/plivo",
        inbound_flow: Flow | None = None,
        validate_signatures: bool = True,
        api_base_url: str | None = None,
        http_timeout: float | None = None,
        stream_timeout: int = 86400,
        inbound_connect_timeout: float = 30.0,
        session_class: type[VoiceSession] | None = None,
        max_webhook_body: int = MAX_WEBHOOK_BODY,
        forwarded_allow_ips: str | list[str] | None = None,
        nonce_ttl: float = 600.0,
    ) -> None:
        """``forwarded_allow_ips``: proxies whose ``X-Forwarded-*`` headers shape the signed URL (default
        ``FORWARDED_ALLOW_IPS`` or ``127.0.0.1``); ``nonce_ttl``: how long a signature nonce stays used."""
        import os

        super().__init__(server, public_url=public_url, inbound_stream_timeout=inbound_connect_timeout)
        self.creds: PlivoCredentials = credentials(auth_id, auth_token)
        self.from_number = from_number or os.environ.get("PLIVO_PHONE_NUMBER", "")
        parse_content_type(content_type)  # fail at construction on a format Plivo cannot stream
        self.content_type = content_type
        self.route_prefix = "/" + route_prefix.strip("/")
        self.inbound_flow = inbound_flow
        self.set_session_class(session_class)
        self.max_webhook_body = max_webhook_body
        self.api_base_url = api_base_url
        self.http_timeout = http_timeout
        self.stream_timeout = int(stream_timeout)
        self.inbound_connect_timeout = inbound_connect_timeout
        self.forwarded = ForwardedHeaders(forwarded_allow_ips)
        self.validator = PlivoSignatureValidator(
            self.creds.auth_token,
            public_url=self.public_url,
            enforce=validate_signatures,
            nonces=self.nonce_cache(nonce_ttl),
            forwarded=self.forwarded,
        )
        self._pending: dict[str, _Pending] = {}  # answer key -> dialled call
        self._requests: dict[str, str] = {}  # request_uuid -> answer key (until answered)
        self._answered: dict[str, str] = {}  # request_uuid -> CallUUID
        self._early_answers: dict[str, str] = {}  # request_uuid -> CallUUID, answered before dial() tracked it
        self._bind_lock = threading.Lock()
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._transfers: dict[str, str] = {}  # transfer key -> the <Dial> XML Plivo will fetch (single use)
        self._transfers_lock = threading.Lock()
        self.webhooks: list[tuple[str, dict[str, str]]] = []  # (kind, params) of accepted callbacks, bounded
        server.add_upgrade_validator("plivo", self.validator.validate_upgrade)
        self._install_routes()

    # ------------------------------------------------------------------ REST client
    @property
    def client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._client = build_plivo_client(self.creds, api_base_url=self.api_base_url, timeout=self.http_timeout)
            return self._client

    def _http_base(self) -> str:
        base = self.public_url or ""
        if not base:
            from voice_runtime.errors import MissingStreamUrlError

            raise MissingStreamUrlError()
        return to_http_url(base).rstrip("/") + self.server.path_prefix + self.route_prefix

    def webhook_url(self, kind: str) -> str:
        """Public URL of one of our webhooks (``answer``, ``hangup``, ``ring``, ``machine``, ``stream-status``)."""
        return f"{self._http_base()}/{kind}"

    # ------------------------------------------------------------------ CallControlBase
    def _dial(self, to: str, stream_url: str, session: VoiceSession, **options: Any) -> str:
        """``POST /Call/`` through the SDK. Options: ``machine_detection`` (True → async AMD reported through
        ``session.wait_for_answered_by``), ``machine_detection_time`` (ms), ``ring_timeout`` (s), ``time_limit``
        (s), ``content_type``, ``extra_headers`` (dict of alphanumeric keys/values), ``caller_name``,
        ``from_number``.
        """
        src = options.pop("from_number", None) or self.from_number
        if not src:
            raise ConfigError("PLIVO_PHONE_NUMBER is not set: Plivo needs a caller id (from) to dial")
        content_type = options.pop("content_type", None) or self.content_type
        parse_content_type(content_type)
        extra_headers = _check_extra_headers(options.pop("extra_headers", None) or {})
        key = secrets.token_urlsafe(18)
        pending = _Pending(session, stream_url, content_type, extra_headers)
        self._pending[key] = pending
        params: dict[str, Any] = {
            "from_": src,
            "to_": to,
            "answer_url": self.webhook_url(f"answer/{key}"),
            "answer_method": "POST",
            "hangup_url": self.webhook_url("hangup"),
            "hangup_method": "POST",
            "ring_url": self.webhook_url("ring"),
            "ring_method": "POST",
        }
        if options.pop("machine_detection", False):
            params["machine_detection"] = "true"
            params["machine_detection_time"] = int(options.pop("machine_detection_time", 5000))
            params["machine_detection_url"] = self.webhook_url("machine")
            params["machine_detection_method"] = "POST"
        for name in ("ring_timeout", "time_limit"):
            if name in options:
                params[name] = int(options.pop(name))
        if "caller_name" in options:
            params["caller_name"] = str(options.pop("caller_name"))
        if options:
            self._pending.pop(key, None)
            raise TypeError(f"unknown Plivo dial option(s): {', '.join(sorted(options))}")
        try:
            response = self.client.calls.create(**params)
        except Exception as exc:
            self._pending.pop(key, None)
            raise carrier_api_error(exc, "dial") from exc
        request_uuid = str(getattr(response, "request_uuid", "") or "")
        if not request_uuid:
            self._pending.pop(key, None)
            raise CallError(f"Plivo did not return a request_uuid: {getattr(response, 'message', response)!r}")
        # Plivo may have fetched the answer URL already (it can beat this response): the pending entry is then
        # gone, and dial() binds the CallUUID that answer reported once the call is tracked.
        pending.request_uuid = request_uuid
        if key in self._pending:
            self._requests[request_uuid] = key
        session.carrier = "plivo"
        return request_uuid

    def dial(self, to: str, *, session: VoiceSession | None = None, **options: Any) -> OutboundCall:
        """Dial as the base does, then bind a CallUUID whose answer arrived before the REST response did."""
        outbound = super().dial(to, session=session, **options)
        with self._bind_lock:
            call_uuid = self._early_answers.pop(outbound.call_id, None)
            if call_uuid:
                self._bind_call_uuid({"CallUUID": call_uuid, "RequestUUID": outbound.call_id})
        return outbound

    def _hangup_call(self, call_id: str) -> None:
        """End a call (``DELETE /Call/{uuid}/``) or cancel a not-yet-answered dial (``DELETE /Request/{uuid}/``).

        An empty id is refused: Plivo's hangup endpoint without a CallUUID disconnects *every* call on the
        account. 404 means the call already ended, which is what we wanted.
        """
        from plivo.exceptions import ResourceNotFoundError

        if not call_id or not isinstance(call_id, str) or not _CALL_ID.match(call_id):
            raise LocalProtocolError(
                f"refusing to hang up without a valid Plivo call id ({call_id!r}): without one Plivo would "
                "disconnect every call on the account"
            )
        call_uuid = self._answered.get(call_id, call_id)
        try:
            if call_uuid in self._requests:  # dialled, never answered: cancel the request
                self.client.calls.cancel(call_uuid)
            else:
                self.client.calls.hangup(call_uuid)
        except ResourceNotFoundError:
            log.info("Plivo call %s had already ended", call_uuid)
        except Exception as exc:
            raise carrier_api_error(exc, "hangup") from exc

    def transfer(
        self,
        session: VoiceSession,
        number: str,
        *,
        caller_id: str | None = None,
        dial_timeout: int | None = None,
        wait: bool = True,
        wait_timeout: float = 10.0,
    ) -> bool:
        """Transfer the live call to ``number``: Plivo's Transfer API points the A leg at ``<Dial><Number>``.

        Same contract as :meth:`TwilioCallControl.transfer`: Plivo fetches ``/plivo/transfer/{key}`` (a
        single-use, signed webhook serving :meth:`dial_xml`), leaves the ``<Stream>`` and so ends the media
        stream; the session reports it as disconnected and blocking calls raise :class:`CallHangupError`. With
        ``wait`` this returns once the stream has ended (True) or ``wait_timeout`` passed (False). Leaving the
        flow afterwards does not hang up the transferred call.
        """
        from voice_runtime.errors import CallHangupError

        call_uuid = session.call_sid
        if not call_uuid or not _CALL_ID.match(call_uuid):
            raise ConfigError("transfer needs a session with a Plivo CallUUID")
        if session.is_disconnected:
            raise CallHangupError("cannot transfer a call that has ended", call_id=call_uuid)
        xml = self.dial_xml(number, caller_id=caller_id, timeout=dial_timeout)
        key = secrets.token_urlsafe(18)
        with self._transfers_lock:
            self._transfers[key] = xml
            while len(self._transfers) > 256:  # unfetched transfer documents cannot pile up
                self._transfers.pop(next(iter(self._transfers)))
        self.mark_transferred(call_uuid)
        try:
            self.client.calls.transfer(call_uuid, legs="aleg", aleg_url=self.webhook_url(f"transfer/{key}"), aleg_method="POST")
        except Exception as exc:
            with self._transfers_lock:
                self._transfers.pop(key, None)
            self.mark_transferred(call_uuid, False)
            raise carrier_api_error(exc, "transfer") from exc
        session.log.emit(CALL_TRANSFERRED, to=number)
        return session.wait_until_disconnected(wait_timeout) if wait else True

    @staticmethod
    def dial_xml(number: str, *, caller_id: str | None = None, timeout: int | None = None) -> str:
        """``<Response><Dial><Number>…</Number></Dial></Response>``: Plivo's equivalent of Twilio's ``<Dial>``."""
        from plivo import plivoxml

        if not number:
            raise ConfigError("transfer needs a destination number")
        dial = plivoxml.DialElement(caller_id=caller_id or None, timeout=timeout)
        dial.add(plivoxml.NumberElement(number))
        response = plivoxml.ResponseElement()
        response.add(dial)
        return response.to_string(pretty=False)

    def hangup_call(self, call_id: str) -> None:
        """Public, blocking hangup by CallUUID (or request_uuid before the answer)."""
        self._hangup_call(call_id)

    def call_uuid_of(self, call_id: str) -> str | None:
        """The CallUUID a dialled request_uuid was answered as (None before the answer or if unknown)."""
        return self._answered.get(call_id)

    def session_for_call(self, call_id: str) -> VoiceSession | None:
        session = super().session_for_call(call_id)
        if session is None and call_id in self._answered:
            session = super().session_for_call(self._answered[call_id])
        return session

    # ------------------------------------------------------------------ XML
    def answer_xml(self, stream_url: str, *, content_type: str | None = None, extra_headers: Mapping[str, str] | None = None) -> str:
        """``<Response><Stream …>wss://…</Stream></Response>`` built with the SDK, every attribute explicit.

        Plivo's pages disagree on the defaults of ``contentType`` and ``keepCallAlive`` (reference §2.4), so
        nothing is left to a default: bidirectional, inbound track only (required when bidirectional),
        stream timeout, status callback + method, content type, keepCallAlive. ``extraHeaders`` has no default
        and is set only when there are headers to pass.
        """
        from plivo import plivoxml

        content_type = content_type or self.content_type
        parse_content_type(content_type)
        stream = plivoxml.StreamElement(
            stream_url,
            bidirectional=True,
            audioTrack="inbound",
            streamTimeout=self.stream_timeout,
            statusCallbackUrl=self.webhook_url("stream-status"),
            statusCallbackMethod="POST",
            contentType=content_type,
            keepCallAlive=True,
        )
        headers = _check_extra_headers(dict(extra_headers or {}))
        if headers:
            stream.extraHeaders = ",".join(f"{k}={v}" for k, v in headers.items())
        response = plivoxml.ResponseElement()
        response.add(stream)
        return response.to_string(pretty=False)

    @staticmethod
    def hangup_xml(reason: str = "rejected") -> str:
        from plivo import plivoxml

        response = plivoxml.ResponseElement()
        response.add(plivoxml.HangupElement(reason=reason))
        return response.to_string(pretty=False)

    # ------------------------------------------------------------------ webhooks
    def _install_routes(self) -> None:
        app = self.server.app
        base = self.server.path_prefix + self.route_prefix

        @app.api_route(f"{base}/answer", methods=["GET", "POST"])
        async def plivo_inbound_answer(request: Request) -> Response:
            params = await self._verified(request, "answer")
            if isinstance(params, Response):
                return params
            return await self._answer_inbound_once(params)

        @app.api_route(f"{base}/answer/{{key}}", methods=["GET", "POST"])
        async def plivo_outbound_answer(request: Request, key: str) -> Response:
            params = await self._verified(request, "answer")
            if isinstance(params, Response):
                return params
            return _xml(self._answer_outbound(key, params))

        @app.api_route(f"{base}/transfer/{{key}}", methods=["GET", "POST"])
        async def plivo_transfer(request: Request, key: str) -> Response:
            params = await self._verified(request, "transfer")
            if isinstance(params, Response):  # 413 or 403, already decided by _verified
                return params
            with self._transfers_lock:
                xml = self._transfers.pop(key, None)
            if xml is None:  # unknown or replayed: never dial anyone twice
                log.warning("Plivo fetched an unknown or already used transfer URL")
                return _xml(self.hangup_xml())
            return _xml(xml)

        @app.api_route(f"{base}/hangup", methods=["GET", "POST"])
        async def plivo_hangup(request: Request) -> Response:
            params = await self._verified(request, "hangup")
            if isinstance(params, Response):
                return params
            self._on_hangup(params)
            return Response(status_code=204)

        @app.api_route(f"{base}/ring", methods=["GET", "POST"])
        async def plivo_ring(request: Request) -> Response:
            params = await self._verified(request, "ring")
            if isinstance(params, Response):
                return params
            call_id = self._call_id_of(params)
            if call_id:
                self._bind_call_uuid(params)
                self.on_call_status(call_id, "ringing", carrier_status=params.get("CallStatus", ""))
            return Response(status_code=204)

        @app.api_route(f"{base}/machine", methods=["GET", "POST"])
        async def plivo_machine(request: Request) -> Response:
            params = await self._verified(request, "machine")
            if isinstance(params, Response):
                return params
            self._on_machine_detection(params)
            return Response(status_code=204)

        @app.api_route(f"{base}/stream-status", methods=["GET", "POST"])
        async def plivo_stream_status(request: Request) -> Response:
            params = await self._verified(request, "stream-status")
            if isinstance(params, Response):
                return params
            self._on_stream_status(params)
            return Response(status_code=204)

    async def _verified(self, request: Request, kind: str) -> dict[str, str] | Response:
        """Parsed callback parameters if the signature holds (or enforcement is off), else the refusal.

        The body is read bounded (413 past ``max_webhook_body``, before it is buffered whole), the signature
        checked over the URL as Plivo requested it (forwarded headers from trusted proxies only), and only then
        the nonce recorded: a replayed nonce is refused (403) even with a valid signature.
        """
        body = await read_limited(request, self.max_webhook_body)
        if body is None:
            log.warning("refused Plivo %s webhook: body over %d bytes", kind, self.max_webhook_body)
            return too_large()
        if request.method == "POST":
            params = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        else:
            params = dict(request.query_params)
        url = self.forwarded.request_url(request.scope, request.headers)
        if not self.validator.check_webhook(request.method, url, request.headers, params):
            return Response(status_code=403)
        if not self.validator.fresh_nonce(request.headers, f"Plivo {kind} webhook"):
            return Response(status_code=403)
        if len(self.webhooks) < 1000:
            self.webhooks.append((kind, params))
        return params

    def _call_id_of(self, params: Mapping[str, str]) -> str:
        """The id we track this call under: CallUUID once known to us, else the RequestUUID of our dial."""
        call_uuid = params.get("CallUUID", "")
        if call_uuid and super().session_for_call(call_uuid) is not None:
            return call_uuid
        for key in ("RequestUUID", "ALegRequestUUID"):
            request_uuid = params.get(key, "")
            if request_uuid and (request_uuid in self._answered or super().session_for_call(request_uuid) is not None):
                return self._answered.get(request_uuid, request_uuid)
        # Not known yet: a callback can beat our own dial's REST response. A dialled call is tracked under its
        # RequestUUID until answered, so key the early callback by it; the base replays it once dial() tracks it.
        return params.get("RequestUUID", "") or params.get("ALegRequestUUID", "") or call_uuid

    def _bind_call_uuid(self, params: Mapping[str, str]) -> None:
        """First sight of the CallUUID for a request we dialled: re-key the call under it."""
        call_uuid = params.get("CallUUID", "")
        request_uuid = params.get("RequestUUID", "") or params.get("ALegRequestUUID", "")
        if not call_uuid or not request_uuid or request_uuid in self._answered:
            return
        session = super().session_for_call(request_uuid)
        if session is None:
            return
        self._answered[request_uuid] = call_uuid
        self._requests.pop(request_uuid, None)
        self.rekey(request_uuid, call_uuid)
        session.call_sid = call_uuid
        session.log.call_id = call_uuid

    def _answer_outbound(self, key: str, params: Mapping[str, str]) -> str:
        pending = self._pending.pop(key, None)
        if pending is None:
            log.warning("Plivo fetched an unknown or already used answer URL; hanging up")
            return self.hangup_xml()
        request_uuid = params.get("RequestUUID", "") or pending.request_uuid
        call_uuid = params.get("CallUUID", "")
        if request_uuid and call_uuid:
            with self._bind_lock:
                if super().session_for_call(request_uuid) is None and request_uuid not in self._answered:
                    # The answer beat our own dial's REST response: dial() binds it once it tracks the call.
                    self._early_answers[request_uuid] = call_uuid
                    while len(self._early_answers) > 1024:
                        self._early_answers.pop(next(iter(self._early_answers)))
                else:
                    self._bind_call_uuid({**params, "RequestUUID": request_uuid})
        session = pending.session
        session.log.emit(ev.CALL_STATUS, status="answered", call_uuid=call_uuid)
        return self.answer_xml(pending.stream_url, content_type=pending.content_type, extra_headers=pending.extra_headers)

    async def _answer_inbound_once(self, params: Mapping[str, str]) -> Response:
        """One answer per CallUUID, ever: a retried or replayed answer webhook gets the same XML, nothing new."""
        call_uuid = params.get("CallUUID", "")
        if not call_uuid:
            return Response("missing CallUUID", status_code=400)
        answered = await self.answer_inbound_once(call_uuid, lambda: self._answer_inbound(params))
        if isinstance(answered, Response):
            return answered
        document, fresh = answered
        if document is None and not fresh:  # the first request for this call is still being answered
            return Response(status_code=503, headers={"retry-after": "1"})
        return _xml(document if document is not None else self.hangup_xml())

    async def _answer_inbound(self, params: Mapping[str, str]) -> str | None:
        """The answer XML for a new inbound call, or None (hang up; not remembered, so a retry is answered)."""
        if self.inbound_flow_or_none() is None or not self.server.accepting:
            log.warning("inbound Plivo call refused: %s", "no inbound flow is configured" if self.server.accepting else "draining")
            return None
        try:
            _session, stream_url = await self.answer_inbound(
                params.get("CallUUID", ""), caller=params.get("From") or None, called=params.get("To") or None
            )
        except SessionUnavailable:
            return None  # counted and logged by answer_inbound; Plivo is told to hang up
        return self.answer_xml(stream_url)

    def _on_hangup(self, params: Mapping[str, str]) -> None:
        call_id = self._call_id_of(params)
        status = params.get("CallStatus", "") or "completed"
        status = _STATUS_MAP.get(status, status)
        if not call_id:
            log.info("Plivo hangup callback without a call id")
            return
        # The call is over at the carrier: forget its pending request first, so nothing woken by the status
        # below (a flow leaving call()) tries to cancel a request that no longer exists.
        request_uuid = params.get("RequestUUID", "") or params.get("ALegRequestUUID", "")
        if request_uuid:
            self._requests.pop(request_uuid, None)
            self._drop_pending_for(request_uuid)
        self.on_call_status(call_id, status, hangup_cause=params.get("HangupCause", ""), duration=params.get("Duration", ""))

    def _drop_pending_for(self, request_uuid: str) -> None:
        """A dialled call ended before its answer URL was fetched: its stream token can never be used."""
        for key, pending in list(self._pending.items()):
            if pending.request_uuid == request_uuid:
                self._pending.pop(key, None)
                self.server.registry.revoke(pending.stream_url.rsplit("/", 1)[-1])

    def _on_machine_detection(self, params: Mapping[str, str]) -> None:
        """Async AMD: ``Machine=true`` → ``machine_start``, ``false`` → ``human`` (Twilio's vocabulary)."""
        self._bind_call_uuid(params)
        call_id = self._call_id_of(params)
        if not call_id:
            return
        machine = params.get("Machine", "").strip().lower() == "true"
        answered_by = "machine_start" if machine else "human"
        session = self.session_for_call(call_id)
        if session is not None:
            session.log.emit(ev.CALL_STATUS, status="machine_detection", machine=machine, if_machine=params.get("IfMachine", ""))
        self.on_answered_by(call_id, answered_by)

    def _on_stream_status(self, params: Mapping[str, str]) -> None:
        """Stream status callbacks (both documented vocabularies). Informational: the socket closing ends calls."""
        event = params.get("Event", "") or params.get("event", "")
        call_id = self._call_id_of(params)
        session = self.session_for_call(call_id) if call_id else None
        if session is not None:
            session.log.emit(ev.CALL_STATUS, status=f"stream:{event}", reason=params.get("StatusReason", ""))
        if event in ("DroppedStream", "failed", "DegradedStream"):
            log.warning("Plivo stream status %s for call %s", event, call_id or "?")


def _xml(text: str) -> Response:
    return Response(content=text, media_type="application/xml")


def _check_extra_headers(headers: Mapping[str, Any]) -> dict[str, str]:
    out = {str(k): str(v) for k, v in headers.items()}
    for key, value in out.items():
        if not _HEADER_TOKEN.match(key) or not _HEADER_TOKEN.match(value):
            raise ConfigError(f"Plivo extraHeaders allow only [A-Za-z0-9] keys and values, got {key!r}={value!r}")
    if len(",".join(f"{k}={v}" for k, v in out.items())) > 512:
        raise ConfigError("Plivo extraHeaders are limited to 512 bytes")
    return out


__all__ = ["CALL_TRANSFERRED", "PlivoCallControl", "content_types"]
