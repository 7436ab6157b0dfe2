"""An ``httpx`` transport on urllib3, for streamed response bodies read a small piece at a time.

Why it exists: a streaming TTS response (ElevenLabs ``…/stream``) arrives as many small HTTP chunks, and the
speech thread reads every one of them under the GIL, next to the event loop that carries every call's audio.
httpx's own transport turns each chunk into an h11 event and passes it up through httpcore's layers: 7.3 µs
of CPU per 160-byte chunk on the project's benchmark machine, against 1.7 µs through this transport, whose
body is read by the standard library's ``http.client`` parser (``benchmarks/http_chunk_bench.py``, side by
side). Clients keep the httpx API: the same ``httpx.Client``, timeouts, status and header handling,
error classes, and ``httpx.MockTransport`` in tests.

What it does and does not do:

* HTTP/1.1 with keep-alive, over a ``urllib3.PoolManager`` (TLS with the caller's ``ssl.SSLContext``);
  no retries and no redirects of its own (httpx decides those, as with its own transport). After
  ``keepalive_expiry`` seconds without a request (60, httpx's default) the pooled connections are closed
  and the next request opens a fresh one, as httpx's pool would.
* A chunked body (how a streaming API sends) is handed over one HTTP chunk at a time, each as soon as it is
  whole: the server's own unit of writing, never held back to fill a larger buffer, so the first audio is not
  delayed. (httpx's transport may hand over part of a chunk earlier; a TTS server writes each chunk at once.)
  A sized body is handed over as the socket delivers it.
* A response closed before its end (a barge-in stops the stream) closes its connection; the pool opens a
  fresh one for the next request. One read to its end goes back to the pool for reuse.
* urllib3's errors are raised as the matching ``httpx`` exceptions (``ConnectError``, ``ConnectTimeout``,
  ``ReadTimeout``, ``ReadError``, ``RemoteProtocolError``), with the request attached.
* No proxies: when the environment names a proxy for a URL, :func:`streaming_transport` returns None and the
  client keeps httpx's own transport, which honours it.
"""

from __future__ import annotations

import ssl
import time
import urllib.request
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import httpx
import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError as Urllib3Error,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

__all__ = ["Urllib3Transport", "streaming_transport"]

_READ_SIZE = 64 * 1024  # at most this much per piece; a read returns what the socket has, never waits to fill it


def _as_httpx_error(exc: Urllib3Error, request: httpx.Request) -> httpx.TransportError:
    """The httpx exception a caller of httpx expects for this urllib3 failure."""
    message = str(exc)
    if isinstance(exc, NewConnectionError):  # before ConnectTimeoutError: urllib3 2 makes it a subclass of it
        return httpx.ConnectError(message, request=request)
    if isinstance(exc, ConnectTimeoutError):
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(exc, ReadTimeoutError):
        return httpx.ReadTimeout(message, request=request)
    if isinstance(exc, SSLError):
        return httpx.ConnectError(message, request=request)
    if isinstance(exc, ProtocolError):  # reset, aborted, a truncated or malformed body
        return httpx.RemoteProtocolError(message, request=request)
    return httpx.ReadError(message, request=request)


class _ResponseStream(httpx.SyncByteStream):
    """One response's body: what the socket has, piece by piece; its connection pooled again only if read to the end."""

    def __init__(self, response: urllib3.BaseHTTPResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request
        self._finished = False

    def __iter__(self) -> Iterator[bytes]:
        response = self._response
        try:  # decode_content=False: httpx decodes any content-encoding itself, as with its own transport
            if response.chunked:  # a streamed body: each HTTP chunk as soon as it is whole
                for piece in response.read_chunked(decode_content=False):
                    if piece:
                        yield piece
            else:  # a sized body: what the socket has, never waiting to fill a buffer
                # (read1 costs ~3x what read_chunked does per piece: chunked bodies, the streaming case, use that)
                while piece := response.read1(_READ_SIZE, decode_content=False):
                    yield piece
        except Urllib3Error as exc:
            raise _as_httpx_error(exc, self._request) from exc
        self._finished = True

    def close(self) -> None:
        response = self._response
        if not self._finished:
            response.close()  # unread body: this connection cannot carry another request
        response.release_conn()


class Urllib3Transport(httpx.BaseTransport):
    """``httpx.Client(transport=Urllib3Transport(...))``: httpx's API, urllib3's pool and parser."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 8,
        keepalive_expiry: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = urllib3.PoolManager(
            num_pools=4, maxsize=max(1, max_connections), block=False, ssl_context=ssl_context, retries=False
        )
        self._keepalive_expiry = keepalive_expiry
        self._clock = clock
        self._last_request = clock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        now = self._clock()
        if now - self._last_request > self._keepalive_expiry:
            # Idle longer than httpx's own pool would keep a connection (its keepalive_expiry): start afresh
            # rather than write into one a NAT or the server may have dropped without a word.
            self._pool.clear()
        self._last_request = now
        timeouts = request.extensions.get("timeout", {})
        timeout = urllib3.Timeout(connect=timeouts.get("connect"), read=timeouts.get("read"))
        try:
            response = self._pool.urlopen(
                request.method,
                str(request.url),
                body=request.read(),
                headers=urllib3.HTTPHeaderDict(request.headers.multi_items()),
                redirect=False,
                retries=False,
                timeout=timeout,
                preload_content=False,
                decode_content=False,
            )
        except Urllib3Error as exc:
            raise _as_httpx_error(exc, request) from exc
        return httpx.Response(
            status_code=response.status,
            headers=list(response.headers.items()),
            stream=_ResponseStream(response, request),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode("latin-1")},
        )

    def close(self) -> None:
        self._pool.clear()


def streaming_transport(url: str, *, ssl_context: ssl.SSLContext | None = None, max_connections: int = 8) -> Urllib3Transport | None:
    """The transport for a client of ``url``, or None where the environment routes ``url`` through a proxy.

    httpx reads ``HTTP(S)_PROXY``/``ALL_PROXY``/``NO_PROXY`` only for its own transport, so a client behind a
    proxy keeps that transport (and pays its per-chunk cost) rather than bypass the proxy.
    """
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    if (proxies.get(parts.scheme) or proxies.get("all")) and not urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return Urllib3Transport(ssl_context=ssl_context, max_connections=max_connections)
