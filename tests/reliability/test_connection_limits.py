"""Issue 13, connection level: header deadlines, connection and call caps (503 + Retry-After), quiet logs.

All three server modes (uvicorn, websockets-native and picows), real sockets on loopback. Slowloris sockets send part of
an upgrade request and stall; the server must close them at ``header_timeout`` and a genuine call must still
get through. Over ``max_connections`` a new socket is answered 503 with Retry-After without being read; over
``max_calls`` an upgrade is refused 503 before any session exists. Each limit logs one rate-limited line, not
one per connection, and an EMFILE storm (a real file-descriptor limit, in a subprocess) does not flood.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from voice_runtime import VoiceServer, create_stt, create_tts
from voice_runtime.server import RunningServer
from voice_runtime.server.limits import RateLimitedLog, quiet_accept_errors
from voice_runtime.server.ws_native import start_native
from voice_runtime.session import VoiceSession
from voice_runtime.testing import PhoneRejected, SimulatedPhone
from voice_runtime.testing.ports import free_port

def _start_picows(server: VoiceServer) -> RunningServer:
    pytest.importorskip("picows", reason="the picows mode needs the [fast] extra: pip install 'voice-runtime[fast]'")
    from voice_runtime.server.ws_picows import start_picows

    return start_picows(server)


MODES: dict[str, Callable[[VoiceServer], RunningServer]] = {
    "uvicorn": VoiceServer.start, "native": start_native, "picows": _start_picows,
}
HALF_UPGRADE = b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"


class Live:
    """Counts flows running (live calls), so tests wait on the server's state rather than sleeping."""

    def __init__(self) -> None:
        self.started = 0
        self.cond = threading.Condition()

    def __call__(self, session: VoiceSession) -> None:
        with self.cond:
            self.started += 1
            self.cond.notify_all()
        session.wait_until_disconnected(30)

    def wait(self, n: int, timeout: float = 10.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.started >= n, timeout)


@pytest.fixture(params=sorted(MODES))
def serve(request: pytest.FixtureRequest) -> Iterator[Callable[..., tuple[VoiceServer, RunningServer, Live]]]:
    running: list[RunningServer] = []

    def make(**limits: Any) -> tuple[VoiceServer, RunningServer, Live]:
        live = Live()
        server = VoiceServer(stt_factory=lambda: create_stt("mock"), tts_factory=lambda: create_tts("mock"), inbound_flow=live)
        for name, value in limits.items():
            setattr(server.limits, name, value)
        handle = MODES[request.param](server)
        running.append(handle)
        return server, handle, live

    make.mode = request.param  # type: ignore[attr-defined]
    yield make
    for handle in running:
        handle.stop()


def _half_open(handle: RunningServer, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection((handle.host, handle.port), timeout=10)
        s.sendall(HALF_UPGRADE)
        socks.append(s)
    return socks


def _full_upgrade(handle: RunningServer) -> bytes:
    """Send one complete upgrade request for ``/stream``; what the server answered before closing (or b"")."""
    with socket.create_connection((handle.host, handle.port), timeout=10) as s:
        s.sendall(HALF_UPGRADE + b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        return _closed_by_server(s, 10) or b""


def _closed_by_server(sock: socket.socket, timeout: float) -> bytes | None:
    """What the server sent before closing (b"" for a bare close), or None if it is still open."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return data
            data += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        return data


@pytest.mark.timeout(60)
def test_slowloris_sockets_closed_at_header_deadline_and_a_real_call_still_works(serve: Any) -> None:
    server, handle, live = serve(header_timeout=0.5)
    early = SimulatedPhone(handle.ws_url + "/stream").connect()  # a call older than the deadline: not cut
    assert live.wait(1)
    socks = _half_open(handle, 30)
    try:
        still_open = [s for s in socks if _closed_by_server(s, 5.0) is None]
        assert not still_open, f"{len(still_open)} of 30 half-sent upgrades were never closed"
        assert not early.closed, "the header deadline closed a call that had already upgraded"
        phone = SimulatedPhone(handle.ws_url + "/stream").connect()
        assert live.wait(2)
        phone.close()
    finally:
        early.close()
        for s in socks:
            s.close()
    assert server.limits.stats["header_timeouts"] == 30  # every mode counts them (native: its open_timeout)


@pytest.mark.timeout(60)
def test_over_max_connections_new_sockets_get_503_retry_after_and_one_log_line(serve: Any, caplog: pytest.LogCaptureFixture) -> None:
    server, handle, live = serve(max_connections=5, header_timeout=30)
    held = _half_open(handle, 5)
    try:
        with caplog.at_level(logging.WARNING, logger="voice_runtime.server.limits"):
            answers = []
            for _ in range(20):
                answers.append(_full_upgrade(handle))
        assert all(a.startswith(b"HTTP/1.1 503") for a in answers), answers[0][:100]
        assert all(b"retry-after: 5" in a.lower() for a in answers)
        assert server.limits.stats["connections_refused"] == 20
        lines = [r for r in caplog.records if "max_connections" in r.getMessage()]
        assert len(lines) == 1, f"{len(lines)} log lines for 20 refusals"
    finally:
        for s in held:
            s.close()


@pytest.mark.timeout(60)
def test_over_max_calls_upgrade_refused_503_before_any_session(serve: Any) -> None:
    server, handle, live = serve(max_calls=1)
    first = SimulatedPhone(handle.ws_url + "/stream").connect()
    try:
        assert live.wait(1)
        second = SimulatedPhone(handle.ws_url + "/stream")
        with pytest.raises(PhoneRejected) as refused:
            second.connect()
        assert refused.value.status == 503
        second.close()
        answer = _full_upgrade(handle)  # the raw answer: the carrier is told when to retry
        assert answer.startswith(b"HTTP/1.1 503"), answer[:100]
        assert f"retry-after: {server.limits.retry_after}".encode() in answer.lower(), answer[:300]
        assert live.started == 1 and server.limits.stats["calls_refused"] == 2
    finally:
        first.close()


def test_rate_limited_log_says_how_many_were_suppressed(caplog: pytest.LogCaptureFixture) -> None:
    limited = RateLimitedLog(logging.getLogger("test.limits"), interval=3600)
    with caplog.at_level(logging.WARNING, logger="test.limits"):
        assert limited("k", logging.WARNING, "cap hit")
        assert not any(limited("k", logging.WARNING, "cap hit") for _ in range(99))
        limited.interval = 0
        assert limited("k", logging.WARNING, "cap hit")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["cap hit", "cap hit (99 more like this in the last 0s)"]


def test_accept_error_filter_keeps_one_line_per_interval() -> None:
    flt = quiet_accept_errors()
    records = [logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "socket.accept() out of system resource", None, None)
               for _ in range(1000)]
    flt._last.clear()  # type: ignore[attr-defined]
    passed = sum(1 for r in records if flt.filter(r))
    assert passed == 1
    other = logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "something else", None, None)
    assert flt.filter(other)


EMFILE_SERVER = textwrap.dedent(
    """
    import logging, resource, sys, threading
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    from voice_runtime import VoiceServer, create_stt, create_tts
    server = VoiceServer(stt_factory=lambda: create_stt("mock"), tts_factory=lambda: create_tts("mock"),
                         inbound_flow=lambda s: s.wait_until_disconnected(30))
    server.allow_unsigned_streams = True
    if sys.argv[1] == "nocap":
        server.limits.max_connections = None
    handle = server.start(port=int(sys.argv[2]))
    print("LISTENING", flush=True)
    sys.stdin.readline()
    handle.stop()
    """
)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cap", ["default", "nocap"])
def test_fd_exhaustion_storm_does_not_flood_the_log(cap: str, tmp_path: Path) -> None:
    """A real RLIMIT_NOFILE of 256 and 400 client sockets: the log stays small; with the cap a new call gets a
    clean 503 + Retry-After instead of an accept storm."""
    script = tmp_path / "emfile_server.py"
    script.write_text(EMFILE_SERVER)
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(script), cap, str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=os.getcwd(), env=dict(os.environ, PYTHONPATH=os.getcwd()))
    socks: list[socket.socket] = []
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "LISTENING"
        for _ in range(400):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.sendall(HALF_UPGRADE)
                socks.append(s)
            except OSError:
                break
        if cap == "default":  # 128 connections at most; the rest answered 503: a genuine call still connects
            phone = SimulatedPhone(f"ws://127.0.0.1:{port}/stream")
            with pytest.raises(PhoneRejected) as refused:
                phone.connect()
            assert refused.value.status == 503
            phone.close()
    finally:
        for s in socks:
            s.close()
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.flush()
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    records = [line for line in err.splitlines() if re.match(r"^[\w.]+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) ", line)]
    assert len(records) < 10, f"{len(records)} log records:\n" + "\n".join(err.splitlines()[:40])
