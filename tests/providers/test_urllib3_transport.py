"""The urllib3 transport under httpx, against real HTTP servers on loopback (plain and TLS).

Each server here is a few lines over a real socket, so a test controls exactly what goes on the wire and when:
a chunk held back until the client has read the one before, a connection that stalls, a body cut short.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator

import httpx
import pytest

from voice_runtime.providers.urllib3_transport import Urllib3Transport, streaming_transport

WAIT = 5.0

Handler = Callable[[socket.socket, bytes], None]


class RawServer:
    """Accepts connections and runs ``handler(conn, request_head_and_body)`` per request, keep-alive included."""

    def __init__(self, handler: Handler, context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.context = context
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.requests: list[bytes] = []
        self.closed_by_client = threading.Event()
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        if self.context is not None:
            try:
                conn = self.context.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError):
                conn.close()
                return
        conn.settimeout(WAIT)
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        self.closed_by_client.set()
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = next(
                    (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
                )
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                body, buffer = buffer[:length], buffer[length:]
                self.requests.append(head + b"\r\n\r\n" + body)
                self.handler(conn, head + b"\r\n\r\n" + body)
        except OSError:
            self.closed_by_client.set()
        finally:
            conn.close()

    @property
    def url(self) -> str:
        scheme = "https" if self.context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._stop = True
        self.listener.close()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: audio/basic\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.fixture
def serve() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def start(handler: Handler, context: ssl.SSLContext | None = None) -> RawServer:
        server = RawServer(handler, context)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def client(server: RawServer, **kwargs: object) -> httpx.Client:
    return httpx.Client(base_url=server.url, transport=Urllib3Transport(**kwargs), timeout=WAIT)  # type: ignore[arg-type]


def test_each_chunk_is_handed_over_as_it_arrives_not_held_for_the_next(serve: Callable[..., RawServer]) -> None:
    first_read = threading.Event()

    def handler(conn: socket.socket, request: bytes) -> None:
        conn.sendall(CHUNKED_HEAD + chunk(b"\xff" * 160))
        if first_read.wait(WAIT):  # the next chunk only once the client has the first: buffering would stall here
            conn.sendall(chunk(b"\x7f" * 160) + b"0\r\n\r\n")

    server = serve(handler)
    with client(server) as http, http.stream("POST", "/v1/tts", json={"text": "hi"}) as response:
        pieces = []
        for piece in response.iter_bytes():
            pieces.append(piece)
            first_read.set()
    assert response.status_code == 200 and response.headers["content-type"] == "audio/basic"
    assert pieces == [b"\xff" * 160, b"\x7f" * 160]
    request = server.requests[0]
    assert request.startswith(b"POST /v1/tts HTTP/1.1\r\n") and request.endswith(b'{"text":"hi"}')


def test_a_body_read_to_its_end_leaves_the_connection_for_the_next_request(serve: Callable[..., RawServer]) -> None:
    def handler(conn: socket.socket, request: bytes) -> None:
        conn.sendall(CHUNKED_HEAD + chunk(b"a" * 10) + chunk(b"b" * 10) + b"0\r\n\r\n")

    server = serve(handler)
    with client(server) as http:
        for _ in range(3):
            with http.stream("GET", "/") as response:
                assert b"".join(response.iter_bytes()) == b"a" * 10 + b"b" * 10
    assert len(server.requests) == 3 and server.accepted == 1


def test_a_connection_idle_past_the_keepalive_expiry_is_not_reused(serve: Callable[..., RawServer]) -> None:
    def handler(conn: socket.socket, request: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    server = serve(handler)
    now = [100.0]
    transport = Urllib3Transport(keepalive_expiry=60.0, clock=lambda: now[0])
    with httpx.Client(base_url=server.url, transport=transport, timeout=WAIT) as http:
        assert http.get("/").content == b"ok"
        now[0] += 59.0
        assert http.get("/").content == b"ok" and server.accepted == 1  # within the expiry: reused
        now[0] += 61.0
        assert http.get("/").content == b"ok"
    assert server.accepted == 2  # idle past it: a fresh connection


@pytest.mark.parametrize("pieces_read", [1, 0])
def test_a_response_left_early_drops_its_connection_and_the_next_request_gets_a_fresh_one(
    serve: Callable[..., RawServer], pieces_read: int
) -> None:
    hung_up = threading.Event()

    def handler(conn: socket.socket, request: bytes) -> None:
        conn.sendall(CHUNKED_HEAD + chunk(b"x" * 160))  # the rest of the utterance would follow: the client leaves first
        try:
            if conn.recv(1) == b"":  # blocks until the client closes this connection (or WAIT passes)
                hung_up.set()
        except OSError:
            hung_up.set()

    server = serve(handler)
    with client(server) as http:
        with http.stream("GET", "/") as response:
            if pieces_read:
                assert next(response.iter_bytes()) == b"x" * 160
        assert hung_up.wait(WAIT), "the abandoned connection was not closed"
        server.handler = lambda conn, request: conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        assert http.get("/").content == b"ok"
    assert server.accepted == 2


def test_a_sized_body_streams_too(serve: Callable[..., RawServer]) -> None:
    def handler(conn: socket.socket, request: bytes) -> None:
        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n" + b'{"detail":"no"}')

    server = serve(handler)
    with client(server) as http:
        response = http.post("/v1/tts", json={})
    assert response.status_code == 404 and response.reason_phrase == "Not Found" and response.json() == {"detail": "no"}


def test_a_body_cut_short_is_a_remote_protocol_error(serve: Callable[..., RawServer]) -> None:
    def handler(conn: socket.socket, request: bytes) -> None:
        conn.sendall(CHUNKED_HEAD + chunk(b"x" * 160) + b"a0\r\n" + b"y" * 20)
        conn.shutdown(socket.SHUT_WR)  # the server went away mid-chunk

    server = serve(handler)
    received = []
    with client(server) as http, pytest.raises(httpx.RemoteProtocolError):
        with http.stream("GET", "/") as response:
            for piece in response.iter_bytes():
                received.append(piece)
    assert received == [b"x" * 160]  # what came whole is kept


def test_a_stalled_server_is_a_read_timeout_and_a_closed_port_a_connect_error(serve: Callable[..., RawServer]) -> None:
    stalled = threading.Event()

    def handler(conn: socket.socket, request: bytes) -> None:
        conn.sendall(CHUNKED_HEAD)
        stalled.wait(WAIT)

    server = serve(handler)
    with httpx.Client(base_url=server.url, transport=Urllib3Transport(), timeout=httpx.Timeout(2.0, read=0.3)) as http:
        with pytest.raises(httpx.ReadTimeout), http.stream("GET", "/") as response:
            list(response.iter_bytes())
    stalled.set()
    free = socket.create_server(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    with httpx.Client(transport=Urllib3Transport(), timeout=2.0) as http, pytest.raises(httpx.ConnectError):
        http.get(f"http://127.0.0.1:{port}/")


@pytest.fixture
def tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for 127.0.0.1 and a client context trusting only its throwaway CA."""
    trustme = pytest.importorskip("trustme", reason="pip install trustme (the dev extra) for the TLS tests")
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return server_context, client_context


def _ok(conn: socket.socket, request: bytes) -> None:
    conn.sendall(CHUNKED_HEAD + chunk(b"secure") + b"0\r\n\r\n")


def test_tls_with_the_callers_context_verifies_the_server(serve: Callable[..., RawServer], tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_context, client_context = tls
    server = serve(_ok, server_context)
    with client(server, ssl_context=client_context) as http:
        assert http.get("/").content == b"secure"
    # The context is shared with the process's other clients (the Scribe wss socket): urllib3 left it verifying.
    assert client_context.check_hostname and client_context.verify_mode == ssl.CERT_REQUIRED
    with client(server, ssl_context=ssl.create_default_context()) as http, pytest.raises(httpx.ConnectError):
        http.get("/")  # the system CAs do not know the throwaway CA: refused, never read unverified


def test_tls_refuses_a_certificate_for_another_host(serve: Callable[..., RawServer], tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_context, client_context = tls
    server = serve(_ok, server_context)
    with httpx.Client(transport=Urllib3Transport(ssl_context=client_context), timeout=WAIT) as http:
        with pytest.raises(httpx.ConnectError):
            http.get(f"https://localhost:{server.port}/")  # the certificate names 127.0.0.1 only


def test_a_proxy_in_the_environment_keeps_httpx_own_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert isinstance(streaming_transport("https://api.elevenlabs.io"), Urllib3Transport)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert streaming_transport("https://api.elevenlabs.io") is None
    assert isinstance(streaming_transport("http://127.0.0.1:9"), Urllib3Transport)  # only https is proxied
    monkeypatch.setenv("NO_PROXY", "api.elevenlabs.io")
    assert isinstance(streaming_transport("https://api.elevenlabs.io"), Urllib3Transport)
