"""Latency benchmark of the offline providers (Piper TTS, faster-whisper STT) on this machine.

    python benchmarks/local_providers_bench.py [--runs 6] [--baseline]

* **Piper time-to-first-audio**: wall time from ``PiperTts.synthesize(...)`` to its first μ-law chunk, for a
  typical agent sentence, with a warm worker (the one-off worker start is reported separately).
* **Whisper final-transcript latency**: a ~4 s caller utterance (Piper-synthesized with a different
  length/noise setting, μ-law 8 kHz) is fed in real time (20 ms frames, paced by the wall clock, as a carrier
  would) followed by silence. Reported per run:

  - ``after_speech_end``: from the moment the last voiced frame was fed to ``on_committed``. This includes the
    VAD's endpoint silence wait (``min_silence_ms``) — it is what a caller experiences.
  - ``after_endpoint``: from the moment the frame completing the endpoint silence was fed to ``on_committed``.
  - ``inference``: time spent transcribing in the worker thread.

``--baseline`` also measures the plain configuration (full 30 s encoder window, no early decode) for
comparison. The last line printed is one JSON object with all numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from voice_runtime.audio.g711 import pcm16_to_ulaw  # noqa: E402
from voice_runtime.providers.local_stt import LocalWhisperStt, load_whisper  # noqa: E402
from voice_runtime.providers.local_tts import PiperTts  # noqa: E402

AGENT_SENTENCES = [
    "Thanks for calling Riverside Dental, this is the virtual assistant, how can I help you today?",
    "Sure, I can help you reschedule that appointment, what day works best for you?",
    "Great, you are booked for Tuesday at three thirty in the afternoon.",
]
CALLER_UTTERANCES = [
    "Hi, I would like to book a cleaning for next Tuesday afternoon if possible.",
    "My name is Maria Gonzalez and my date of birth is the fourth of May.",
    "Could you tell me whether you take my insurance before I come in?",
    "I need to move my appointment because I will be out of town that week.",
]
RATE = 8000
FRAME = 160


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "p90": round(pct(values, 0.9), 3),
            "min": round(min(values), 3), "max": round(max(values), 3), "n": len(values)}


def bench_tts(runs: int) -> dict[str, object]:
    tts = PiperTts(idle_timeout=0)
    started = time.perf_counter()
    tts.warm_up()
    cold = time.perf_counter() - started
    ttfa, totals, audio = [], [], []
    for i in range(runs):
        text = AGENT_SENTENCES[i % len(AGENT_SENTENCES)]
        started = time.perf_counter()
        first = None
        size = 0
        for chunk in tts.synthesize(text, threading.Event()):
            if first is None:
                first = time.perf_counter() - started
            size += len(chunk)
        totals.append(time.perf_counter() - started)
        ttfa.append(first or float("nan"))
        audio.append(size / RATE)
    tts.close()
    return {"worker_start_s": round(cold, 3), "first_audio": summary(ttfa), "total": summary(totals),
            "audio_s": summary(audio)}


def caller_clips() -> list[np.ndarray]:
    tts = PiperTts(idle_timeout=0)
    try:
        return [tts.synthesize_pcm(t, length_scale=1.15, noise_scale=0.75, volume=0.7, sample_rate=RATE)[0]
                for t in CALLER_UTTERANCES]
    finally:
        tts.close()


async def one_stt_run(stt_kwargs: dict, clip: np.ndarray) -> dict[str, float]:
    committed = asyncio.Event()
    texts: list[str] = []
    commit_at = 0.0

    def on_committed(text: str) -> None:
        nonlocal commit_at
        commit_at = time.monotonic()
        texts.append(text)
        committed.set()

    stt = LocalWhisperStt(on_committed=on_committed, **stt_kwargs)
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    await stt.start(queue)
    lead = np.zeros(int(0.5 * RATE), dtype=np.int16)
    tail = np.zeros(int(1.5 * RATE), dtype=np.int16)
    audio = np.concatenate([lead, clip, tail])
    voiced = np.flatnonzero(np.abs(clip) > 500)
    last_voiced = lead.size + int(voiced[-1])
    ulaw = pcm16_to_ulaw(audio)
    speech_end_fed = 0.0
    t0 = time.monotonic()
    for i in range(0, len(ulaw), FRAME):
        await queue.put(ulaw[i:i + FRAME])
        if i <= last_voiced < i + FRAME:
            speech_end_fed = time.monotonic()
        if committed.is_set():
            break
        await asyncio.sleep(max(0.0, t0 + (i + FRAME) / RATE - time.monotonic()))
    await asyncio.wait_for(committed.wait(), timeout=30)
    await stt.stop()
    lat = stt.last_latency or {}
    return {
        "after_speech_end": commit_at - speech_end_fed,
        "after_endpoint": commit_at - lat.get("endpoint_at", commit_at),
        "inference": lat.get("inference_s", float("nan")),
        "speculative": bool(lat.get("speculative")),
        "audio_s": clip.size / RATE,
        "text": texts[0] if texts else "",
    }


async def bench_stt(runs: int, clips: list[np.ndarray], stt_kwargs: dict) -> dict[str, object]:
    results = [await one_stt_run(stt_kwargs, clips[i % len(clips)]) for i in range(runs)]
    return {
        "config": stt_kwargs,
        "after_speech_end": summary([r["after_speech_end"] for r in results]),
        "after_endpoint": summary([r["after_endpoint"] for r in results]),
        "inference": summary([r["inference"] for r in results]),
        "speculative_runs": sum(r["speculative"] for r in results),
        "utterance_s": summary([r["audio_s"] for r in results]),
        "texts": [r["text"] for r in results[: len(clips)]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--baseline", action="store_true", help="also measure full-window, no early decode")
    args = parser.parse_args()

    tts = bench_tts(args.runs)
    clips = caller_clips()
    started = time.perf_counter()
    load_whisper()
    whisper_load = time.perf_counter() - started
    configs = {"default": {}}
    if args.baseline:
        configs["baseline_full_window"] = {"encoder_window_s": None, "early_decode_ms": None}
    stt = {name: asyncio.run(bench_stt(args.runs, clips, kw)) for name, kw in configs.items()}

    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(f"Piper worker start (voice load): {tts['worker_start_s']:.2f} s   Whisper model load: {whisper_load:.2f} s")
    print(f"{'metric':44} {'median':>8} {'p90':>8} {'min':>8} {'max':>8}")
    rows = [("piper first audio (warm worker)", tts["first_audio"]), ("piper whole sentence", tts["total"])]
    for name, result in stt.items():
        rows += [
            (f"whisper[{name}] after end of speech", result["after_speech_end"]),
            (f"whisper[{name}] after endpoint", result["after_endpoint"]),
            (f"whisper[{name}] inference", result["inference"]),
        ]
    for label, s in rows:
        print(f"{label:44} {s['median']:8.3f} {s['p90']:8.3f} {s['min']:8.3f} {s['max']:8.3f}")
    for name, result in stt.items():
        print(f"[{name}] utterance {result['utterance_s']['median']:.1f} s; texts: {result['texts']}")
    print(json.dumps({"cpus": os.cpu_count(), "whisper_load_s": round(whisper_load, 3), "tts": tts, "stt": stt}))


if __name__ == "__main__":
    main()
