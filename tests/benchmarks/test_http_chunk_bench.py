"""``benchmarks/http_chunk_bench.py`` end to end: both transports read every byte of the same streamed body."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ._load import BENCHMARKS


def test_both_transports_read_the_whole_stream_and_are_reported() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / "http_chunk_bench.py"), "--chunks", "300", "--rounds", "2"],
        check=True, capture_output=True, text=True, timeout=120, cwd=BENCHMARKS.parent,
    ).stdout  # the bench exits non-zero if a transport received other than 300 x 160 bytes
    report = json.loads(out.strip().splitlines()[-1])["http_chunk_bench"]
    assert set(report["us_per_chunk"]) == {"httpx (httpcore + h11)", "httpx + Urllib3Transport"}
    assert all(len(values) == 2 and min(values) > 0 for values in report["us_per_chunk"].values())
    before, after = (report["medians"][name] for name in ("httpx (httpcore + h11)", "httpx + Urllib3Transport"))
    assert report["ratio"] == pytest.approx(after / before)  # the ratio reported is of the medians reported
