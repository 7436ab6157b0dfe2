"""Twilio call control: dial, answer inbound webhooks, status/AMD callbacks, hang up, transfer, SMS.

::

    server = VoiceServer(stt_factory=..., tts_factory=..., public_url="https://voice.example.com")
    twilio = TwilioCallControl(server)          # TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN / TWILIO_PHONE_NUMBER

    @twilio.on_inbound_call                     # point the number's voice webhook at POST /twilio/voice
    def answer(session):
        session.speak(f"Hello {session.caller_number}", wait=True)

    with twilio.call("+15551234567", machine_detection="Enable") as session:   # outbound, one flow
        if session.wait_for_answered_by(10) == "human":
            session.speak("Hi!", wait=True)

How a call we dial finds its session: ``dial`` issues a single-use token, the TwiML's ``<Stream url>`` is
``wss://…/stream/{token}``, and the server binds the arriving stream to the dialling session (an unknown or
reused token is refused before the socket is accepted). Inbound calls work the same way: the webhook creates
the session (caller and called numbers known from the webhook), answers with ``<Connect><Stream>`` to a
fresh token URL, and starts the inbound flow in its own thread once the stream is live.

Routes added to ``server.app`` (prefix ``/twilio``; every one checks ``X-Twilio-Signature`` first):

* ``POST /twilio/voice`` — inbound voice webhook → TwiML
* ``POST /twilio/status`` — call status callback (busy/no-answer/failed/completed release every waiter)
* ``POST /twilio/stream-status`` — media stream status callback
* ``POST /twilio/amd`` — asynchronous answering-machine detection result → ``session.wait_for_answered_by``

Hangup is REST first (``Status=completed``; 404/20404 = already ended; never DELETE), then the socket closes.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI, Request, Response

from voice_runtime import call_events as ev

from voice_runtime.errors import CallHangupError, ConfigError, MissingStreamUrlError
from voice_runtime.lifecycle import EndReason
from voice_runtime.server.app import VoiceServer
from voice_runtime.transports.call_control import Flow
from voice_runtime.session import VoiceSession
from voice_runtime.transports.call_control import CallControlBase
from voice_runtime.transports.twilio_call import (
    DEFAULT_STATUS_EVENTS,
    build_dial_twiml,
    build_stream_twiml,
    complete_call,
    create_call,
    to_http_url,
    update_call_twiml,
)
from voice_runtime.transports.twilio_client import TwilioCredentials, build_twilio_client
from voice_runtime.transports.twilio_security import TwilioSignatureValidator, protect_logs
from voice_runtime.transports.twilio_sms import send_sms_with_client
from voice_runtime.server.connection import SessionUnavailable
from voice_runtime.transports.webhooks import MAX_WEBHOOK_BODY, read_limited, too_large

log = logging.getLogger(__name__)

#: Status-callback fields copied onto the session's ``call_status`` event (Twilio name → event field).
_STATUS_FIELDS = {
    "CallDuration": "duration",
    "SipResponseCode": "sip_response_code",
    "AnsweredBy": "answered_by",
    "Timestamp": "timestamp",
    "SequenceNumber": "sequence_number",
    "ErrorCode": "error_code",
    "Direction": "direction",
}

STREAM_STATUS = ev.STREAM_STATUS
CALL_TRANSFERRED = ev.CALL_TRANSFERRED


class TwilioCallControl(CallControlBase):
    """Twilio REST + webhooks for a :class:`VoiceServer`. One per server (it registers itself)."""

    carrier = "twilio"

    def __init__(
        self,
        server: VoiceServer,
        *,
        credentials: TwilioCredentials | None = None,
        public_url: str | None = None,
        client: Any = None,
        http_client: Any = None,
        validate_signatures: bool | None = None,
        trust_forwarded_headers: bool = True,
        forwarded_allow_ips: str | Iterable[str] | None = None,
        route_prefix: str = "/twilio",
        inbound_flow: Flow | None = None,
        inbound_stream_timeout: float = 30.0,
        status_callback_events: Iterable[str] = DEFAULT_STATUS_EVENTS,
        max_webhook_body: int = MAX_WEBHOOK_BODY,
        environ: Mapping[str, str] | None = None,
        session_class: type[VoiceSession] | None = None,
        **credential_overrides: Any,
    ) -> None:
        """Credentials come from ``credentials`` or the environment (``credential_overrides`` such as
        ``account_sid=``, ``auth_token=``, ``from_number=``, ``region=``, ``edge=``, ``http_timeout=`` win).

        ``client``/``http_client`` replace the SDK client or its HTTP layer (tests point them at a loopback
        fake). ``validate_signatures=False`` — or ``TWILIO_SKIP_SIGNATURE_VALIDATION=1`` — is the logged,
        development-only opt-out; with validation on an auth token is required.
        """
        self._environ = os.environ if environ is None else environ
        self.credentials = credentials or TwilioCredentials.from_env(self._environ, **credential_overrides)
        self.validator = TwilioSignatureValidator(
            self.credentials.auth_token,
            validate_signatures=validate_signatures,
            trust_forwarded_headers=trust_forwarded_headers,
            forwarded_allow_ips=forwarded_allow_ips,
            environ=self._environ,
        )
        protect_logs(*self.credentials.secrets, username=self.credentials.api_key_sid or self.credentials.account_sid)
        super().__init__(server, public_url=public_url, inbound_stream_timeout=inbound_stream_timeout)
        self.client = client if client is not None else build_twilio_client(self.credentials, http_client=http_client)
        self.route_prefix = "/" + route_prefix.strip("/") if route_prefix.strip("/") else ""
        self.inbound_flow = inbound_flow
        self.set_session_class(session_class)
        self.status_callback_events = tuple(status_callback_events)
        self.max_webhook_body = max_webhook_body
        server.add_upgrade_validator(self.carrier, self.validator.upgrade_validator)
        if not self.validator.enabled and server.allow_unsigned_streams is None:
            server.allow_unsigned_streams = True
        self._install_routes(server.app)

    def __repr__(self) -> str:
        return f"TwilioCallControl(account_sid={self.credentials.account_sid!r}, routes={self.route_prefix!r})"

    # ---------------------------------------------------------------------------------- URLs
    def _public_base(self, fallback: str | None = None) -> str:
        base = self.public_url or self.server.public_url or self._environ.get("VOICE_STREAM_URL") or fallback
        if not base:
            raise MissingStreamUrlError()
        return base

    def webhook_url(self, name: str, *, base: str | None = None) -> str:
        """Public ``https://`` URL of one of our webhook routes (``voice``, ``status``, ``stream-status``, ``amd``)."""
        root = to_http_url(base or self._public_base()).rstrip("/")
        return f"{root}{self.server.path_prefix}{self.route_prefix}/{name}"

    # ---------------------------------------------------------------------------------- REST (CallControlBase)
    def _dial(
        self,
        to: str,
        stream_url: str,
        session: VoiceSession,
        *,
        parameters: Mapping[str, Any] | None = None,
        from_number: str | None = None,
        machine_detection: str | None = None,
        send_digits: str | None = None,
        ring_timeout: int | None = None,
        time_limit: int | None = None,
        **extra: Any,
    ) -> str:
        """Place the call: TwiML ``<Connect><Stream url=…/stream/{token}>``, status + AMD callbacks."""
        sender = from_number or self.credentials.require_from_number()
        stream_parameters = {"direction": "outbound", "from_number": sender, "to_number": to, **(parameters or {})}
        twiml = build_stream_twiml(
            stream_url, stream_parameters, status_callback=self.webhook_url("stream-status"), default_path=None
        )
        session.carrier = self.carrier
        session.caller_number = session.caller_number or sender
        call_sid = create_call(
            self.client,
            to=to,
            from_=sender,
            twiml=twiml,
            status_callback=self.webhook_url("status"),
            status_callback_events=self.status_callback_events,
            machine_detection=machine_detection,
            async_amd=True,
            amd_status_callback=self.webhook_url("amd") if machine_detection else None,
            send_digits=send_digits,
            ring_timeout=ring_timeout,
            time_limit=time_limit,
            **extra,
        )
        self.track(call_sid, session)  # now, not after return: callbacks may race the REST response
        return call_sid

    def _hangup_call(self, call_id: str) -> None:
        complete_call(self.client, call_id)

    def hangup_call(self, call_id: str) -> bool:
        """Hang up any call of this account by SID (True: ended now; False: already ended)."""
        return complete_call(self.client, call_id)

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
        """Transfer the live call to ``number`` by replacing its TwiML with ``<Dial>`` (blocking REST).

        Twilio then ends the media stream; the session reports it as disconnected and flows see the usual
        :class:`CallHangupError` from blocking calls. With ``wait`` this returns once the stream has ended
        (True) or ``wait_timeout`` passed (False). Leaving the flow afterwards does not hang up the
        transferred call.
        """
        call_sid = session.call_sid
        if not call_sid:
            raise ConfigError("transfer needs a session with a call SID")
        if session.is_disconnected:
            raise CallHangupError("cannot transfer a call that has ended", call_id=call_sid)
        twiml = build_dial_twiml(number, caller_id=caller_id, timeout=dial_timeout)
        self.mark_transferred(call_sid)
        try:
            update_call_twiml(self.client, call_sid, twiml)
        except Exception:
            self.mark_transferred(call_sid, False)
            raise
        session.log.emit(CALL_TRANSFERRED, to=number)
        return session.wait_until_disconnected(wait_timeout) if wait else True

    def send_sms(self, to: str, body: str, *, from_number: str | None = None) -> dict[str, str]:
        """Send an SMS from ``from_number`` (default ``TWILIO_PHONE_NUMBER``); ``{"message_sid","status","to"}``."""
        sender = from_number or self.credentials.require_from_number()
        return send_sms_with_client(self.client, to=to, body=body, from_=sender)

    # ---------------------------------------------------------------------------------- inbound
    async def _answer_inbound(self, request: Request, params: Mapping[str, str]) -> Response:
        """Answer once per CallSid: a retried or replayed voice webhook gets the same TwiML and creates nothing."""
        call_sid = params.get("CallSid", "")
        if not call_sid:
            return Response("missing CallSid", status_code=400)
        answered = await self.answer_inbound_once(call_sid, lambda: self._build_inbound_answer(request, params))
        if isinstance(answered, Response):
            return answered
        twiml, fresh = answered
        if twiml is None and not fresh:  # the first request for this call is still being answered
            return Response(status_code=503, headers={"retry-after": "1"})
        return _twiml_response(twiml if twiml is not None else _reject_twiml())

    async def _build_inbound_answer(self, request: Request, params: Mapping[str, str]) -> str | None:
        """The TwiML for a new inbound call, or None (reject; not remembered, so a retry is answered afresh)."""
        call_sid = params["CallSid"]
        flow = self.inbound_flow_or_none()
        if flow is None or not self.server.accepting:
            log.warning("rejecting inbound call %s: %s", call_sid, "no inbound flow registered" if flow is None else "draining")
            return None
        caller, called = params.get("From") or None, params.get("To") or None
        origin = self.validator.request_url(request.scope, request.headers).split("/", 3)
        request_base = "/".join(origin[:3])  # scheme://host as Twilio reached us: a last-resort public URL
        base = self._public_base(fallback=request_base)
        try:
            _session, stream_url = await self.answer_inbound(call_sid, caller=caller, called=called, base_url=base)
        except SessionUnavailable:
            return None  # counted and logged by answer_inbound; Twilio hears a reject
        parameters = {"direction": "inbound", "from_number": caller or "", "to_number": called or ""}
        return build_stream_twiml(
            stream_url, parameters, status_callback=self.webhook_url("stream-status", base=base), default_path=None
        )

    # ---------------------------------------------------------------------------------- routes
    def _install_routes(self, app: FastAPI) -> None:
        prefix = f"{self.server.path_prefix}{self.route_prefix}"

        async def voice(request: Request) -> Response:
            params = await self._authenticated_params(request)
            if isinstance(params, Response):
                return params
            return await self._answer_inbound(request, params)

        async def status(request: Request) -> Response:
            params = await self._authenticated_params(request)
            if isinstance(params, Response):
                return params
            call_sid, call_status = params.get("CallSid", ""), params.get("CallStatus", "")
            if not call_sid or not call_status:
                return Response("missing CallSid or CallStatus", status_code=400)
            data = {field: params[name] for name, field in _STATUS_FIELDS.items() if params.get(name)}
            self.on_call_status(call_sid, call_status.lower(), **data)
            return Response(status_code=204)

        async def stream_status(request: Request) -> Response:
            params = await self._authenticated_params(request)
            if isinstance(params, Response):
                return params
            call_sid, event = params.get("CallSid", ""), params.get("StreamEvent", "")
            session = self.session_for_call(call_sid) if call_sid else None
            if session is not None:
                session.log.emit(STREAM_STATUS, event=event, stream_id=params.get("StreamSid"), error=params.get("StreamError"))
                if event == "stream-error" and not session.is_connected:
                    session.signal_disconnected(EndReason.STREAM_ERROR)  # the stream will never start: release waiters
            return Response(status_code=204)

        async def amd(request: Request) -> Response:
            params = await self._authenticated_params(request)
            if isinstance(params, Response):
                return params
            call_sid, answered_by = params.get("CallSid", ""), params.get("AnsweredBy", "")
            if not call_sid or not answered_by:
                return Response("missing CallSid or AnsweredBy", status_code=400)
            self.on_answered_by(call_sid, answered_by)
            return Response(status_code=204)

        for name, endpoint in (("voice", voice), ("status", status), ("stream-status", stream_status), ("amd", amd)):
            app.add_api_route(f"{prefix}/{name}", endpoint, methods=["POST"], include_in_schema=False)

    async def _authenticated_params(self, request: Request) -> Mapping[str, str] | Response:
        """Read the (bounded) body and check the signature before anything else looks at the request."""
        body = await read_limited(request, self.max_webhook_body)
        if body is None:
            return too_large()
        ok, params = await self.validator.validate_http(request, body)
        if not ok:
            log.warning("refused %s: invalid or missing X-Twilio-Signature", request.url.path)
            return Response(status_code=403)
        if params is None:  # JSON body (bodySHA256 variant)
            try:
                document = json.loads(body or b"{}")
            except ValueError:
                return Response("invalid JSON", status_code=400)
            if not isinstance(document, dict):
                return Response("JSON body must be an object", status_code=400)
            return {str(k): "" if v is None else str(v) for k, v in document.items()}
        return params


def _twiml_response(twiml: str) -> Response:
    return Response(content=twiml, media_type="application/xml")


def _reject_twiml() -> str:
    from twilio.twiml.voice_response import VoiceResponse

    response = VoiceResponse()
    response.reject()
    return str(response)


__all__ = ["CALL_TRANSFERRED", "MAX_WEBHOOK_BODY", "STREAM_STATUS", "TwilioCallControl"]
