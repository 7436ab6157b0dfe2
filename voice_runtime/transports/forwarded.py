"""Which ``X-Forwarded-*`` headers to believe: only those set by a proxy we were told about.

Carrier signatures cover the URL the carrier requested (``https://voice.example.com/twilio/voice``). Behind a
TLS-terminating proxy the app sees ``http://10.0.0.5:8080/...`` and must rebuild the public URL from
``X-Forwarded-Proto`` / ``X-Forwarded-Host``. But anyone can send those headers: believed from anyone, they
let a signature made for *another* host (a staging deployment sharing the auth token) validate here, and let
odd schemes (``ftp``) into the URL. So, like uvicorn's ``forwarded_allow_ips``:

* forwarded headers are honoured only when the TCP peer is a configured proxy (default ``127.0.0.1``, or the
  ``FORWARDED_ALLOW_IPS`` environment variable; addresses, CIDR networks, or ``*`` for any);
* the forwarded scheme must be ``http``, ``https``, ``ws`` or ``wss``; anything else is ignored (and the
  request's own scheme used, so the signature simply fails).

The TCP peer is ``scope["client"]``. The runners (``VoiceServer.start``/``serve``) run uvicorn with
``proxy_headers=False`` so that ``scope["client"]`` is the real peer; if you serve ``server.app`` with uvicorn's
own proxy-header rewriting on, ``scope["client"]`` is already the *original* client and forwarded headers
will not be honoured unless you list it — the safe failure (signatures fail, loudly) rather than the open one.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

log = logging.getLogger(__name__)

ENV = "FORWARDED_ALLOW_IPS"
DEFAULT_ALLOW = "127.0.0.1"
ALLOWED_SCHEMES = frozenset({"http", "https", "ws", "wss"})

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _first(value: str | None) -> str | None:
    """First entry of a possibly comma-joined forwarded header (``a, b`` after several proxies)."""
    if not value:
        return None
    head = value.split(",")[0].strip()
    return head or None


class ForwardedHeaders:
    """The trusted-proxy policy: ``trusts(scope)`` and the request URL rebuilt under it."""

    def __init__(self, allow_ips: str | Iterable[str] | None = None, *, environ: Mapping[str, str] | None = None) -> None:
        if allow_ips is None:
            allow_ips = (os.environ if environ is None else environ).get(ENV, DEFAULT_ALLOW)
        entries = [e.strip() for e in (allow_ips.split(",") if isinstance(allow_ips, str) else allow_ips)]
        self.any = "*" in entries
        self.networks: list[_Network] = []
        self.names: set[str] = set()  # non-IP peers (unix socket paths, test clients)
        for entry in entries:
            if not entry or entry == "*":
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.names.add(entry)

    def __repr__(self) -> str:
        shown = ["*"] if self.any else [str(n) for n in self.networks] + sorted(self.names)
        return f"ForwardedHeaders({','.join(shown)!r})"

    def trusts_peer(self, host: str | None) -> bool:
        if self.any:
            return True
        if not host:
            return False
        if host in self.names:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def trusts(self, scope: Mapping[str, Any]) -> bool:
        client = scope.get("client")
        return self.trusts_peer(str(client[0]) if client else None)

    def request_url(self, scope: Mapping[str, Any], headers: Mapping[str, str], *, websocket: bool = False) -> str:
        return reconstruct_url(scope, headers, websocket=websocket, trust_forwarded=self.trusts(scope))


def forwarded_scheme(headers: Mapping[str, str]) -> str | None:
    """``X-Forwarded-Proto`` if it names a web scheme, else None (an ``ftp`` there is ignored, and counted)."""
    scheme = _first(headers.get("x-forwarded-proto"))
    if scheme is None:
        return None
    scheme = scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        log.warning("ignored X-Forwarded-Proto %r: only http, https, ws and wss are accepted", scheme[:16])
        return None
    return scheme


def reconstruct_url(
    scope: Mapping[str, Any],
    headers: Mapping[str, str],
    *,
    websocket: bool = False,
    trust_forwarded: bool = True,
) -> str:
    """The URL the client (the carrier) requested, rebuilt from an ASGI ``scope`` and its headers.

    Scheme: ``X-Forwarded-Proto`` when trusted (web schemes only), else the scope's; for upgrades mapped to
    ``wss``/``ws``. Host: ``X-Forwarded-Host`` when trusted, else ``Host``, else the server address. Path and
    query are the raw bytes the client sent (``raw_path``), so percent-escapes are signed exactly as sent.
    """
    scheme = str(scope.get("scheme") or ("ws" if websocket else "http")).lower()
    host = headers.get("host")
    prefix = ""
    if trust_forwarded:
        scheme = forwarded_scheme(headers) or scheme
        host = _first(headers.get("x-forwarded-host")) or host
        # A proxy that maps a path prefix to one worker (``/w/3/...`` -> worker 3's ``/...``) says which.
        prefix = (_first(headers.get("x-forwarded-prefix")) or "").rstrip("/")
    if scheme not in ALLOWED_SCHEMES:
        scheme = "ws" if websocket else "http"
    if websocket:
        scheme = {"https": "wss", "http": "ws"}.get(scheme, scheme)
    else:
        scheme = {"wss": "https", "ws": "http"}.get(scheme, scheme)
    if not host:
        server = scope.get("server")
        host = f"{server[0]}:{server[1]}" if server else "localhost"
    raw_path = scope.get("raw_path")
    path = raw_path.decode("latin-1") if isinstance(raw_path, (bytes, bytearray)) else str(scope.get("path", "/"))
    path = prefix + (path.split("?", 1)[0] or "/")
    query = scope.get("query_string", b"")
    query_text = query.decode("latin-1") if isinstance(query, (bytes, bytearray)) else str(query or "")
    return f"{scheme}://{host}{path}" + (f"?{query_text}" if query_text else "")


__all__ = ["ALLOWED_SCHEMES", "DEFAULT_ALLOW", "ENV", "ForwardedHeaders", "forwarded_scheme", "reconstruct_url"]
