"""``benchmarks/parse_bench.py`` end to end: its messages are what each dialect's hot path takes, and a run
against another tree (here: this one) reports both dialects for both trees."""

from __future__ import annotations

import json
import subprocess
import sys

from voice_runtime.protocols import MediaReceived
from voice_runtime.protocols.plivo import PlivoDialect
from voice_runtime.protocols.twilio import TwilioDialect

from ._load import BENCHMARKS, load_benchmark


def test_the_benchmark_messages_parse_as_media_in_sequence() -> None:
    bench = load_benchmark("parse_bench")
    for name, codec in (("twilio", TwilioDialect()), ("plivo", PlivoDialect())):
        start, messages = bench._messages(name, 50)
        codec.parse(start)
        events = [codec.parse(m) for m in messages]
        assert all(type(e) is MediaReceived and len(e.payload) == 160 for e in events), name
        assert (codec.sequence_gaps, codec.sequence_repeats) == (0, 0)
        assert [e.timestamp_ms for e in events][:3] == [0, 20, 40]  # Plivo's epoch stamps rebased


def test_a_run_against_a_base_tree_reports_every_row() -> None:
    root = BENCHMARKS.parent
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / "parse_bench.py"), "--base-tree", str(root), "--rounds", "1", "--messages", "2000"],
        check=True, capture_output=True, text=True, timeout=120, cwd=root,
    ).stdout
    rows = json.loads(out.strip().splitlines()[-1])
    assert set(rows) == {"twilio/head", "twilio/base", "plivo/head", "plivo/base"}
    assert all(row["median_ns"] > 0 and row["bytecodes"] > 20 for row in rows.values())
    assert rows["plivo/head"]["bytecodes"] == rows["plivo/base"]["bytecodes"]  # the same tree twice: same count
