"""/metrics, /healthz and /readyz on the real server (FastAPI and native), after and during simulated calls."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import CallHarness, FlowResult
from tests.output_lines import OutputLines
from tests.server.test_native_workers import wait_serving
from voice_runtime.testing.ports import free_port
from voice_runtime import VoiceServer, create_stt, create_tts
from voice_runtime.audio.g711 import pcm16_to_ulaw
from voice_runtime.server.ws_native import start_native
from voice_runtime.testing import PhoneRejected, SimulatedPhone


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(data: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    return data.get((name, frozenset(labels.items())))


def speech(seconds: float) -> bytes:
    n = int(round(seconds * 50)) * 160
    return pcm16_to_ulaw((np.sin(2 * np.pi * 300 * np.arange(n) / 8000) * 8000).astype(np.int16))


def test_metrics_show_a_simulated_call_in_counters_and_histograms(harness: CallHarness, flow_result: FlowResult) -> None:
    in_call = threading.Event()
    release = threading.Event()
    reported = threading.Event()

    def body(session: Any) -> None:
        session.speak("Hello there.", wait=True)
        session.listen(timeout=10)
        session.speak("Thanks, goodbye.", wait=True)
        in_call.set()
        release.wait(10)

    server, running = harness.serve(flow_result.run(body), script=["hi"], on_call_report=lambda s, r: reported.set())
    phone = harness.phone(running)
    phone.wait_for("mark_echoed", timeout=10)
    phone.say(speech(0.6))
    assert in_call.wait(10)
    with httpx.Client(base_url=running.http_url, timeout=5) as http:
        live = samples(http.get("/metrics").text)
        assert value(live, "voice_runtime_calls_active") == 1
        assert http.get("/readyz").status_code == 200
        release.set()
        assert phone.wait_closed(10)
        flow_result.wait(10)
        assert reported.wait(10)  # built right after the socket closes; the hook runs on the end-hook thread
        response = http.get("/metrics")
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
        data = samples(response.text)
        health = http.get("/healthz")
        server.accepting = False  # what a drain does first
        draining = http.get("/readyz")
        drained_metrics = samples(http.get("/metrics").text)
    assert value(data, "voice_runtime_calls_active") == 0
    assert value(data, "voice_runtime_calls_started_total", carrier="twilio") == 1
    assert value(data, "voice_runtime_calls_ended_total", carrier="twilio", reason="hangup") == 1
    assert value(data, "voice_runtime_turn_latency_seconds_count", carrier="twilio") == 1
    assert 0 < (value(data, "voice_runtime_turn_latency_seconds_sum", carrier="twilio") or 0) < 1.0
    assert value(data, "voice_runtime_tts_ttfb_seconds_count", provider="mock") == 2
    assert value(data, "voice_runtime_stt_latency_seconds_count", provider="mock") == 1
    assert value(data, "voice_runtime_draining") == 0
    assert health.status_code == 200
    assert draining.status_code == 503 and draining.json()["draining"] is True
    assert value(drained_metrics, "voice_runtime_draining") == 1
    # No label carries a call id or a number.
    assert phone.codec.call_id not in response.text  # type: ignore[attr-defined]
    assert "call_id" not in response.text


def test_signature_rejections_are_counted(harness: CallHarness) -> None:
    server, running = harness.serve()

    async def wrong_signature(websocket: Any) -> bool:
        return False

    server.add_upgrade_validator("twilio", wrong_signature)
    with pytest.raises(PhoneRejected):
        SimulatedPhone(running.ws_url + "/stream").connect()
    assert server.metrics.sample("voice_runtime_signature_rejections_total", {"reason": "invalid"}) == 1


def test_max_calls_makes_readyz_fail_and_refuses_the_next_stream(harness: CallHarness) -> None:
    hold = threading.Event()
    in_flow = threading.Event()

    def flow(session: Any) -> None:
        in_flow.set()
        hold.wait(10)

    server, running = harness.serve(flow, max_calls=1)
    try:
        harness.phone(running)
        assert in_flow.wait(10)  # the first call is live
        with httpx.Client(base_url=running.http_url, timeout=5) as http:
            ready = http.get("/readyz")
            assert ready.status_code == 503 and ready.json()["active_calls"] == 1
        with pytest.raises(PhoneRejected):
            SimulatedPhone(running.ws_url + "/stream").connect()
    finally:
        hold.set()


def _start_native(server: VoiceServer) -> Any:
    return start_native(server)


def _start_picows(server: VoiceServer) -> Any:
    pytest.importorskip("picows", reason="pip install 'voice-runtime[fast]' for the picows mode")
    from voice_runtime.server.ws_picows import start_picows

    return start_picows(server)


@pytest.mark.parametrize("start", [_start_native, _start_picows], ids=["native", "picows"])
def test_fast_modes_serve_the_probes_over_plain_http(start: Any) -> None:
    reported = threading.Event()
    server = VoiceServer(stt_factory=lambda: create_stt("mock"), tts_factory=lambda: create_tts("mock"),
                         inbound_flow=lambda session: session.speak("Hi.", wait=True),
                         on_call_report=lambda s, r: reported.set())
    handle = start(server)
    try:
        phone = SimulatedPhone(handle.ws_url + "/stream").connect()
        assert phone.wait_closed(10)
        phone.close()
        assert reported.wait(10)
        with httpx.Client(base_url=handle.http_url, timeout=5) as http:
            metrics = http.get("/metrics")
            assert http.get("/healthz").status_code == 200
            assert http.get("/readyz").json()["ready"] is True
        data = samples(metrics.text)
        assert metrics.headers["content-type"].startswith("text/plain")
        assert value(data, "voice_runtime_calls_ended_total", carrier="twilio", reason="hangup") == 1
    finally:
        handle.stop()


WORKERS = """
import logging, sys
logging.basicConfig(level=logging.INFO)  # the "serving media streams" line the test waits for
from voice_runtime import VoiceServer, create_stt, create_tts
from voice_runtime.server.ws_native import serve_native
server = VoiceServer(stt_factory=lambda: create_stt("mock"), tts_factory=lambda: create_tts("mock"),
                     inbound_flow=lambda session: session.speak("Hello from a worker.", wait=True, timeout=10))
serve_native(server, host="127.0.0.1", port=int(sys.argv[1]), workers=2)
"""


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT") or not hasattr(os, "fork"), reason="POSIX only")
def test_workers_report_every_call_in_multiprocess_mode(tmp_path: Path) -> None:
    """Whichever worker answers /metrics reports the calls of both (PROMETHEUS_MULTIPROC_DIR)."""
    port = free_port()
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", WORKERS, str(port)], cwd=root, env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    output = OutputLines(proc, stderr=proc.stderr)
    phones: list[SimulatedPhone] = []
    try:
        wait_serving(output, port, workers=2)
        phones = [SimulatedPhone(f"ws://127.0.0.1:{port}/stream").connect() for _ in range(8)]
        for phone in phones:
            assert phone.wait_closed(15)
        pids = {p.name.rsplit("_", 1)[-1] for p in tmp_path.glob("*.db")}
        # Each worker counts a call's end just before it logs "call ... ended" (metrics/observer.py), a little
        # after the phone's socket closed: wait for all 8 lines, then ask /metrics (any worker may answer).
        output.wait_for(r"voice_runtime\.calls:call \S+ ended: reason=hangup", 15, count=8)
        with httpx.Client(timeout=5) as http:
            ended = [value(samples(http.get(f"http://127.0.0.1:{port}/metrics").text),
                           "voice_runtime_calls_ended_total", carrier="twilio", reason="hangup") or 0 for _ in range(4)]
        assert ended == [8, 8, 8, 8]
        assert len(pids) >= 2  # more than one process wrote samples
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
