"""The first-token benchmark's Azure path runs end to end (one run; no timing asserted beyond causality).

The real server, SimulatedPhone and ``AzureTts`` over the timed SDK fake, as ``--paths azure_per_sentence
--runs 1`` would run them. The only figure checked is a lower bound the model implies: the first audio
cannot reach the phone before the first sentence is complete (5 token gaps) plus the modelled latency.
"""

from __future__ import annotations

import pytest

from tests.benchmarks._load import load_benchmark

first_token_bench = load_benchmark("first_token_bench")


def test_azure_path_runs_end_to_end() -> None:
    pytest.importorskip("azure.cognitiveservices.speech", reason='the Azure providers need the [azure] extra: pip install "voice-runtime[azure]"')
    lines: list[str] = []
    results = first_token_bench.run_paths(
        ("azure_per_sentence",),
        runs=1,
        token_ms=10.0,
        model_latency=0.2,
        speed=8.0,
        answer="Sure, I can help with that. Bye.",  # short: the benchmark plays each answer out in full
        report=lines.append,
    )
    wire = results["azure_per_sentence"]["first_token_to_wire"]
    assert wire["n"] == 1
    assert wire["min_ms"] >= 5 * 10.0 + 200.0  # the first sentence's 5 token gaps, then the modelled latency
    assert results["azure_per_sentence"]["speak_return"]["n"] == 1
    assert results["model_latency_s"] == 0.2 and results["speed_x_realtime"] == 8.0
    assert len(lines) == 1 and lines[0].startswith("azure_per_sentence")


def test_unknown_path_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown paths"):
        first_token_bench.run_paths(("azure",), runs=1)
