"""The one place a plivo SDK ``RestClient`` is built (call control and SMS share it).

Why a redirecting adapter: plivo-python has no base-URL option — ``Client.request`` resets ``base_uri`` to
the hard-coded ``https://api.plivo.com`` on every call. To talk to a proxy or to the loopback fake in tests
we mount a ``requests`` transport adapter on the SDK's own sessions that rewrites that origin. Requests still
go through the SDK's code and over a real socket; only the destination changes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from voice_runtime.errors import ConfigError

PLIVO_ORIGIN = "https://api.plivo.com"
DEFAULT_HTTP_TIMEOUT = 15.0


@dataclass(frozen=True)
class PlivoCredentials:
    auth_id: str
    auth_token: str

    def __repr__(self) -> str:  # never print the token
        return f"PlivoCredentials(auth_id={self.auth_id!r}, auth_token='***')"


def credentials(auth_id: str | None = None, auth_token: str | None = None) -> PlivoCredentials:
    """Explicit values, else ``PLIVO_AUTH_ID``/``PLIVO_AUTH_TOKEN``; :class:`ConfigError` naming what is missing."""
    auth_id = auth_id or os.environ.get("PLIVO_AUTH_ID", "")
    auth_token = auth_token or os.environ.get("PLIVO_AUTH_TOKEN", "")
    missing = [name for name, value in (("PLIVO_AUTH_ID", auth_id), ("PLIVO_AUTH_TOKEN", auth_token)) if not value]
    if missing:
        raise ConfigError(f"Plivo credentials missing: set {', '.join(missing)}")
    return PlivoCredentials(auth_id, auth_token)


def http_timeout(value: float | None = None) -> float:
    if value is not None:
        return float(value)
    raw = os.environ.get("PLIVO_HTTP_TIMEOUT", "")
    try:
        timeout = float(raw) if raw else DEFAULT_HTTP_TIMEOUT
    except ValueError:
        raise ConfigError(f"PLIVO_HTTP_TIMEOUT must be a number of seconds, got {raw!r}") from None
    if not timeout > 0:
        raise ConfigError(f"PLIVO_HTTP_TIMEOUT must be positive, got {raw!r}")
    return timeout


def build_plivo_client(
    creds: PlivoCredentials, *, api_base_url: str | None = None, timeout: float | None = None
) -> Any:
    """A ``plivo.RestClient`` with a request timeout; ``api_base_url`` (or ``PLIVO_API_URL``) redirects it."""
    try:
        import plivo
    except ImportError as exc:  # pragma: no cover - extra not installed
        raise ConfigError("the plivo SDK is not installed: pip install 'voice_runtime[plivo]'") from exc
    client = plivo.RestClient(creds.auth_id, creds.auth_token, timeout=http_timeout(timeout))
    base = api_base_url or os.environ.get("PLIVO_API_URL")
    if base and base.rstrip("/") != PLIVO_ORIGIN:
        adapter = _redirect_adapter(base)
        for session in (client.session, client.multipart_session):
            session.mount(PLIVO_ORIGIN, adapter)
    return client


def _redirect_adapter(base: str) -> Any:
    from requests.adapters import HTTPAdapter

    target = urlsplit(base.rstrip("/"))
    if target.scheme not in ("http", "https") or not target.netloc:
        raise ConfigError(f"Plivo API base URL must be http(s)://host[:port][/prefix], got {base!r}")

    class RedirectAdapter(HTTPAdapter):
        """Sends requests meant for api.plivo.com to ``base`` instead (same path, query and body)."""

        def send(self, request: Any, **kwargs: Any) -> Any:  # type: ignore[override]  # forwards every argument
            parts = urlsplit(request.url)
            request.url = urlunsplit((target.scheme, target.netloc, target.path + parts.path, parts.query, ""))
            return super().send(request, **kwargs)

    return RedirectAdapter()


#: The SDK's exception classes carry no HTTP status; each maps to the status Plivo answered with.
_STATUS_BY_ERROR = {
    "AuthenticationError": 401,
    "ForbiddenError": 403,
    "ResourceNotFoundError": 404,
    "InvalidRequestError": 400,
    "ValidationError": 400,
    "GeoPermissionError": 403,
    "PlivoServerError": 500,
}


def carrier_api_error(exc: Exception, action: str) -> Exception:
    """The SDK's ``PlivoRestError`` (or a transport error) as our ``CarrierApiError``; others unchanged.

    Every carrier's REST failures raise ``CarrierApiError`` so flows branch on one type; the message names the
    action and the SDK's error class, never credentials.
    """
    from voice_runtime.errors import CarrierApiError

    try:
        from plivo.exceptions import PlivoRestError
    except ImportError:  # pragma: no cover - extra not installed
        return exc
    name = type(exc).__name__
    if isinstance(exc, PlivoRestError):
        status = next((code for cls, code in _STATUS_BY_ERROR.items() if any(k.__name__ == cls for k in type(exc).__mro__)), None)
        detail = str(exc)[:200]
        return CarrierApiError(f"Plivo {action} failed: {name}: {detail}", carrier="plivo", status=status)
    if isinstance(exc, OSError) or "requests" in type(exc).__module__:
        return CarrierApiError(f"Plivo {action} failed: {name}", carrier="plivo", status=None)
    return exc
