"""``benchmarks/elevenlabs_tts_bench.py`` end to end: every path's utterances reach the phone and are timed."""

from __future__ import annotations

import json
import subprocess
import sys

from ._load import BENCHMARKS


def test_each_audio_path_times_every_utterance_to_the_phone() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / "elevenlabs_tts_bench.py"), "--runs", "2", "--model-latency", "0.02", "--speed", "8"],
        check=True, capture_output=True, text=True, timeout=240, cwd=BENCHMARKS.parent,
    ).stdout
    report = json.loads(out.strip().splitlines()[-1])
    for path in ("ulaw_passthrough", "ulaw_passthrough_httpx"):  # urllib3 under httpx, and httpx's own transport
        row = report[path]
        assert row["n"] == 2 and 0 < row["min_ms"] <= row["max_ms"] < 5000, (path, row)
    assert report["mp3_ffmpeg"] is None or report["mp3_ffmpeg"]["n"] == 2
