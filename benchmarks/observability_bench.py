"""What per-call observation costs per event and per call, isolated from the network (complements load_bench).

Run:  python benchmarks/observability_bench.py [--calls 2000]

Replays one realistic call's events (greeting, three caller turns with answers, one barge-in, DTMF; ~60 events,
the shape a real call of ~30 s emits) through a session's event log, three ways, interleaved:

* ``bare``: the session's event log with no subscriber (what every call pays anyway);
* ``observed``: with the server's observer attached (turn tracker, lifecycle log lines at INFO, Prometheus),
  and the CallReport built at the end;
* ``observed+log``: the same plus the JSON-lines call log written to a temporary directory.

Prints microseconds per call for each (median of 5 repetitions, min-max) and the difference per call-second,
assuming the replayed call lasts ``--call-seconds`` (30).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from voice_runtime import call_events as ev  # noqa: E402
from voice_runtime.metrics.observer import CallObserver  # noqa: E402
from voice_runtime.metrics.prometheus import ServerMetrics  # noqa: E402
from voice_runtime.session import VoiceSession  # noqa: E402


def script(t0: float) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = [(ev.STREAM_STARTED, {"stream_id": "MZ1", "carrier": "twilio", "parameters": {}})]

    def agent(text: str, stopped: bool = False) -> None:
        out.extend([
            (ev.TTS_START, {"text": text}), (ev.TTS_FIRST_AUDIO, {"latency": 0.01}),
            (ev.AUDIO_SENT, {"playout_at": t0}),
            (ev.TTS_END, {"text": text, "audio_seconds": 2.0, "stopped": stopped, "error": None}),
            (ev.MARK_SENT, {"name": "speech", "wire_name": "m1"}),
        ])
        if not stopped:
            out.append((ev.MARK_PLAYED, {"name": "speech", "wire_name": "m1", "waited": 2.0}))

    def caller(text: str, barge: bool = False) -> None:
        out.append((ev.STT_SPEECH_STARTED, {"barge_in": barge}))
        if barge:
            out.extend([(ev.BARGE_IN, {}), (ev.CLEAR_REQUESTED, {"local_marks": 0}), (ev.CLEAR_SENT, {"marks_cleared": 1}),
                        (ev.MARK_CLEARED, {"name": "speech", "wire_name": "m1"})])
        out.extend([(ev.STT_PARTIAL, {"text": text[:3]}), (ev.SPEECH_ENDED, {"ended_at": t0, "provider": "mock"}),
                    (ev.STT_FINAL, {"text": text})])

    agent("Hello, how can I help you today?")
    for i in range(3):
        caller(f"question number {i}")
        agent(f"Here is answer number {i}, which takes a little while to say.")
    out.append((ev.TTS_START, {"text": "One more thing"}))
    caller("stop", barge=True)
    out.append((ev.DTMF_RECEIVED, {"digit": "5"}))
    out.append((ev.CALL_ENDED, {"reason": "hangup"}))
    return out


def run(mode: str, calls: int, tmp: Path) -> tuple[float, float]:
    """(µs per call on the emitting thread — what the event loop pays, µs of process CPU per call — every
    thread, including the call-log writer, measured until its files are on disk)."""
    cpu_started = time.process_time()
    on_caller = run_calls(mode, calls, tmp)
    try:
        from voice_runtime.metrics import flush_call_logs
    except ImportError:  # before the call-log thread existed, files were finished inline
        pass
    else:
        flush_call_logs(60)
    return on_caller, (time.process_time() - cpu_started) / calls * 1e6


def run_calls(mode: str, calls: int, tmp: Path) -> float:
    observer = None
    if mode != "bare":
        observer = CallObserver(metrics=ServerMetrics(), call_log_dir=tmp if mode == "observed+log" else None)
    events = script(time.monotonic())
    started = time.perf_counter()
    for i in range(calls):
        session = VoiceSession(call_sid=f"CA{i}")
        session.log.call_id = session.call_sid
        if observer is not None:
            observer.call_started(session)
        emit = session.log.emit
        for kind, data in events:
            emit(kind, **data)
        if observer is not None:
            observer.call_finished(session)
    return (time.perf_counter() - started) / calls * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--call-seconds", type=float, default=30.0)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)  # INFO lifecycle lines are made, then filtered, as in production
    modes = ("bare", "observed", "observed+log")
    results: dict[str, list[float]] = {m: [] for m in modes}
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            for mode in modes:
                on_caller, process_cpu = run(mode, args.calls, Path(tmp))
                results[mode].append(on_caller)
                cpu[mode].append(process_cpu)
    bare = statistics.median(results["bare"])
    bare_cpu = statistics.median(cpu["bare"])
    out = {"benchmark": "observability per call", "events_per_call": len(script(0.0)), "calls": args.calls}
    for mode in modes:
        med = statistics.median(results[mode])
        med_cpu = statistics.median(cpu[mode])
        out[mode] = {
            "us_per_call_median": round(med, 1), "min": round(min(results[mode]), 1), "max": round(max(results[mode]), 1),
            "extra_us_per_call_second": round((med - bare) / args.call_seconds, 2),
            "process_cpu_us_per_call_median": round(med_cpu, 1),
            "cpu_min": round(min(cpu[mode]), 1), "cpu_max": round(max(cpu[mode]), 1),
            "extra_cpu_us_per_call_second": round((med_cpu - bare_cpu) / args.call_seconds, 2),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
