"""Configuration and error helpers shared by the ElevenLabs TTS and STT providers.

Why a module of its own: both providers read the same environment (per instance, never at import — the prior
art froze ``ELEVENLABS_*`` at import time, so a key set later was silently ignored), derive WebSocket URLs from
one configurable base URL (so tests can point them at a loopback fake), and turn ElevenLabs' JSON error bodies
into :class:`~voice_runtime.errors.ProviderError` with an honest ``retryable`` flag.
"""

from __future__ import annotations

import json
import os
import ssl
import threading
from typing import Any

from voice_runtime.urls import to_http_url, to_ws_url  # noqa: F401  (re-exported for the providers)
from voice_runtime.errors import ConfigError, ProviderError

PROVIDER = "elevenlabs"
DEFAULT_BASE_URL = "https://api.elevenlabs.io"

#: Error ``status`` values (HTTP ``detail.status`` or realtime ``message_type``) that no retry can fix.
FATAL_STATUSES = frozenset({
    "auth_error", "invalid_api_key", "unauthorized", "forbidden", "quota_exceeded", "quota_exceeded_error",
    "unaccepted_terms", "unaccepted_terms_error", "invalid_request", "input_error", "payment_required",
    "voice_not_found", "model_not_found", "detected_unusual_activity",
})


_ssl_context: ssl.SSLContext | None = None
_ssl_lock = threading.Lock()


def shared_ssl_context() -> ssl.SSLContext:
    """One verifying TLS context (httpx's defaults: certifi, ``SSL_CERT_FILE``/``SSL_CERT_DIR``) for every client.

    Why: ``httpx.Client()`` builds a fresh context per client, and loading the CA bundle costs 20-300 ms of CPU
    while holding the GIL. With one TTS client per call that was paid on every call's first utterance, stalling
    the event loop and every other call's audio (``benchmarks/README.md``, real-call workload). A context is
    meant to be shared by many connections; it is read-only once built.
    """
    global _ssl_context
    with _ssl_lock:
        if _ssl_context is None:
            import httpx

            _ssl_context = httpx.create_ssl_context()
        return _ssl_context


def env_or(value: Any, name: str, default: Any = None) -> Any:
    """``value`` if given, else the environment variable ``name`` (read now), else ``default``."""
    if value is not None:
        return value
    found = os.environ.get(name)
    return found if found not in (None, "") else default


def resolve_api_key(api_key: str | None) -> str:
    key = env_or(api_key, "ELEVENLABS_API_KEY")
    if not key:
        raise ConfigError("ElevenLabs API key missing: pass api_key= or set ELEVENLABS_API_KEY")
    return str(key)


def resolve_base_url(base_url: str | None) -> str:
    """HTTP(S) base URL; ``ELEVENLABS_BASE_URL`` overrides the public API (regional or residency hosts, fakes)."""
    url = str(env_or(base_url, "ELEVENLABS_BASE_URL", DEFAULT_BASE_URL)).rstrip("/")
    if not url.startswith(("http://", "https://", "ws://", "wss://")):
        raise ConfigError(f"ElevenLabs base URL must start with http(s):// or ws(s)://, got {url!r}")
    return url


def parse_error_body(body: bytes) -> tuple[str, str]:
    """(status slug, human message) from an ElevenLabs error body; tolerant of every shape seen in the wild."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return "", text[:300]
    detail = data.get("detail", data) if isinstance(data, dict) else data
    if isinstance(detail, dict):
        status = str(detail.get("status") or detail.get("code") or detail.get("type") or detail.get("error") or "")
        message = str(detail.get("message") or detail.get("msg") or status or text)
        return status, message[:300]
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):  # FastAPI-style validation errors
        return "invalid_request", str(detail[0].get("msg", detail[0]))[:300]
    return "", str(detail)[:300]


def http_status_error(status_code: int, body: bytes, *, what: str = "request") -> ProviderError:
    """Map a non-2xx response to a ProviderError. Auth, quota and bad requests are not retryable."""
    status, message = parse_error_body(body)
    if status_code in (401, 403):
        kind, retryable = "authentication failed", False
    elif status_code == 429:
        retryable = status not in FATAL_STATUSES
        kind = "rate limited" if retryable else "quota exceeded"
    elif status_code == 402:
        kind, retryable = "payment required", False
    elif 500 <= status_code:
        kind, retryable = "server error", True
    else:
        kind, retryable = "request rejected", status in ("", "system_busy") and status_code == 408
    slug = f" [{status}]" if status else ""
    return ProviderError(f"{what}: {kind} (HTTP {status_code}){slug}: {message}", provider=PROVIDER, retryable=retryable)
