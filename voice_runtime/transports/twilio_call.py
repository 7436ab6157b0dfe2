"""Twilio calls over REST and the TwiML that connects them to our media stream (prior-art API kept).

Two layers:

* **Primitives** that take an explicit SDK client — :func:`create_call`, :func:`complete_call`,
  :func:`update_call_twiml` — used by :class:`~voice_runtime.transports.twilio_control.TwilioCallControl`.
* **Prior-art, environment-driven functions** — :func:`initiate_outbound_call`, :func:`hangup_call` — for
  scripts that configure everything through ``VOICE_STREAM_URL`` / ``TWILIO_*`` variables.

All TwiML is built with the SDK's ``VoiceResponse``/``Connect``/``Stream``/``Parameter`` so attribute escaping
is the SDK's job, never string formatting. Hangup is always ``Status=completed`` (a POST): HTTP DELETE on a
Call deletes its *record* and fails while the call is live (Twilio error 20009).
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from datetime import datetime, timedelta, timezone
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from voice_runtime.urls import to_http_url
from voice_runtime.urls import to_ws_url as _to_ws_url
from voice_runtime.errors import ConfigError, MissingStreamUrlError
from voice_runtime.transports.twilio_client import TwilioCredentials, build_twilio_client, carrier_error
from voice_runtime.transports.twilio_regions import (
    TwilioCallListIncompleteError,
    TwilioCallNotFoundError,
    TwilioCallRow,
    TwilioRegion,
    hangup_in_regions,
    list_calls_with_client,
    validate_sid,
    validated_regions,
)

log = logging.getLogger(__name__)

#: Twilio: "the combined length of each <Parameter> name and value attributes must be under 500 characters".
MAX_PARAMETER_CHARS = 500
#: Twilio: the ``Twiml`` argument of a call may be at most 4000 characters.
MAX_TWIML_CHARS = 4000
#: The prior art's media-stream route; appended when a bare base URL is given.
PRIOR_ART_STREAM_PATH = "/voice"
#: Call statuses for which Twilio will send status callbacks when we dial.
DEFAULT_STATUS_EVENTS = ("initiated", "ringing", "answered", "completed")
MACHINE_DETECTION_MODES = ("Enable", "DetectMessageEnd")

# A path segment that cannot change the request's meaning (no "/", "?", "%", "."): Twilio's own SIDs are
# 34 letters and digits; "-" and "_" are let through for the test doubles 0.1.x users hang up (CA-...).
_SID = re.compile(r"^[A-Za-z0-9_-]{2,64}$")


def to_ws_url(url: str) -> str:
    """``https://`` → ``wss://`` and ``http://`` → ``ws://``; anything but a web URL is a ``ConfigError``."""
    if not url.startswith(("wss://", "ws://", "https://", "http://")):
        raise ConfigError(f"stream URL must start with wss://, ws://, https:// or http://, got {url.split(':', 1)[0]!r}")
    return _to_ws_url(url)


def _stream_url(stream_url: str, default_path: str | None) -> str:
    url = to_ws_url(stream_url.strip())
    parts = urlsplit(url)
    if not parts.netloc:
        raise ConfigError(f"stream URL has no host: {url!r}")
    if parts.query or parts.fragment:
        # Twilio: "the url does not support query string parameters" — use <Parameter> instead.
        raise ConfigError("Twilio stream URLs cannot carry a query string; pass values as parameters instead")
    if default_path and parts.path in ("", "/"):
        url = url.rstrip("/") + default_path
    return url


def _check_parameters(parameters: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    checked: list[tuple[str, str]] = []
    for name, value in (parameters or {}).items():
        name, text = str(name), "" if value is None else str(value)
        if not name:
            raise ConfigError("stream parameter names must not be empty")
        if len(name) + len(text) >= MAX_PARAMETER_CHARS:
            raise ConfigError(
                f"stream parameter {name!r}: name and value together must be under {MAX_PARAMETER_CHARS} characters "
                f"(got {len(name) + len(text)})"
            )
        checked.append((name, text))
    return checked


def build_stream_twiml(
    stream_url: str,
    parameters: Mapping[str, Any] | None = None,
    *,
    name: str | None = None,
    status_callback: str | None = None,
    status_callback_method: str = "POST",
    default_path: str | None = PRIOR_ART_STREAM_PATH,
) -> str:
    """TwiML that connects a call to a bidirectional media stream: ``<Connect><Stream url>`` + ``<Parameter>``s.

    ``stream_url`` may be ``https://``/``http://`` (converted to ``wss://``/``ws://``). A URL with a path is
    used exactly; a bare base URL (like ``VOICE_STREAM_URL``) gets the prior art's ``/voice`` route appended
    (pass ``default_path=None`` to keep it bare). Parameters arrive in the stream's
    ``start.customParameters``; each name+value must be under 500 characters, and values are XML-escaped by
    the SDK. Query strings are refused because Twilio drops them.
    """
    from twilio.twiml.voice_response import Connect, VoiceResponse

    url = _stream_url(stream_url, default_path)
    attributes: dict[str, str] = {"url": url}
    if name:
        attributes["name"] = name
    if status_callback:
        attributes["status_callback"] = status_callback
        attributes["status_callback_method"] = status_callback_method
    response = VoiceResponse()
    connect = Connect()
    stream = connect.stream(**attributes)
    for key, value in _check_parameters(parameters):
        stream.parameter(name=key, value=value)
    response.append(connect)
    return str(response)


#: Prior-art alias.
build_stream_xml = build_stream_twiml


def build_route_stream_xml(
    stream_url: str,
    route_token: str,
    parameters: Mapping[str, Any] | None = None,
    *,
    path: str = PRIOR_ART_STREAM_PATH,
    **options: Any,
) -> str:
    """TwiML for a per-call routed stream: ``{base}{path}/{token}`` (token URL-quoted; prior-art shape)."""
    if not route_token:
        raise ConfigError("route token must not be empty")
    base = to_ws_url(stream_url.strip()).rstrip("/")
    url = f"{base}{path.rstrip('/')}/{quote(route_token, safe='')}"
    return build_stream_twiml(url, parameters, default_path=None, **options)


def build_dial_twiml(number: str, *, caller_id: str | None = None, timeout: int | None = None) -> str:
    """TwiML that transfers the live call to ``number`` (replacing ``<Connect><Stream>`` ends the stream)."""
    from twilio.twiml.voice_response import VoiceResponse

    if not number:
        raise ConfigError("transfer needs a destination number")
    response = VoiceResponse()
    kwargs: dict[str, Any] = {}
    if caller_id:
        kwargs["caller_id"] = caller_id
    if timeout is not None:
        kwargs["timeout"] = timeout
    response.dial(number, **kwargs)
    return str(response)


# ------------------------------------------------------------------------------------------- REST primitives
def create_call(
    client: Any,
    *,
    to: str,
    from_: str,
    twiml: str,
    status_callback: str | None = None,
    status_callback_events: Iterable[str] | None = DEFAULT_STATUS_EVENTS,
    machine_detection: str | None = None,
    async_amd: bool = True,
    amd_status_callback: str | None = None,
    send_digits: str | None = None,
    ring_timeout: int | None = None,
    time_limit: int | None = None,
    **extra: Any,
) -> str:
    """Place a call whose TwiML is ``twiml``; returns the CallSid. Failures raise ``CarrierApiError``.

    ``machine_detection`` (``Enable``/``DetectMessageEnd``) runs answering-machine detection; with a media
    stream it should be asynchronous (``async_amd=True``, the default) so the stream starts at once and the
    result arrives at ``amd_status_callback``. ``send_digits`` dials DTMF after connect — Twilio then ignores
    machine detection, so combining them is refused here rather than silently losing AMD.
    """
    if not to:
        raise ConfigError("a call needs a destination number")
    if not from_:
        raise ConfigError("a call needs a caller id (TWILIO_PHONE_NUMBER)")
    if len(twiml) > MAX_TWIML_CHARS:
        raise ConfigError(f"TwiML is {len(twiml)} characters; Twilio accepts at most {MAX_TWIML_CHARS}")
    kwargs: dict[str, Any] = {"to": to, "from_": from_, "twiml": twiml}
    if status_callback:
        kwargs["status_callback"] = status_callback
        kwargs["status_callback_method"] = "POST"
        events = list(status_callback_events or ())
        if events:
            kwargs["status_callback_event"] = events
    if machine_detection is not None:
        if machine_detection not in MACHINE_DETECTION_MODES:
            raise ConfigError(f"machine_detection must be one of {MACHINE_DETECTION_MODES}, got {machine_detection!r}")
        if send_digits:
            raise ConfigError("SendDigits and MachineDetection cannot be combined: Twilio ignores MachineDetection")
        kwargs["machine_detection"] = machine_detection
        if async_amd:
            if not amd_status_callback:
                raise ConfigError("asynchronous machine detection needs an AsyncAmdStatusCallback URL")
            kwargs["async_amd"] = "true"
            kwargs["async_amd_status_callback"] = amd_status_callback
            kwargs["async_amd_status_callback_method"] = "POST"
    if send_digits:
        if not re.fullmatch(r"[0-9*#wW]+", send_digits):
            raise ConfigError(f"send_digits may contain only 0-9 * # w W, got {send_digits!r}")
        kwargs["send_digits"] = send_digits
    if ring_timeout is not None:
        kwargs["timeout"] = int(ring_timeout)
    if time_limit is not None:
        kwargs["time_limit"] = int(time_limit)
    kwargs.update(extra)
    try:
        call = client.calls.create(**kwargs)
    except Exception as exc:
        raise carrier_error(exc, "call create") from None
    log.info("dialled call %s", call.sid)
    return str(call.sid)


def _check_sid(call_sid: str) -> str:
    if not isinstance(call_sid, str) or not _SID.match(call_sid):
        raise ValueError(f"not a Twilio call SID: {call_sid!r}")
    return call_sid


def complete_call(client: Any, call_sid: str) -> bool:
    """Hang up ``call_sid`` with ``Status=completed``. True: ended now; False: it had already ended.

    404/20404 (no such live call) and 400/21220 (call not in progress) mean "already ended" and are success,
    so hanging up twice, or after the caller did, is harmless. Never uses HTTP DELETE.
    """
    from twilio.base.exceptions import TwilioRestException

    _check_sid(call_sid)
    try:
        client.calls(call_sid).update(status="completed")
    except TwilioRestException as exc:
        if exc.status == 404 or exc.code == 20404 or (exc.status == 400 and exc.code == 21220):
            log.info("call %s had already ended (HTTP %s, code %s)", call_sid, exc.status, exc.code)
            return False
        raise carrier_error(exc, "hangup") from None
    except Exception as exc:
        raise carrier_error(exc, "hangup") from None
    log.info("hung up call %s", call_sid)
    return True


def update_call_twiml(client: Any, call_sid: str, twiml: str) -> None:
    """Replace the live call's TwiML (e.g. ``<Dial>`` for a transfer). Failures raise ``CarrierApiError``."""
    _check_sid(call_sid)
    try:
        client.calls(call_sid).update(twiml=twiml)
    except Exception as exc:
        raise carrier_error(exc, "call update") from None


# ------------------------------------------------------------------------------------------- prior-art API
def _env_client(environ: Mapping[str, str] | None) -> tuple[Any, TwilioCredentials]:
    credentials = TwilioCredentials.from_env(environ)
    return build_twilio_client(credentials), credentials


def initiate_outbound_call(
    to: str,
    *,
    stream_url: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    from_number: str | None = None,
    client: Any = None,
    environ: Mapping[str, str] | None = None,
    status_callback: str | None = None,
    stream_status_callback: str | None = None,
    from_: str | None = None,
    **options: Any,
) -> str:
    """Dial ``to`` and connect the answered call to the media stream; returns the CallSid (blocking).

    The stream URL comes from ``stream_url`` or ``VOICE_STREAM_URL`` (a bare base gets ``/voice``, the prior
    art's route); without one, :class:`MissingStreamUrlError`. Credentials and caller id come from
    ``TWILIO_ACCOUNT_SID``/``TWILIO_AUTH_TOKEN``/``TWILIO_PHONE_NUMBER`` unless ``client``/``from_number`` are
    given (``from_`` is the 0.1.x spelling of ``from_number``). ``options`` go to :func:`create_call` (``machine_detection``, ``amd_status_callback``,
    ``send_digits``, ``ring_timeout``, ...). New code should prefer ``TwilioCallControl.call()``, which also
    binds the stream to a session with a single-use token and handles status callbacks.
    """
    env = os.environ if environ is None else environ
    base = stream_url or env.get("VOICE_STREAM_URL")
    if not base:
        raise MissingStreamUrlError()
    from_number = from_number or from_
    credentials: TwilioCredentials | None = None
    if client is None:
        client, credentials = _env_client(env)
    sender = from_number or (credentials.from_number if credentials else None) or env.get("TWILIO_PHONE_NUMBER")
    if not sender:
        raise ConfigError("TWILIO_PHONE_NUMBER is not set: it is the caller id for outbound calls")
    twiml = build_stream_twiml(base, parameters, status_callback=stream_status_callback)
    return create_call(client, to=to, from_=sender, twiml=twiml, status_callback=status_callback, **options)


def hangup_call(
    call_sid: str,
    *,
    regions: tuple[TwilioRegion, ...] | None = None,
    client: Any = None,
    environ: Mapping[str, str] | None = None,
) -> bool | None:
    """Hang up ``call_sid`` over REST (blocking, bounded by ``TWILIO_HTTP_TIMEOUT``).

    *Ambient* (no ``regions``): credentials from ``TWILIO_*``; returns True if it ended now, False if Twilio
    says it had already ended or does not exist (404/20404, 400/21220) — hanging up twice is harmless.

    *Explicit regions* (0.1.14): ``regions`` is a non-empty tuple of :class:`TwilioRegion` tried in order;
    404/20404 moves to the next region, 400/21220 is success; absent everywhere raises
    :class:`TwilioCallNotFoundError` (absence in the regions you named is not proof the call ended). Returns
    None, as in 0.1.x. Other failures raise :class:`~voice_runtime.errors.CarrierApiError`, which is also the
    SDK's own exception class (``TwilioRestException``, ``requests`` timeouts), never retried.
    """
    if regions is not None:
        from voice_runtime.transports import _twilio_client

        sid = validate_sid(call_sid)
        checked = _validated_regions(regions)
        hangup_in_regions(sid, checked, _twilio_client.build_explicit_twilio_client)
        return None
    if client is None:
        client, _ = _env_client(environ)
    return complete_call(client, call_sid)


def _validated_regions(regions: object) -> tuple[TwilioRegion, ...]:
    """The one region validator, shared by :func:`hangup_call` and ``register_voice_websocket(hangup_regions=)``."""
    return validated_regions(regions)


def list_calls(
    *,
    api_host: str,
    account_sid: str,
    auth: tuple[str, str],
    to: str,
    start_after: datetime,
    page_size: int = 200,
    max_pages: int = 10,
) -> list[TwilioCallRow]:
    """Every call to ``to`` that started after ``start_after``, from one explicit region (0.1.14).

    All arguments are validated before any client exists (``ValueError``). Every page is read, up to
    ``max_pages`` (more left raises :class:`TwilioCallListIncompleteError`); a malformed page or record, a
    continuation URL that leaves the host or collection, or a transport error raises — a partial list is
    never returned. Rows whose ``start_time`` is unknown are kept with ``start_time=None``.
    """
    from pydantic import ValidationError

    from voice_runtime.transports import _twilio_client
    from voice_runtime.transports.twilio_regions import _check_list_arguments

    try:
        region = TwilioRegion(api_host=api_host, account_sid=account_sid, auth=auth)
    except ValidationError:
        raise ValueError("api_host/account_sid/auth do not form a valid TwilioRegion") from None
    _check_list_arguments(to, start_after, page_size, max_pages)
    client = _twilio_client.build_explicit_twilio_client(region)
    return list_calls_with_client(client, region, to=to, start_after=start_after, page_size=page_size, max_pages=max_pages)


def list_recent_calls(lookback_s: float = 3600.0, *, environ: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Deprecated (0.1.10): calls to ``TWILIO_PHONE_NUMBER`` in the last ``lookback_s`` seconds, at most 200.

    Use :func:`list_calls`, which is typed, reads every page and names its region. Without credentials this
    returns ``[]`` (0.1.x behaviour). Rows: ``{"call_sid", "status", "start_time"}`` (epoch seconds, 0 when
    unknown).
    """
    warnings.warn(
        "list_recent_calls() is deprecated: it silently stops at 200 calls; use list_calls(...)",
        DeprecationWarning,
        stacklevel=2,
    )
    env = os.environ if environ is None else environ
    if not (env.get("TWILIO_ACCOUNT_SID") and (env.get("TWILIO_AUTH_TOKEN") or env.get("TWILIO_API_SECRET"))):
        return []
    client, credentials = _env_client(env)
    since = datetime.now(timezone.utc) - timedelta(seconds=float(lookback_s))
    kwargs: dict[str, Any] = {"start_time_after": since, "limit": 200}
    if credentials.from_number:
        kwargs["to"] = credentials.from_number
    try:
        records = client.calls.list(**kwargs)
    except Exception as exc:
        raise carrier_error(exc, "call list") from None
    rows: list[dict[str, Any]] = []
    for record in records:
        start = getattr(record, "start_time", None)
        rows.append(
            {
                "call_sid": str(record.sid),
                "status": str(record.status or ""),
                "start_time": start.timestamp() if isinstance(start, datetime) else 0,
            }
        )
    return rows


__all__ = [
    "DEFAULT_STATUS_EVENTS",
    "TwilioCallListIncompleteError",
    "TwilioCallNotFoundError",
    "TwilioCallRow",
    "TwilioRegion",
    "list_calls",
    "list_recent_calls",
    "MAX_PARAMETER_CHARS",
    "build_dial_twiml",
    "build_route_stream_xml",
    "build_stream_twiml",
    "build_stream_xml",
    "complete_call",
    "create_call",
    "hangup_call",
    "initiate_outbound_call",
    "to_http_url",
    "to_ws_url",
    "update_call_twiml",
]
