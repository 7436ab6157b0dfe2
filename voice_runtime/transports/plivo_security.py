"""Plivo signature V3 (``X-Plivo-Signature-V3`` + ``X-Plivo-Signature-V3-Nonce``) on webhooks and stream upgrades.

Why here and not in the route handlers: one object owns the auth token, the candidate URIs and the log of
which candidate matched, and both the HTTP webhooks and the WebSocket upgrade guard ask it. The algorithm is
the plivo SDK's (``plivo.utils.signature_v3``); we never re-implement the HMAC.

Which URI Plivo signs is *not* settled for WebSocket upgrades (telephony-protocols §2.6, DISAGREE): Plivo's
Node stream SDK signs ``https://`` (``http://`` without TLS) + Host + path, Plivo's Python stream SDK signs
``http://`` + URL + ``/websocket``, and the guide says "full URI including protocol". We therefore accept a
short, fixed list of candidates — each still needs a valid HMAC under *our* auth token and the request's
nonce, so the list widens nothing but the URL binding — and log which one matched so a live call tells us
the answer. For webhooks the signed URI is the URL we gave Plivo (public base + path + query); we also accept
the URL as the request reached us (TLS-terminating proxies change the scheme).

Enforcement is on by default. ``enforce=False`` is a development-only escape hatch: it is logged loudly at
construction and every request that would have been refused is logged too.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from voice_runtime.errors import ConfigError
from voice_runtime.transports.forwarded import ForwardedHeaders
from voice_runtime.once import NonceCache, ReplayCache

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Plivo-Signature-V3"
NONCE_HEADER = "X-Plivo-Signature-V3-Nonce"

Params = Mapping[str, str | list[str]]


def sign(auth_token: str, method: str, uri: str, nonce: str, params: Params | None = None) -> str:
    """The signature Plivo would put in ``X-Plivo-Signature-V3`` (SDK code; used by the fake and by tests).

    Works for any scheme (the SDK's public ``validate_v3_signature`` refuses ``ws://``/``wss://`` URIs in its
    argument check, but the signing primitives do not care).
    """
    from plivo.utils.signature_v3 import construct_get_url, construct_post_url, get_signature_v3

    values = {k: (list(v) if isinstance(v, list) else v) for k, v in (params or {}).items()}
    if method.upper() == "GET":
        base = construct_get_url(uri, values)
    else:
        base = construct_post_url(uri, values)
    signature = get_signature_v3(auth_token.encode("utf-8"), base.decode("utf-8"), nonce.encode("utf-8"))
    return signature.decode("ascii")


def _sdk_valid(method: str, uri: str, nonce: str, auth_token: str, header: str, params: Params) -> bool:
    """The SDK's validator for http(s) URIs; its own primitives for ws(s) (which its arg check rejects)."""
    values = {k: (list(v) if isinstance(v, list) else v) for k, v in params.items()}
    if uri.startswith(("http://", "https://")):
        from plivo.utils.signature_v3 import validate_v3_signature

        return bool(validate_v3_signature(method.upper(), uri, nonce, auth_token, header, values))
    expected = sign(auth_token, method, uri, nonce, values)
    return any(hmac.compare_digest(expected, candidate.strip()) for candidate in header.split(","))


@dataclass(frozen=True)
class SignatureCheck:
    """Outcome of one check: ``valid``, which candidate matched (``matched``) or why it failed (``reason``)."""

    valid: bool
    matched: str = ""
    reason: str = ""


def _with_scheme(url: str, scheme: str, *, suffix: str = "") -> str:
    parts = urlsplit(url)
    return urlunsplit((scheme, parts.netloc, parts.path + suffix, parts.query, ""))


def _public_twin(url: str, public_url: str | None) -> str | None:
    """``url`` moved onto the configured public host (the URL we handed Plivo), keeping path and query."""
    if not public_url:
        return None
    public = urlsplit(public_url)
    parts = urlsplit(url)
    return urlunsplit((public.scheme, public.netloc, parts.path, parts.query, ""))


def websocket_candidates(request_url: str, public_url: str | None = None) -> list[tuple[str, str]]:
    """(label, uri) pairs a stream upgrade's signature may cover, most likely first.

    ``request_url`` is the upgrade URL as received (``ws://host/stream/tok``); ``public_url`` the configured
    public base (``https://voice.example.com``). Labels: ``wss``/``ws`` (the URL in our XML), ``https``/``http``
    (Plivo's Node stream SDK), ``python-sdk`` (``http://…/websocket``, Plivo's Python stream SDK).
    """
    bases: list[str] = []
    twin = _public_twin(request_url, public_url)
    if twin:
        bases.append(twin)
    bases.append(request_url)
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for i, base in enumerate(bases):
        where = "public" if twin and i == 0 else "request"
        secure = urlsplit(base).scheme in ("https", "wss")
        ordered = [("wss", "wss"), ("https", "https"), ("http", "http"), ("ws", "ws")]
        if not secure:
            ordered = [("ws", "ws"), ("http", "http"), ("https", "https"), ("wss", "wss")]
        for label, scheme in ordered:
            uri = _with_scheme(base, scheme)
            if uri not in seen:
                seen.add(uri)
                out.append((f"{where}:{label}", uri))
        uri = _with_scheme(base, "http", suffix="/websocket")
        if uri not in seen:
            seen.add(uri)
            out.append((f"{where}:python-sdk", uri))
    return out


def webhook_candidates(request_url: str, public_url: str | None = None) -> list[tuple[str, str]]:
    """(label, uri) pairs a webhook's signature may cover: the URL we gave Plivo, then the URL as received."""
    out: list[tuple[str, str]] = []
    twin = _public_twin(request_url, public_url)
    if twin:
        out.append(("public", twin))
    for label, uri in (("request", request_url), ("request:https", _with_scheme(request_url, "https"))):
        if all(uri != seen for _, seen in out):
            out.append((label, uri))
    return out


@dataclass
class PlivoSignatureValidator:
    """Checks Plivo V3 signatures against our auth token. One per call control (one Plivo account)."""

    auth_token: str
    public_url: str | None = None
    enforce: bool = True
    matched: dict[str, int] = field(default_factory=dict)  # candidate label -> count (observability)
    rejected: int = 0
    #: Nonces already accepted (a replayed signed request is refused); None turns replay protection off.
    nonces: ReplayCache | None = field(default_factory=NonceCache)  # a fleet shares one: fleet_replay.py
    #: Whose ``X-Forwarded-*`` headers shape the request URL (trusted proxies only).
    forwarded: ForwardedHeaders = field(default_factory=ForwardedHeaders)
    replays: int = 0

    def __post_init__(self) -> None:
        if not self.auth_token:
            raise ConfigError("Plivo signature validation needs the account's auth token (PLIVO_AUTH_TOKEN)")
        if not self.enforce:
            log.warning(
                "Plivo signature validation is DISABLED (enforce=False): anyone can post webhooks and open media "
                "streams. Local development only."
            )

    # ------------------------------------------------------------------ core
    def check(
        self, method: str, candidates: Iterable[tuple[str, str]], headers: Mapping[str, str], params: Params | None = None
    ) -> SignatureCheck:
        signature = _header(headers, SIGNATURE_HEADER)
        nonce = _header(headers, NONCE_HEADER)
        if not signature:
            return SignatureCheck(False, reason="missing_signature")
        if not nonce:
            return SignatureCheck(False, reason="missing_nonce")
        for label, uri in candidates:
            try:
                ok = _sdk_valid(method, uri, nonce, self.auth_token, signature, dict(params or {}))
            except Exception as exc:  # the SDK's argument checks raise on odd URIs; that candidate just fails
                log.debug("signature candidate %s not checkable: %s", label, type(exc).__name__)
                continue
            if ok:
                if label not in self.matched:
                    log.info("Plivo signature V3 matched the %r URI form (%s)", label, _redact(uri))
                self.matched[label] = self.matched.get(label, 0) + 1
                return SignatureCheck(True, matched=label)
        return SignatureCheck(False, reason="mismatch")

    def verdict(self, result: SignatureCheck, what: str) -> bool:
        """Apply enforcement to a check: log refusals, let them through only when ``enforce`` is off."""
        if result.valid:
            return True
        self.rejected += 1
        if self.enforce:
            log.warning("refused %s: Plivo signature %s", what, result.reason)
            return False
        log.warning("accepting %s despite Plivo signature %s (enforce=False, development only)", what, result.reason)
        return True

    def fresh_nonce(self, headers: Mapping[str, str], what: str) -> bool:
        """Record the request's nonce after a valid signature; False (refuse) if it was used before.

        Plivo's V3 signature has no timestamp, so the nonce is the only thing that makes a captured request
        single use. With enforcement off nothing is refused (a development server sees unsigned traffic).
        """
        nonce = _header(headers, NONCE_HEADER)
        if self.nonces is None or not self.enforce or not nonce:
            return True
        if self.nonces.first_use(nonce):
            return True
        self.replays += 1
        log.warning("refused %s: replayed Plivo signature nonce", what)
        return False

    def _scoped(self, candidates: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """With a public URL configured, only URIs on the public host count: a signature Plivo made for
        another host (a staging deployment on the same account) must not open anything here."""
        if not self.public_url:
            return candidates
        return [c for c in candidates if c[0].startswith("public")]

    # ------------------------------------------------------------------ adapters
    def check_webhook(self, method: str, url: str, headers: Mapping[str, str], params: Params) -> bool:
        candidates = self._scoped(webhook_candidates(url, self.public_url))
        result = self.check(method, candidates, headers, params if method.upper() == "POST" else {})
        return self.verdict(result, f"Plivo webhook {urlsplit(url).path}")

    async def validate_upgrade(self, websocket: Any) -> bool | None:
        """The server's upgrade validator: None when the request carries no Plivo signature at all."""
        headers = websocket.headers
        if not _header(headers, SIGNATURE_HEADER) and not _header(headers, NONCE_HEADER):
            return None
        url = self.forwarded.request_url(websocket.scope, headers, websocket=True)
        result = self.check("GET", self._scoped(websocket_candidates(url, self.public_url)), headers)
        if not self.verdict(result, "Plivo stream upgrade"):
            return False
        return self.fresh_nonce(headers, "Plivo stream upgrade")


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    return value or ""


def _redact(uri: str) -> str:
    """Log a URI without the per-call token (the last path segment of ``/stream/{token}``)."""
    parts = urlsplit(uri)
    path = parts.path
    if "/stream/" in path:
        head, _, tail = path.partition("/stream/")
        rest = tail.split("/", 1)
        path = head + "/stream/…" + ("/" + rest[1] if len(rest) > 1 else "")
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))
