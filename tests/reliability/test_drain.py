"""Graceful drain, end to end: a real server process, live simulated calls, a real SIGTERM.

What must hold (issue 9, anchors §2.2): on SIGTERM the server refuses new calls at once, lets a call that is
mid-sentence finish it, hangs up (over the carrier's REST API) and closes with 1012 the calls still up at
the deadline, flushes every recording, and exits 0.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.output_lines import OutputLines
from voice_runtime.testing import PhoneRejected, SimulatedPhone
from voice_runtime.testing.ports import free_port

HERE = Path(__file__).parent
DEADLINE = 4.0


class FakeCarrierRest:
    """A loopback stand-in for the carrier's REST API: records every hangup request it receives."""

    def __init__(self) -> None:
        self.hangups: list[str] = []
        self.changed = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length).decode()
                with outer.changed:
                    if "Status=completed" in body:
                        outer.hangups.append(self.path.rsplit("/", 1)[-1].removesuffix(".json"))
                    outer.changed.notify_all()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"status": "completed"}')

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class ServerProcess:
    """``drain_server.py`` in a subprocess; stderr lines are collected so the test can wait on log lines."""

    def __init__(self, rest_url: str, recordings: Path, mode: str = "fastapi") -> None:
        self.port = free_port()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "drain_server.py"), "--port", str(self.port), "--deadline", str(DEADLINE),
             "--rest-url", rest_url, "--recordings", str(recordings), "--mode", mode],
            stderr=subprocess.PIPE, text=True, env=env,
        )
        assert self.proc.stderr is not None
        self.output = OutputLines(self.proc, stderr=self.proc.stderr)
        self.lines = self.output.lines["stderr"]

    def wait_for_line(self, needle: str, timeout: float) -> str:
        return self.output.wait_for(re.escape(needle), timeout).string

    def wait_listening(self, timeout: float = 15.0) -> None:
        """Every mode logs this line once its socket listens (before it, a connect could only be refused)."""
        self.output.wait_for(rf"serving media streams on ws://127\.0\.0\.1:{self.port}/stream", timeout)

    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/stream"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def rest() -> Iterator[FakeCarrierRest]:
    fake = FakeCarrierRest()
    yield fake
    fake.close()


@pytest.mark.parametrize("mode", ["fastapi", "native", "picows"])
def test_sigterm_drains_live_calls_refuses_new_ones_and_exits_zero(rest: FakeCarrierRest, tmp_path: Path, mode: str) -> None:
    if mode == "picows":
        pytest.importorskip("picows", reason="the picows mode needs the [fast] extra: pip install 'voice-runtime[fast]'")
    proc = ServerProcess(rest.url, tmp_path, mode)
    phones: list[SimulatedPhone] = []
    try:
        proc.wait_listening()
        talker = SimulatedPhone(proc.url(), custom_parameters={"mode": "speak", "seconds": "2.5"}, call_id="CA" + "a" * 32)
        lingerer = SimulatedPhone(proc.url(), custom_parameters={"mode": "linger"}, call_id="CA" + "b" * 32)
        phones += [talker, lingerer]
        lingerer.connect()
        talker.connect()
        talker.wait_for("playback_start", timeout=10)  # the agent is mid-sentence

        sigterm_at = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        proc.wait_for_line("draining", timeout=5)

        # New calls are refused before any session exists (HTTP 403 on the upgrade).
        late = SimulatedPhone(proc.url(), custom_parameters={"mode": "speak"}, call_id="CA" + "c" * 32)
        with pytest.raises(PhoneRejected) as refused:
            late.connect()
        assert refused.value.status == 403

        # The sentence in progress is played to the end, and the flow hangs up normally (1000).
        echoed = talker.wait_for("mark_echoed", timeout=DEADLINE)
        assert echoed.at - sigterm_at < DEADLINE
        assert talker.wait_closed(5) and talker.close_code == 1000
        heard = len(talker.heard_ulaw().replace(b"\xff", b"")) / 8000
        assert heard >= 2.4, f"speech was cut: heard {heard:.2f}s of 2.5s"
        assert not talker.events_of("clear")

        # The lingering call is kept up until the deadline, then hung up over REST and closed with 1012.
        assert lingerer.wait_closed(DEADLINE + 10)
        closed_at = lingerer.events_of("closed")[0].at
        assert closed_at - sigterm_at >= DEADLINE * 0.9, "a live call was cut before the drain deadline"
        assert lingerer.close_code == 1012
        with rest.changed:
            assert rest.changed.wait_for(lambda: lingerer.codec.call_id in rest.hangups, 5), rest.hangups

        # The process exits by itself, with status 0, having flushed both recordings.
        assert proc.proc.wait(15) == 0, "\n".join(proc.lines)
        for call_id in (talker.codec.call_id, lingerer.codec.call_id):
            (wav,) = tmp_path.glob(f"*-{call_id}-*.wav")  # one time-stamped recording per call
            assert wav.stat().st_size > 44, f"recording of {call_id} not flushed"
        proc.wait_for_line("drain complete", timeout=1)
        assert not any("Traceback" in line for line in proc.lines), "\n".join(proc.lines)
    finally:
        for phone in phones:
            phone.close()
        proc.kill()
