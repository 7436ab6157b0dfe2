"""Twilio request authentication (``X-Twilio-Signature``) and secret-free logging.

Every Twilio webhook and every media-stream WebSocket upgrade is signed with the account's auth token:
``base64(HMAC-SHA1(token, URL + sorted form params))``. Checking it is what stops anyone on the internet from
opening paid STT/TTS sessions or forging "call ended" callbacks. The check itself is the SDK's
``RequestValidator``; what this module adds is the part projects get wrong:

* **The exact URL.** Twilio signs the URL *it* requested. Behind a TLS-terminating proxy or tunnel the app
  sees ``http://localhost:8080/...``; we rebuild ``https://public-host/...`` (``wss://`` for upgrades) from
  ``X-Forwarded-Proto`` / ``X-Forwarded-Host`` (first value) — honoured only from configured proxies
  (``forwarded_allow_ips``, :mod:`voice_runtime.transports.forwarded`) — keeping the raw path and query.
  The validator itself also tries the URL with and without the default port.
* **Bodies.** Form posts sign the sorted parameters; JSON posts carry ``bodySHA256`` in the query and sign
  the URL alone (the SDK checks the hash). WebSocket upgrades are GETs: URL only, no params.
* **Before anything else.** Upgrades are checked before ``accept()`` (the server refuses with HTTP 403 and
  creates no session); webhooks before their body is interpreted.

Development-only opt-out: ``TWILIO_SKIP_SIGNATURE_VALIDATION=1`` (or ``validate_signatures=False``) accepts
unsigned requests and logs a warning when set up and a counted debug line per skipped check. Never use it on
a reachable server.

:class:`SecretRedactingFilter` keeps auth tokens and API secrets (and Basic-auth headers made from them) out
of log records, as defence in depth: the runtime never logs them on purpose.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import ImmutableMultiDict

from voice_runtime.errors import ConfigError, SignatureError
from voice_runtime.transports.forwarded import ForwardedHeaders, reconstruct_url

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "x-twilio-signature"
SKIP_ENV = "TWILIO_SKIP_SIGNATURE_VALIDATION"
_TRUTHY = {"1", "true", "yes", "on"}


def skip_requested(environ: Mapping[str, str] | None = None) -> bool:
    """Is the development-only opt-out ``TWILIO_SKIP_SIGNATURE_VALIDATION`` set? (Read on each call.)"""
    env = os.environ if environ is None else environ
    return env.get(SKIP_ENV, "").strip().lower() in _TRUTHY


class TwilioSignatureValidator:
    """Validates Twilio signatures with the SDK's ``RequestValidator``; counts outcomes in ``stats``.

    ``validate_signatures=False`` (or the env opt-out) turns every check into an accept — development only;
    the constructor logs a warning saying so. With validation on, an auth token is required.
    """

    def __init__(
        self,
        auth_token: str | None,
        *,
        validate_signatures: bool | None = None,
        trust_forwarded_headers: bool = True,
        forwarded_allow_ips: str | Iterable[str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if validate_signatures is None:
            validate_signatures = not skip_requested(environ)
        self.enabled = validate_signatures
        self.trust_forwarded_headers = trust_forwarded_headers
        self.forwarded = ForwardedHeaders(forwarded_allow_ips, environ=environ)
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()
        if self.enabled:
            if not auth_token:
                raise ConfigError(
                    "TWILIO_AUTH_TOKEN is needed to validate Twilio signatures "
                    f"(for local development only, set {SKIP_ENV}=1 to skip validation)"
                )
            from twilio.request_validator import RequestValidator

            self._validator: Any = RequestValidator(auth_token)
        else:
            self._validator = None
            log.warning(
                "Twilio signature validation is DISABLED (%s / validate_signatures=False): any client can open "
                "media streams and post webhooks. Development only.",
                SKIP_ENV,
            )

    def _count(self, outcome: str) -> None:
        with self._lock:
            self.stats[outcome] += 1

    # ------------------------------------------------------------------ pure checks
    def check(self, url: str, params: Any, signature: str | None) -> bool:
        """Validate ``signature`` for ``url`` + ``params`` (a multi-dict, a JSON body string, or ``{}``)."""
        if not self.enabled:
            self._count("skipped")
            log.debug("signature check skipped (validation disabled)")
            return True
        if not signature:
            self._count("missing")
            return False
        ok = bool(self._validator.validate(url, params, signature))
        self._count("valid" if ok else "invalid")
        return ok

    def check_form(self, url: str, body: bytes | str, signature: str | None) -> tuple[bool, ImmutableMultiDict[str, str]]:
        """Validate a form-encoded POST; returns ``(ok, params)`` (repeated names keep every value)."""
        text = body.decode("utf-8", errors="replace") if isinstance(body, (bytes, bytearray)) else body
        params: ImmutableMultiDict[str, str] = ImmutableMultiDict(parse_qsl(text, keep_blank_values=True))
        return self.check(url, params, signature), params

    def check_json(self, url: str, body: bytes | str, signature: str | None) -> bool:
        """Validate a JSON POST: ``url`` must carry ``bodySHA256``; the SDK checks the hash and the URL."""
        text = body.decode("utf-8", errors="replace") if isinstance(body, (bytes, bytearray)) else body
        if self.enabled and "bodySHA256=" not in url:
            self._count("missing_body_hash")
            return False
        return self.check(url, text, signature)

    # ------------------------------------------------------------------ ASGI helpers
    def request_url(self, scope: Mapping[str, Any], headers: Mapping[str, str], *, websocket: bool = False) -> str:
        trusted = self.trust_forwarded_headers and self.forwarded.trusts(scope)
        return reconstruct_url(scope, headers, websocket=websocket, trust_forwarded=trusted)

    async def validate_http(self, request: Any, body: bytes) -> tuple[bool, ImmutableMultiDict[str, str] | None]:
        """Validate a Starlette request whose ``body`` was already read. Form → params; JSON → ``None`` params."""
        url = self.request_url(request.scope, request.headers)
        signature = request.headers.get(SIGNATURE_HEADER)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "application/json":
            return self.check_json(url, body, signature), None
        return self.check_form(url, body, signature)

    async def upgrade_validator(self, websocket: Any) -> bool | None:
        """The server's upgrade hook (runs *before* ``accept()``).

        True: a valid Twilio signature. False: a Twilio signature that does not match (refused with 403).
        None: no Twilio signature on the request (another carrier's business; unsigned upgrades are refused
        by the server unless explicitly allowed).
        """
        signature = websocket.headers.get(SIGNATURE_HEADER)
        if not self.enabled:
            self._count("skipped")
            return True if signature is not None else None
        if signature is None:
            return None
        url = self.request_url(websocket.scope, websocket.headers, websocket=True)
        ok = self.check(url, {}, signature)
        if not ok:
            log.warning("refused media stream upgrade: X-Twilio-Signature does not match %s", _path_only(url))
        return ok


def _path_only(url: str) -> str:
    """Host and path for log lines (no query: it may carry a body hash or other request data)."""
    return url.split("?", 1)[0]


def require_valid(ok: bool, what: str) -> None:
    """Raise :class:`SignatureError` unless ``ok`` (for callers outside the HTTP routes)."""
    if not ok:
        raise SignatureError(f"{what}: invalid or missing X-Twilio-Signature")


# ------------------------------------------------------------------------------------------- log redaction
REDACTED = "[REDACTED]"
_BASIC_AUTH = re.compile(r"""(?i:(authorization['"]?\s*[:=]\s*['"]?basic\s+))[A-Za-z0-9+/=]+|(\bBasic\s+)[A-Za-z0-9+/]{16,}={0,2}""")


class SecretRedactingFilter(logging.Filter):
    """Replaces known secrets (and any ``Basic <credentials>`` header value) in log records.

    Attach it to a logger (covers records created *at that logger*) or to a handler (covers everything the
    handler emits). Secrets are added with :meth:`add`; the Basic-auth encodings of ``user:secret`` pairs are
    redacted too. The message is formatted once and frozen (``args`` cleared) so formatters cannot re-expand it.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._lock = threading.Lock()
        self.add(*secrets)

    def add(self, *secrets: str | None) -> None:
        with self._lock:
            for secret in secrets:
                if secret and len(secret) >= 4:  # never redact trivially short strings out of every message
                    self._secrets.add(secret)

    def add_basic_auth(self, username: str, secret: str | None) -> None:
        if username and secret:
            self.add(base64.b64encode(f"{username}:{secret}".encode()).decode("ascii"))

    def redact(self, text: str) -> str:
        with self._lock:
            secrets = sorted(self._secrets, key=len, reverse=True)
        for secret in secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return _BASIC_AUTH.sub(lambda m: (m.group(1) or m.group(2)) + REDACTED, text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is the caller's bug; do not drop the record
            return True
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


#: The process-wide redactor; Twilio call control registers its credentials here.
redactor = SecretRedactingFilter()

#: Loggers that see Twilio requests or our Twilio handling.
PROTECTED_LOGGERS = (
    "twilio.http_client",
    "urllib3.connectionpool",
    "voice_runtime.transports.twilio_call",
    "voice_runtime.transports.twilio_control",
    "voice_runtime.transports.twilio_security",
    "voice_runtime.transports.twilio_sms",
    "voice_runtime.transports.call_control",
    "voice_runtime.server.app",
    "voice_runtime.server.connection",
)


def protect_logs(*secrets: str | None, username: str | None = None, handlers: Iterable[logging.Handler] = ()) -> None:
    """Register ``secrets`` with the process redactor and attach it to the Twilio-related loggers.

    Pass your own ``handlers`` (e.g. the root handlers) to redact records from every logger they emit.
    Idempotent.
    """
    redactor.add(*secrets)
    if username:
        for secret in secrets:
            redactor.add_basic_auth(username, secret)
    for name in PROTECTED_LOGGERS:
        logger = logging.getLogger(name)
        if redactor not in logger.filters:
            logger.addFilter(redactor)
    for handler in handlers:
        if redactor not in handler.filters:
            handler.addFilter(redactor)


__all__ = [
    "PROTECTED_LOGGERS",
    "REDACTED",
    "SIGNATURE_HEADER",
    "SKIP_ENV",
    "SecretRedactingFilter",
    "TwilioSignatureValidator",
    "protect_logs",
    "reconstruct_url",
    "redactor",
    "require_valid",
    "skip_requested",
]
