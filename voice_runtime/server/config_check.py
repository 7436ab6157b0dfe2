"""The server's start-up check: refuse to start on configuration that would fail every call.

Without it a missing ElevenLabs key surfaces only inside each call (the STT fails to build, the call runs
deaf and ``listen`` reports "nothing heard"). So when the server starts it builds each configured provider
once (the factories it will call per call), asks providers that offer it to ``check_config()`` themselves,
checks that the SDK each one needs is importable and that its URLs are well-formed, checks each registered
carrier's credentials and the public URL — and raises one :class:`~voice_runtime.errors.ConfigError` that
lists every problem.

Opt out for lazy setups (keys arriving after start, factories that must not run early):
``VoiceServer(check_config=False)`` or ``VOICE_RUNTIME_SKIP_CONFIG_CHECK=1``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from voice_runtime.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from voice_runtime.server.app import VoiceServer

log = logging.getLogger(__name__)

SKIP_ENV = "VOICE_RUNTIME_SKIP_CONFIG_CHECK"

#: SDK modules a provider (by its ``name`` and role) needs at call time.
_SDKS: dict[tuple[str, str], tuple[str, ...]] = {
    ("azure", "stt"): ("azure.cognitiveservices.speech",),
    ("azure", "tts"): ("azure.cognitiveservices.speech",),
    ("local", "stt"): ("faster_whisper", "onnxruntime"),
    ("local", "tts"): ("piper",),
    ("elevenlabs", "stt"): ("websockets",),
    ("elevenlabs", "tts"): ("websockets",),
}
_URL_ATTRS = ("base_url", "ws_base_url", "api_base_url", "endpoint", "url")
_URL_SCHEMES = ("http", "https", "ws", "wss")


def should_check(flag: bool | None) -> bool:
    if flag is not None:
        return flag
    return os.environ.get(SKIP_ENV, "").strip().lower() not in ("1", "true", "yes", "on")


def url_problem(what: str, url: str, schemes: tuple[str, ...] = _URL_SCHEMES) -> str | None:
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return f"{what} {url!r} is not a URL ({exc})"
    if parts.scheme not in schemes or not parts.hostname:
        return f"{what} {url!r} is not a well-formed {'/'.join(schemes)} URL"
    return None


def _module_missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):
        return True


def check_provider(label: str, role: str, factory: Callable[[], Any]) -> list[str]:
    """Problems with one provider factory (empty list: fine).

    The provider built here is *not* closed: a factory may return one shared instance (``lambda: tts``), and
    closing that would break every call. Providers connect lazily, so an unused one holds nothing.
    """
    try:
        provider = factory()
    except Exception as exc:  # a ConfigError names the missing key; anything else is reported as is
        return [f"{label}: {type(exc).__name__}: {exc}"]
    problems: list[str] = []
    name = str(getattr(provider, "name", "") or "")
    for module in _SDKS.get((name, role), ()):
        if _module_missing(module):
            problems.append(f"{label} ({name}): the SDK module {module!r} is not installed")
    shown = name or type(provider).__name__
    for attr in ("api_key", *_URL_ATTRS):
        try:  # lazily configured providers resolve these on first read, raising ConfigError when missing
            value = getattr(provider, attr, None)
        except Exception as exc:
            problems.append(f"{label} ({shown}): {type(exc).__name__}: {exc}")
            continue
        if attr == "api_key":
            if hasattr(type(provider), attr) or attr in vars(provider):
                if not value:
                    problems.append(f"{label} ({shown}): {attr} is empty")
            continue
        if isinstance(value, str) and value:
            problem = url_problem(f"{label} {attr}", value)
            if problem:
                problems.append(problem)
    check = getattr(provider, "check_config", None)
    if callable(check):
        try:
            check()
        except Exception as exc:
            problems.append(f"{label}: {type(exc).__name__}: {exc}")
    return problems


def check_carrier(carrier: str, control: Any) -> list[str]:
    problems: list[str] = []
    check = getattr(control, "check_config", None)
    if callable(check):
        try:
            check()
        except Exception as exc:
            problems.append(f"{carrier} call control: {type(exc).__name__}: {exc}")
    creds = getattr(control, "credentials", None) or getattr(control, "creds", None)
    if creds is not None:
        ident = getattr(creds, "account_sid", None) or getattr(creds, "auth_id", None)
        secret = getattr(creds, "auth_token", None) or getattr(creds, "api_key_secret", None)
        if not ident:
            problems.append(f"{carrier} call control: no account id")
        if not secret:
            problems.append(f"{carrier} call control: no auth token")
    base = getattr(control, "api_base_url", None)
    if isinstance(base, str) and base:
        problem = url_problem(f"{carrier} api_base_url", base, ("http", "https"))
        if problem:
            problems.append(problem)
    return problems


def find_problems(server: VoiceServer) -> list[str]:
    problems: list[str] = []
    defaults = server.session_defaults
    factories: list[tuple[str, str, Callable[[], Any] | None]] = [
        ("STT provider (stt_factory)", "stt", server.stt_factory or defaults.get("stt_factory")),
        ("secondary STT provider (stt_secondary_factory)", "stt", defaults.get("stt_secondary_factory")),
        ("TTS provider (tts_factory)", "tts", server.tts_factory),
    ]
    for label, role, factory in factories:
        if factory is not None:
            problems += check_provider(label, role, factory)
    public_url = server.public_url or os.environ.get("VOICE_STREAM_URL")
    if public_url:
        problem = url_problem("public_url", public_url)
        if problem:
            problems.append(problem)
    for carrier, control in server.call_controls.items():
        problems += check_carrier(carrier, control)
    return problems


def check_or_raise(server: VoiceServer) -> None:
    problems = find_problems(server)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(
            f"the voice server will not start, its configuration has {len(problems)} problem(s):\n{lines}\n"
            f"(fix them, or start with VoiceServer(check_config=False) / {SKIP_ENV}=1 to check lazily)"
        )
    log.debug("configuration checked: providers and carriers look usable")
