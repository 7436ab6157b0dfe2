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


def _quiet_probe(bench: Any) -> None:
    """Server child: keep load_bench's loss/duplicate counters but not its per-frame latency list.

    load_bench records one latency sample per caller frame for its percentiles (10,000 a second at 200 calls,
    ~0.4 MB/s). That is the benchmark's memory, not the runtime's, and over a soak it would be the dominant
    RSS growth; the soak does not report latency, so it never switches the sampling on.
    """

    class SoakProbe(bench.Probe):  # type: ignore[misc, name-defined]
        @property
        def active(self) -> bool:
            return False

        @active.setter
        def active(self, value: bool) -> None:
            pass

    bench.Probe = SoakProbe


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
    if "--role" in sys.argv:  # a child process started by load_bench's orchestrator (see below)
        bench = _load_bench()
        _quiet_probe(bench)
        maxlen = int(os.environ.get("SOAK_EVENT_LOG_MAXLEN", "0"))
        if maxlen:  # diagnostics: how much of the growth is the per-call event log filling to its bound?
            from voice_runtime import call_events

            original = call_events.EventLog.__init__
            call_events.EventLog.__init__ = lambda self, maxlen_=maxlen: original(self, maxlen_)  # type: ignore[method-assign]
        bench.main()
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--dialect", choices=("twilio", "plivo"), default="twilio")
    parser.add_argument("--rss-tolerance", type=float, default=0.05)
    parser.add_argument("--ramp", type=float, default=100.0, help="new calls per second while connecting")
    parser.add_argument("--out", default="", help="also append the full result JSON to this file")
    parser.add_argument(
        "--event-log-maxlen", type=int, default=0,
        help="cap each call's event log (default: the runtime's 5000); it fills for ~30 min and dominates RSS growth",
    )
    args = parser.parse_args()
    if args.event_log_maxlen:
        os.environ["SOAK_EVENT_LOG_MAXLEN"] = str(args.event_log_maxlen)

    bench = _load_bench()
    bench.__file__ = str(Path(__file__).resolve())  # load_bench starts its children as "<this file> --role ..."
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
        "event_log_maxlen": args.event_log_maxlen or "default",
        "dialect": args.dialect,
        "window_s": result["window_s"],
        "frames_lost": lost,
        "frames_duplicated": duplicated,
        "errors": errors,
        "utterances_checked": result["utterances_checked"],
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
