"""0.1.x environment variables that still mean something: ``VOICE_SERVER_PORT`` and ``VOICE_MONITOR``.

``VOICE_SERVER_PORT`` is the port ``VoiceServer.serve()`` listens on when no port is passed (default 8080).
0.1.x read it at import and a non-integer broke ``import voice_runtime``; here it is read when needed and a
bad value is a clear :class:`~voice_runtime.errors.ConfigError`. ``VOICE_MONITOR`` is in
:mod:`voice_runtime.audio.monitor`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from voice_runtime.errors import ConfigError

DEFAULT_SERVER_PORT = 8080


def server_port(environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    raw = env.get("VOICE_SERVER_PORT", "").strip()
    if not raw:
        return DEFAULT_SERVER_PORT
    try:
        port = int(raw)
    except ValueError:
        raise ConfigError(f"VOICE_SERVER_PORT must be a port number, got {raw!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"VOICE_SERVER_PORT must be within 0-65535, got {port}")
    return port


__all__ = ["DEFAULT_SERVER_PORT", "server_port"]
