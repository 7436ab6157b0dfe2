"""``serve_native(workers=2)``: two processes share one port (SO_REUSEPORT) and both serve calls.

A real subprocess (the mode forks), real loopback sockets, simulated phones. Correctness only: every call
completes, the calls were spread over more than one worker process, and SIGTERM stops all of them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.output_lines import OutputLines
from voice_runtime.testing import SimulatedPhone
from voice_runtime.testing.ports import free_port

pytestmark = pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT") or not hasattr(os, "fork"), reason="POSIX only")

SERVER = """
import logging, os, sys
logging.basicConfig(level=logging.INFO)  # the "serving media streams" line the test waits for
from voice_runtime import VoiceServer, create_stt, create_tts
from voice_runtime.server.ws_native import serve_native

def flow(session):
    session.speak("Hello from a worker.", wait=True, timeout=10)
    with open(os.path.join(sys.argv[2], str(os.getpid())), "a") as f:
        f.write("call ")  # which worker served this call
server = VoiceServer(stt_factory=lambda: create_stt("mock"), tts_factory=lambda: create_tts("mock"), inbound_flow=flow)
serve_native(server, host="127.0.0.1", port=int(sys.argv[1]), workers=2)
"""


def wait_serving(output: OutputLines, port: int, workers: int, timeout: float = 30.0) -> None:
    """Until each of ``workers`` processes logged that it listens on ``port`` (its loop runner's INFO line)."""
    output.wait_for(rf"serving media streams on ws://127\.0\.0\.1:{port}/stream", timeout, count=workers)


def test_two_workers_share_the_port_and_serve_calls(tmp_path: Path) -> None:
    port = free_port()
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port), str(tmp_path)], cwd=root, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    output = OutputLines(proc, stderr=proc.stderr)
    phones: list[SimulatedPhone] = []
    try:
        wait_serving(output, port, workers=2)
        for _ in range(16):  # the kernel hashes connections over workers: all 16 on one has p = 2**-15
            phone = SimulatedPhone(f"ws://127.0.0.1:{port}/stream", send_silence=True).connect()
            phones.append(phone)
        for phone in phones:
            phone.wait_for("mark_echoed", timeout=15)
            assert phone.wait_closed(15)  # the flow ended and the server hung up
            assert phone.violations == []
        served = {p.name: p.read_text().count("call") for p in tmp_path.iterdir()}
        assert sum(served.values()) == 16
        assert len(served) == 2 and str(proc.pid) not in served  # both workers, never the parent
    finally:
        for phone in phones:
            phone.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0
