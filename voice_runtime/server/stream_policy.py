"""Who may open a media stream without a carrier signature: nobody, once it matters.

Every accepted stream costs a session, an STT connection, a TTS instance and a flow thread — paid speech
minutes. A server with no carrier call control has no signature to check, so for local development (the
simulated phone, the demo) unsigned streams are accepted. That default must not survive into production:

* ``allow_unsigned_streams=True`` — accepted (explicit opt-in; also set by a carrier control whose signature
  validation was switched off).
* ``allow_unsigned_streams=False`` — refused.
* ``None`` (the default) — refused when any carrier validator is registered **or** a public ``https``/``wss``
  URL is configured (``public_url`` or ``VOICE_STREAM_URL``: the server is reachable from the internet);
  accepted otherwise (a loopback development server).

Whenever the resulting policy accepts unsigned streams, one WARNING says so at startup (``start``/``serve``,
or the first upgrade when the app is mounted elsewhere), with how to turn it off — once per server.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("voice_runtime.server.app")


@dataclass(frozen=True)
class UnsignedPolicy:
    allowed: bool
    why: str


def public_url_of(server: Any) -> str:
    return str(server.public_url or os.environ.get("VOICE_STREAM_URL") or "")


def is_public(url: str) -> bool:
    return url.lower().startswith(("https://", "wss://"))


def unsigned_policy(server: Any) -> UnsignedPolicy:
    """Whether unsigned stream upgrades are accepted by ``server`` right now, and why."""
    explicit = server.allow_unsigned_streams
    if explicit is True:
        return UnsignedPolicy(True, "allow_unsigned_streams=True")
    if explicit is False:
        return UnsignedPolicy(False, "allow_unsigned_streams=False")
    if server.upgrade_validators:
        return UnsignedPolicy(False, "carrier signatures are configured")
    url = public_url_of(server)
    if is_public(url):
        return UnsignedPolicy(False, f"a public URL is configured ({url.split('://', 1)[0]}://…)")
    return UnsignedPolicy(True, "no carrier credentials and no public https/wss URL configured")


def warn_if_unsigned(server: Any) -> UnsignedPolicy:
    """Log the unsigned-stream policy once per server when it accepts unsigned streams (WARNING)."""
    policy = unsigned_policy(server)
    if policy.allowed and not server._warned_unsigned:
        server._warned_unsigned = True
        log.warning(
            "accepting UNSIGNED media streams (%s): anyone who can reach %s/stream gets a session, STT, TTS and "
            "a flow. Development only. To refuse them, register a carrier call control (TwilioCallControl / "
            "PlivoCallControl) or set VoiceServer(...).allow_unsigned_streams = False.",
            policy.why,
            server.path_prefix,
        )
    return policy


__all__ = ["UnsignedPolicy", "is_public", "unsigned_policy", "warn_if_unsigned"]
