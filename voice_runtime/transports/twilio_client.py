"""The one place a Twilio REST client is built: credentials, bounded HTTP timeout, region/edge.

Why one place: every REST call the runtime makes (dial, hangup, transfer, SMS) must have a bounded timeout —
the SDK's default is *no* timeout, and a black-holed egress then blocks a hangup for minutes — and must
honour the same region/edge routing and credentials. Building clients ad hoc is how one of them gets missed.

Configuration (arguments win over the environment):

=========================  ==========================================================================
``TWILIO_ACCOUNT_SID``     the account (``AC…``); always required
``TWILIO_AUTH_TOKEN``      REST auth (unless an API key is given) and webhook/stream signature checks
``TWILIO_API_KEY``         optional API key SID (``SK…``) used for REST instead of the auth token
``TWILIO_API_SECRET``      its secret
``TWILIO_PHONE_NUMBER``    caller id for outbound calls and the SMS sender
``TWILIO_REGION``          e.g. ``ie1``; ``TWILIO_EDGE`` e.g. ``dublin`` (SDK host routing)
``TWILIO_HTTP_TIMEOUT``    seconds per REST request (connect and read); default 15
``TWILIO_API_URL``         send the SDK's ``https://*.twilio.com`` requests to this origin instead (a proxy,
                           or a loopback fake when a test runs the ``voice-runtime`` command); like
                           ``PLIVO_API_URL``
=========================  ==========================================================================

The ``twilio`` SDK is imported inside functions so that importing this module costs nothing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from voice_runtime.errors import ConfigError

DEFAULT_HTTP_TIMEOUT = 15.0

#: Optional process-wide HTTP client factory (tests point the SDK at a loopback fake with it; see
#: :func:`voice_runtime.testing.fake_twilio.FakeTwilio.installed`). ``None``: the SDK's ``TwilioHttpClient``.
_http_client_factory: Callable[[float], Any] | None = None


def set_http_client_factory(factory: Callable[[float], Any] | None) -> Callable[[float], Any] | None:
    """Replace the HTTP client every new Twilio client gets (``factory(timeout) -> HttpClient``).

    Returns the previous factory so callers can restore it. Meant for tests and for deployments that need a
    proxy-aware client; the factory must honour the timeout it is given.
    """
    global _http_client_factory
    previous, _http_client_factory = _http_client_factory, factory
    return previous


def http_timeout_from_env(environ: Mapping[str, str] | None = None) -> float:
    """``TWILIO_HTTP_TIMEOUT`` in seconds (default 15); a non-number, zero, negative or non-finite value is a
    :class:`ConfigError` (never an unbounded or instant timeout)."""
    env = os.environ if environ is None else environ
    raw_timeout = env.get("TWILIO_HTTP_TIMEOUT")
    try:
        timeout = float(raw_timeout) if raw_timeout else DEFAULT_HTTP_TIMEOUT
    except ValueError:
        raise ConfigError(f"TWILIO_HTTP_TIMEOUT must be a number of seconds, got {raw_timeout!r}") from None
    if not (math.isfinite(timeout) and timeout > 0):
        raise ConfigError(f"TWILIO_HTTP_TIMEOUT must be a positive number of seconds, got {raw_timeout!r}")
    return timeout


@dataclass(frozen=True)
class TwilioCredentials:
    """Who we are at Twilio. Secrets are excluded from ``repr`` so they never reach a log line."""

    account_sid: str
    auth_token: str | None = field(default=None, repr=False)
    api_key_sid: str | None = None
    api_key_secret: str | None = field(default=None, repr=False)
    from_number: str | None = None
    region: str | None = None
    edge: str | None = None
    http_timeout: float = DEFAULT_HTTP_TIMEOUT

    def __post_init__(self) -> None:
        if not self.account_sid:
            raise ConfigError("TWILIO_ACCOUNT_SID is not set")
        if not (self.auth_token or (self.api_key_sid and self.api_key_secret)):
            raise ConfigError("TWILIO_AUTH_TOKEN is not set (or give TWILIO_API_KEY and TWILIO_API_SECRET)")
        if bool(self.api_key_sid) != bool(self.api_key_secret):
            raise ConfigError("TWILIO_API_KEY and TWILIO_API_SECRET must be given together")
        if not (isinstance(self.http_timeout, (int, float)) and math.isfinite(self.http_timeout) and self.http_timeout > 0):
            raise ConfigError(f"TWILIO_HTTP_TIMEOUT must be a positive number of seconds, got {self.http_timeout!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> TwilioCredentials:
        """Credentials from ``environ`` (default ``os.environ``); non-None ``overrides`` win."""
        env = os.environ if environ is None else environ
        timeout = http_timeout_from_env(env)
        values: dict[str, Any] = {
            "account_sid": env.get("TWILIO_ACCOUNT_SID", ""),
            "auth_token": env.get("TWILIO_AUTH_TOKEN") or None,
            "api_key_sid": env.get("TWILIO_API_KEY") or None,
            "api_key_secret": env.get("TWILIO_API_SECRET") or None,
            "from_number": env.get("TWILIO_PHONE_NUMBER") or None,
            "region": env.get("TWILIO_REGION") or None,
            "edge": env.get("TWILIO_EDGE") or None,
            "http_timeout": timeout,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret these credentials hold (for log redaction)."""
        return tuple(s for s in (self.auth_token, self.api_key_secret) if s)

    def require_from_number(self) -> str:
        if not self.from_number:
            raise ConfigError("TWILIO_PHONE_NUMBER is not set: it is the caller id / SMS sender")
        return self.from_number


def build_http_client(timeout: float) -> Any:
    """An SDK HTTP client with ``timeout`` seconds per request (the factory's, when one is installed)."""
    redirect = os.environ.get("TWILIO_API_URL", "").strip()
    if _http_client_factory is not None:
        client = _http_client_factory(timeout)
    elif redirect:
        client = _redirecting_http_client(redirect, timeout)
    else:
        from twilio.http.http_client import TwilioHttpClient

        client = TwilioHttpClient(timeout=timeout)
    if getattr(client, "timeout", None) is None:
        client.timeout = timeout  # never let a custom client run unbounded
    return client


def _redirecting_http_client(base: str, timeout: float) -> Any:
    """The SDK's own HTTP client, with requests for ``*.twilio.com`` sent to ``base`` (same path and query)."""
    from urllib.parse import urlsplit, urlunsplit

    from twilio.http.http_client import TwilioHttpClient

    target = urlsplit(base.rstrip("/"))
    if target.scheme not in ("http", "https") or not target.netloc:
        raise ConfigError(f"TWILIO_API_URL must be http(s)://host[:port], got {base!r}")

    class RedirectingHttpClient(TwilioHttpClient):
        def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            parts = urlsplit(url)
            host = parts.hostname or ""
            if host == "twilio.com" or host.endswith(".twilio.com"):
                url = urlunsplit((target.scheme, target.netloc, parts.path, parts.query, ""))
            return super().request(method, url, *args, **kwargs)

    return RedirectingHttpClient(timeout=timeout)


def build_twilio_client(credentials: TwilioCredentials, *, http_client: Any = None) -> Any:
    """A ``twilio.rest.Client`` for ``credentials`` with a bounded HTTP timeout and explicit region/edge.

    With an API key the key authenticates REST requests and ``account_sid`` scopes them. Region and edge are
    passed explicitly, so the SDK routes to ``api.{edge}.{region}.twilio.com``.
    """
    from twilio.rest import Client

    http = http_client if http_client is not None else build_http_client(credentials.http_timeout)
    if getattr(http, "timeout", None) is None:
        http.timeout = credentials.http_timeout
    if credentials.api_key_sid:
        username, password = credentials.api_key_sid, credentials.api_key_secret
    else:
        username, password = credentials.account_sid, credentials.auth_token
    return Client(
        username,
        password,
        account_sid=credentials.account_sid,
        region=credentials.region,
        edge=credentials.edge,
        http_client=http,
    )


__all__ = [
    "DEFAULT_HTTP_TIMEOUT",
    "http_timeout_from_env",
    "TwilioCredentials",
    "build_http_client",
    "build_twilio_client",
    "set_http_client_factory",
]


def carrier_error(exc: BaseException, action: str) -> Exception:
    """Translate an SDK/transport failure of ``action`` into :class:`CarrierApiError` (code and status kept).

    The result is *also* an instance of the original exception's class (``TwilioRestException``,
    ``requests.ReadTimeout`` ...): 0.1.x let those propagate, so ``except TwilioRestException`` written
    against it keeps working, while new code catches ``CarrierApiError``.
    """
    from twilio.base.exceptions import TwilioRestException

    from voice_runtime.errors import CarrierApiError

    if isinstance(exc, TwilioRestException):
        error = CarrierApiError(f"Twilio {action} failed: {exc.msg}", carrier="twilio", code=exc.code, status=exc.status)
    else:
        error = CarrierApiError(f"Twilio {action} failed: {type(exc).__name__}: {exc}", carrier="twilio")
    return _also_original(error, exc)


_DUAL_CLASSES: dict[type[BaseException], type[Exception]] = {}


def _also_original(error: Exception, original: BaseException) -> Exception:
    """``error`` re-classed as a subclass of both its own class and ``type(original)`` (cached per pair)."""
    from voice_runtime.errors import CarrierApiError

    kind = type(original)
    if isinstance(original, CarrierApiError) or not isinstance(original, Exception):
        return error
    cls = _DUAL_CLASSES.get(kind)
    if cls is None:
        try:
            cls = type(
                f"CarrierApiError[{kind.__name__}]",
                (CarrierApiError, kind),
                {"__module__": __name__, "__str__": BaseException.__str__, "__repr__": BaseException.__repr__},
            )
        except TypeError:  # an exception class that cannot be mixed in (layout conflict): keep ours
            return error
        _DUAL_CLASSES[kind] = cls
    dual = cls.__new__(cls)
    dual.__dict__.update(vars(original))  # the SDK's own attributes (uri, method, details, request ...)
    dual.__dict__.update(vars(error))  # ours win: code, status, carrier, retryable, provider
    dual.args = error.args
    return dual


__all__ += ["carrier_error"]
