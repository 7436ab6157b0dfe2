"""The cost of parsing one inbound carrier media message, per dialect, side by side with another tree.

Run:  python benchmarks/parse_bench.py [--base-tree /path/to/older/checkout] [--rounds 5] [--messages 20000]

Each dialect parses ``--messages`` media messages of the exact shape its carrier sends (Twilio: the numbers
as digit strings; Plivo: JSON integers and an epoch-millisecond timestamp string), after a ``start``. Reported
per message: wall-clock ns (median and min–max over ``--rounds``, the trees alternated round by round in fresh
processes so that both see the same machine) and bytecodes run (``sys.settrace`` opcode events: exact, the same
on any machine). The last line is JSON.

Why a benchmark of its own: the parse is the one per-frame step both carriers share, and the echo benchmarks
speak Twilio only.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TWILIO_SID = "MZ" + "0" * 32
PLIVO_SID = "87654321-4321-4321-4321-cba987654321"


def _messages(dialect: str, count: int) -> tuple[str, list[str]]:
    payload = base64.b64encode(bytes(range(160))).decode()
    if dialect == "twilio":
        start = {"event": "start", "sequenceNumber": "1", "streamSid": TWILIO_SID,
                 "start": {"streamSid": TWILIO_SID, "callSid": "CA" + "1" * 32, "accountSid": "AC" + "2" * 32, "tracks": ["inbound"],
                           "customParameters": {}, "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}
        media = [{"event": "media", "sequenceNumber": str(i + 2), "streamSid": TWILIO_SID,
                  "media": {"track": "inbound", "chunk": str(i + 1), "timestamp": str(20 * i), "payload": payload}} for i in range(count)]
    else:
        start = {"event": "start", "sequenceNumber": 1, "extra_headers": "userId=1",
                 "start": {"callId": "12345678-1234-1234-1234-123456789abc", "streamId": PLIVO_SID, "accountId": "MA" + "X" * 18,
                           "tracks": ["inbound"], "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}}}
        media = [{"event": "media", "sequenceNumber": i + 2, "streamId": PLIVO_SID, "extra_headers": "userId=1",
                  "media": {"track": "inbound", "timestamp": str(1705312200000 + 20 * i), "chunk": i + 1, "payload": payload}}
                 for i in range(count)]
    return json.dumps(start), [json.dumps(m) for m in media]


def _measure(dialect: str, count: int) -> dict[str, Any]:
    """In this process (the tree on ``sys.path``): ns and bytecodes per media parse."""
    from voice_runtime.protocols.plivo import PlivoDialect
    from voice_runtime.protocols.twilio import TwilioDialect

    start, messages = _messages(dialect, count)

    def fresh() -> Any:
        codec = TwilioDialect() if dialect == "twilio" else PlivoDialect()
        codec.parse(start)
        return codec

    parse = fresh().parse
    began = time.perf_counter()
    for message in messages:
        parse(message)
    ns = (time.perf_counter() - began) / count * 1e9

    opcodes = 0

    def trace(frame: Any, event: str, _arg: Any) -> Any:
        nonlocal opcodes
        frame.f_trace_opcodes, frame.f_trace_lines = True, False
        if event == "opcode":
            opcodes += 1
        return trace

    parse = fresh().parse
    traced = messages[:1000]
    sys.settrace(trace)
    for message in traced:
        parse(message)
    sys.settrace(None)
    return {"ns": ns, "bytecodes": opcodes / len(traced)}


def _run_in(tree: Path, dialect: str, count: int) -> dict[str, Any]:
    code = f"import sys; sys.path.insert(0, {str(tree)!r}); sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); " \
           f"import json, parse_bench; print(json.dumps(parse_bench._measure({dialect!r}, {count})))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=tree).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-tree", type=Path, help="an older checkout to compare with (its parse, same messages)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=20000)
    args = parser.parse_args()
    trees = {"head": ROOT} | ({"base": args.base_tree.resolve()} if args.base_tree else {})
    rows: dict[str, dict[str, Any]] = {}
    for dialect in ("twilio", "plivo"):
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
        for _ in range(args.rounds):
            for name, tree in trees.items():  # alternated: both trees see the same minutes of the machine
                runs[name].append(_run_in(tree, dialect, args.messages))
        for name, results in runs.items():
            ns = [r["ns"] for r in results]
            rows[f"{dialect}/{name}"] = {"median_ns": round(statistics.median(ns)), "min_ns": round(min(ns)), "max_ns": round(max(ns)),
                                         "bytecodes": results[0]["bytecodes"]}
    print("%-14s %10s %15s %10s %8s" % ("dialect/tree", "median ns", "min-max", "bytecodes", "x base"))
    for key, row in rows.items():
        dialect, name = key.split("/")
        base = rows.get(f"{dialect}/base")
        ratio = f"{row['median_ns'] / base['median_ns']:.2f}" if base and name != "base" else ""
        print("%-14s %10d %15s %10.1f %8s" % (key, row["median_ns"], f"{row['min_ns']}-{row['max_ns']}", row["bytecodes"], ratio))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
