"""Soak: N concurrent simulated calls for M minutes against a real VoiceServer — memory flat, nothing lost.

Run:  python benchmarks/soak.py                        # 200 calls x 10 minutes (the issue's target)
      python benchmarks/soak.py --calls 200 --minutes 2  # the short run recorded in docs/reliability.md
      python benchmarks/soak.py --dialect plivo --minutes 1

It reuses the lean load generator of ``benchmarks/load_bench.py`` (one asyncio process, raw sockets, no
thread per phone) and its server process (MockTts + MockStt with a real energy VAD; every flow loops
``listen`` → ``speak(wait=True)``), so a soak is simply a load run with a long window. What a soak adds is
the verdict over time:

* **RSS flat**: the server's RSS is sampled about every 5 s during the window. The baseline is the first
  sample after the first 10 % of the window (allocator warm-up), the end value the largest sample in the
  second half; growth must stay within ``--rss-tolerance`` (default 5 %).
* **0 frames lost or duplicated**, both directions: inbound by the counter embedded in every caller frame,
  outbound by comparing every played utterance byte for byte with what the TTS produced (load_bench's checks).
* **0 errors**: no failed connects, no flow errors, no protocol errors at either end, every call connected.

The last line printed is one JSON object; exit status 0 only if the soak passed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _load_bench() -> Any:
    spec = importlib.util.spec_from_file_location("load_bench", HERE / "load_bench.py")
    if spec is None or spec.loader is None:  # pragma: no cover
        raise SystemExit("benchmarks/load_bench.py is missing")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rss_verdict(samples_mb: list[float], tolerance: float) -> dict[str, Any]:
    """Baseline after warm-up vs. the largest sample in the second half of the window."""
    if len(samples_mb) < 4:
        return {"rss_flat": None, "rss_note": f"only {len(samples_mb)} RSS samples: run longer"}
    start = max(1, len(samples_mb) // 10)
    baseline = samples_mb[start]
    tail = samples_mb[len(samples_mb) // 2 :]
    end = max(tail)
    growth = (end - baseline) / baseline if baseline else 0.0
    return {
        "rss_baseline_mb": baseline,
        "rss_end_max_mb": end,
        "rss_growth_pct": round(growth * 100.0, 2),
        "rss_samples": len(samples_mb),
        "rss_flat": growth <= tolerance,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--dialect", choices=("twilio", "plivo"), default="twilio")
    parser.add_argument("--rss-tolerance", type=float, default=0.05)
    parser.add_argument("--ramp", type=float, default=100.0, help="new calls per second while connecting")
    parser.add_argument("--out", default="", help="also append the full result JSON to this file")
    args = parser.parse_args()

    bench = _load_bench()
    load_args = argparse.Namespace(
        calls=args.calls, dialect=args.dialect, server_mode="fastapi", workers=1, duration=args.minutes * 60.0,
        warmup=5.0, idle=3.0, ramp=args.ramp, max_lateness_ms=1e9, port=0, out="",
    )
    result = bench.run_once(load_args, args.calls)
    verdict = rss_verdict(result.get("rss_samples_mb") or [], args.rss_tolerance)
    lost = result["inbound_lost"] + result["outbound_lost"]
    duplicated = result["inbound_dup"] + result["outbound_dup"]
    errors = (
        result["flow_errors"] + result["connect_failures"] + result["generator_protocol_errors"]
        + result["outbound_corrupt_utterances"] + (args.calls - result["connected"])
    )
    summary = {
        "benchmark": "soak",
        "machine": f"{platform.machine()} {os.cpu_count()} vCPU, Python {platform.python_version()}",
        "calls": args.calls,
        "connected": result["connected"],
        "minutes": args.minutes,
        "dialect": args.dialect,
        "window_s": result["window_s"],
        "frames_lost": lost,
        "frames_duplicated": duplicated,
        "errors": errors,
        "utterances_checked": result["utterances_checked"],
        "inbound_frames_measured": result["inbound_frames_measured"],
        "outbound_frames_measured": result["outbound_frames_measured"],
        "mark_outcomes": result["mark_outcomes"],
        "server_cpu_pct": result["server_cpu_pct"],
        "lateness_p99_ms": result["lateness_p99_ms"],
        "server_stats": result["server_stats"],
        **verdict,
    }
    summary["pass"] = bool(verdict.get("rss_flat") and lost == 0 and duplicated == 0 and errors == 0)
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps({**summary, "load_result": result}) + "\n")
    print(json.dumps(summary), flush=True)
    sys.exit(0 if summary["pass"] else 1)


if __name__ == "__main__":
    main()
