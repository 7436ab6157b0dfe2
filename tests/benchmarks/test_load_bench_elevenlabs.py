"""Smoke run of the real-call workload: ``load_bench.py --providers elevenlabs`` end to end, tiny.

Three processes besides pytest: the fake ElevenLabs, the server running the real ElevenLabs STT and TTS clients
against it, and the load generator. Two calls for a few seconds. What is checked is that the benchmark really
measured something (non-zero server CPU, agent frames timed at the phone, turns timed, every utterance checked
byte for byte against the fake's audio, transcripts committed by the fake), never how fast: timing figures are
for ``benchmarks/README.md``, not for asserts on a shared machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "load_bench.py"


def test_real_call_workload_measures_real_figures() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--providers", "elevenlabs", "--server-mode", "native", "--calls", "2",
         "--idle", "0.5", "--warmup", "3", "--duration", "4"],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["providers"] == "elevenlabs"
    assert result["connected"] == 2 and result["connect_failures"] == 0
    assert result["server_cpu_ms_per_call_s"] > 0
    assert result["fake_cpu_pct"] > 0  # the fake ran, in its own process, and did work
    fake = result["fake_report"]
    assert fake["stt_sessions"] == 2  # one realtime STT socket per call
    assert fake["stt_commits"] >= 2 and fake["tts_requests"] >= 2 and fake["tts_failed"] == 0
    # the agent's audio was timed at the phone and every mark-terminated utterance matched the fake's audio
    assert result["outbound_frames_measured"] > 0 and result["lateness_p99_ms"] is not None
    assert result["utterances_checked"] >= 2
    assert result["outbound_lost"] == 0 and result["outbound_dup"] == 0 and result["outbound_corrupt_utterances"] == 0
    # caller stopped → agent audible was timed; it cannot be shorter than the modelled 300 ms VAD wait
    assert result["turns_measured"] >= 1 and result["turn_p50_ms"] >= 300
    # caller frames reached the real STT client (probe on its intake), none lost
    assert result["inbound_frames_measured"] > 0 and result["inbound_lost"] == 0 and result["inbound_dup"] == 0
    assert result["flow_errors"] == 0
