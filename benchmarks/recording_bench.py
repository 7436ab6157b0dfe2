"""What recording costs the event loop, per call-second: inline CallRecorder vs the threaded WavRecorder.

The call loop writes every caller frame (20 ms) and every outbound batch (0.4 s) to the call's recorder.
Before this change the recorder did its numpy work *and its file writes* on the loop; now the loop only
appends to a queue and a writer thread per recording does the rest. This measures, in one run, side by
side: time spent *in the write calls* (what the loop pays) per call-second, the worst single write (a file
write stalls every call on that loop), and the whole process's CPU per call-second (loop + writer threads),
for: ``inline`` (CallRecorder), ``threaded`` (CallAudio + WavRecorder, the default now), ``taps only``
(CallAudio with no sink: the always-on fan-out when nothing records) and ``baseline`` (a no-op recorder: the
harness's own cost, to subtract).

    python benchmarks/recording_bench.py [--calls 50] [--seconds 20] [--rounds 5]

Prints a table and, as its last line, one JSON object (medians and min-max over the rounds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from voice_runtime.audio import CallRecorder, pcm16_to_ulaw
from voice_runtime.providers.mock import tone_speech
from voice_runtime.recording import CallAudio, WavRecorder
from voice_runtime.session import VoiceSession


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class _NoOp:
    def write_caller(self, ulaw: bytes, at: float | None = None) -> None:
        pass

    def write_agent(self, ulaw: bytes, at: float | None = None) -> None:
        pass

    def close(self) -> None:
        pass


def run(variant: str, calls: int, seconds: float, directory: Path) -> dict[str, float]:
    clock = Clock()
    caller = pcm16_to_ulaw(tone_speech(1.0))
    agent = pcm16_to_ulaw(tone_speech(0.4, frequency=400.0))
    recorders: list[Any] = []
    for i in range(calls):
        path = directory / f"{variant}-{i}.wav"
        if variant == "inline":
            recorders.append(CallRecorder(path, clock=clock))
        elif variant == "threaded":
            recorders.append(CallAudio(VoiceSession(), WavRecorder(path, clock=clock), clock=clock))
        elif variant == "taps_only":
            recorders.append(CallAudio(VoiceSession(), None, clock=clock))
        else:  # the harness itself (loop, timers, a no-op recorder): subtract it from the others
            recorders.append(_NoOp())
    durations: list[int] = []
    cpu0 = time.process_time()
    loop0 = time.thread_time()  # CPU of this thread only: the "loop", without the writer thread
    frames = int(seconds * 50)
    for f in range(frames):
        clock.t += 0.02
        chunk = caller[(f % 50) * 160 : (f % 50) * 160 + 160]
        for rec in recorders:
            t = time.perf_counter_ns()
            rec.write_caller(chunk, clock.t)
            if f % 20 == 0:  # one 0.4 s outbound batch every 0.4 s, scheduled just ahead
                rec.write_agent(agent, clock.t + 0.24)
            durations.append(time.perf_counter_ns() - t)
    loop_cpu = time.thread_time() - loop0
    for rec in recorders:
        rec.close()
    cpu = time.process_time() - cpu0
    call_seconds = calls * seconds
    durations.sort()
    return {
        "loop_cpu_us_per_call_s": loop_cpu * 1e6 / call_seconds,
        "p99_write_us": durations[int(len(durations) * 0.99)] / 1000,
        "process_cpu_us_per_call_s": cpu * 1e6 / call_seconds,
    }


KEYS = ("loop_cpu_us_per_call_s", "p99_write_us", "process_cpu_us_per_call_s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    variants = ["inline", "threaded", "taps_only", "baseline"]
    results: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for variant in variants:  # interleaved, so machine noise hits every variant alike
                results[variant].append(run(variant, args.calls, args.seconds, Path(tmp)))
    summary: dict[str, Any] = {"calls": args.calls, "seconds": args.seconds, "rounds": args.rounds}
    print(f"{'variant':<10} {'loop CPU us/call-s':>24} {'p99 write us':>24} {'process CPU us/call-s':>26}")
    for variant in variants:
        row: dict[str, Any] = {}
        for key in KEYS:
            values = [r[key] for r in results[variant]]
            row[key] = {"median": round(statistics.median(values), 1), "min": round(min(values), 1), "max": round(max(values), 1)}
        summary[variant] = row
        print(f"{variant:<10} " + " ".join(
            f"{row[k]['median']:>10.1f} ({row[k]['min']:.0f}-{row[k]['max']:.0f})".rjust(25)
            for k in KEYS
        ))
    inline, threaded = summary["inline"], summary["threaded"]
    for key in KEYS:
        summary[f"{key}_ratio_threaded_vs_inline"] = round(threaded[key]["median"] / inline[key]["median"], 3)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
