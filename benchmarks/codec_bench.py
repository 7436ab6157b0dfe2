"""Per-20-ms-frame cost of the audio hot path versus the audioop reference.

Run:  python benchmarks/codec_bench.py [--number N] [--repeat R]

Measures, side by side in one process, ns per 20 ms frame for:
  * μ-law decode      ours: ulaw_decode / ulaw_to_pcm16   ref: audioop.ulaw2lin
  * μ-law encode      ours: ulaw_encode / pcm16_to_ulaw   ref: audioop.lin2ulaw
  * 8k→16k, 16k→8k    ours: StreamResampler.process       ref: audioop.ratecv (stateful)
  * mix               ours: mix_frames                    ref: ulaw2lin×2 + add + lin2ulaw

Why the reference matters: audioop is what the ecosystem (pipecat, the prior
art's predecessors) used, and it is gone in Python 3.13. The numbers show
what replacing it costs. Note that ``ratecv`` is linear interpolation with
no anti-alias filter, so the resampling ratio compares a crude resampler
with a proper one (soxr HQ); it is a cost reference, not a quality peer.

Reports the best of ``repeat`` timeit runs (the least-disturbed run), a
human table, then one final JSON line for machines.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import timeit
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from voice_runtime.audio import (  # noqa: E402
    StreamResampler,
    mix_frames,
    pcm16_to_ulaw,
    ulaw_decode,
    ulaw_encode,
    ulaw_to_pcm16,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop  # stdlib on 3.11/3.12; `pip install audioop-lts` on >= 3.13
    except ImportError:
        audioop = None


def best_ns(fn: Callable[[], object], number: int, repeat: int) -> float:
    """Best-of-``repeat`` mean ns per call over ``number`` calls."""
    fn()  # warm up caches / lazy state
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e9


def make_audio() -> tuple[bytes, bytes, np.ndarray, bytes, np.ndarray, bytes]:
    rng = np.random.default_rng(0)
    t = np.arange(160) / 8000
    pcm8 = np.round(9000 * np.sin(2 * np.pi * 440 * t) + rng.normal(0, 500, 160)).astype(np.int16)
    t16 = np.arange(320) / 16000
    pcm16k = np.round(9000 * np.sin(2 * np.pi * 440 * t16)).astype(np.int16)
    ulaw = pcm16_to_ulaw(pcm8)
    ulaw2 = pcm16_to_ulaw(np.roll(pcm8, 37))
    return ulaw, ulaw2, pcm8, pcm8.astype("<i2").tobytes(), pcm16k, pcm16k.astype("<i2").tobytes()


def run(number: int, repeat: int) -> list[dict[str, object]]:
    ulaw, ulaw2, pcm8, pcm8_bytes, pcm16k, pcm16k_bytes = make_audio()
    up, down = StreamResampler(8000, 16000), StreamResampler(16000, 8000)

    ours: dict[str, tuple[str, Callable[[], object]]] = {
        "ulaw decode (bytes->s16le)": ("ulaw_decode", lambda: ulaw_decode(ulaw)),
        "ulaw decode (bytes->ndarray)": ("ulaw_to_pcm16", lambda: ulaw_to_pcm16(ulaw)),
        "ulaw encode (s16le->bytes)": ("ulaw_encode", lambda: ulaw_encode(pcm8_bytes)),
        "ulaw encode (ndarray->bytes)": ("pcm16_to_ulaw", lambda: pcm16_to_ulaw(pcm8)),
        "resample 8k->16k (stream)": ("StreamResampler.process", lambda: up.process(pcm8)),
        "resample 16k->8k (stream)": ("StreamResampler.process", lambda: down.process(pcm16k)),
        "mix two ulaw frames": ("mix_frames", lambda: mix_frames(ulaw, ulaw2)),
    }
    refs: dict[str, Callable[[], object]] = {}
    if audioop is not None:
        state: dict[str, object] = {"up": None, "down": None}

        def ratecv_up() -> object:
            out, state["up"] = audioop.ratecv(pcm8_bytes, 2, 1, 8000, 16000, state["up"])
            return out

        def ratecv_down() -> object:
            out, state["down"] = audioop.ratecv(pcm16k_bytes, 2, 1, 16000, 8000, state["down"])
            return out

        def audioop_mix() -> object:
            return audioop.lin2ulaw(audioop.add(audioop.ulaw2lin(ulaw, 2), audioop.ulaw2lin(ulaw2, 2), 2), 2)

        dec = lambda: audioop.ulaw2lin(ulaw, 2)  # noqa: E731
        enc = lambda: audioop.lin2ulaw(pcm8_bytes, 2)  # noqa: E731
        refs = {
            "ulaw decode (bytes->s16le)": dec,
            "ulaw decode (bytes->ndarray)": dec,
            "ulaw encode (s16le->bytes)": enc,
            "ulaw encode (ndarray->bytes)": enc,
            "resample 8k->16k (stream)": ratecv_up,
            "resample 16k->8k (stream)": ratecv_down,
            "mix two ulaw frames": audioop_mix,
        }

    rows: list[dict[str, object]] = []
    for name, (impl, fn) in ours.items():
        ours_ns = best_ns(fn, number, repeat)
        ref_fn = refs.get(name)
        ref_ns = best_ns(ref_fn, number, repeat) if ref_fn is not None else None
        rows.append(
            {
                "op": name,
                "impl": impl,
                "ours_ns_per_frame": round(ours_ns, 1),
                "ref_ns_per_frame": round(ref_ns, 1) if ref_ns is not None else None,
                "ratio_ours_over_ref": round(ours_ns / ref_ns, 2) if ref_ns else None,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20000, help="calls per timing run")
    parser.add_argument("--repeat", type=int, default=7, help="timing runs; best is reported")
    args = parser.parse_args()

    rows = run(args.number, args.repeat)
    ref_name = "audioop (stdlib)" if sys.version_info < (3, 13) else "audioop-lts"
    if audioop is None:
        ref_name = "unavailable"
    print(f"Python {platform.python_version()}, numpy {np.__version__}, reference: {ref_name}")
    print(f"best of {args.repeat} x {args.number} calls; one frame = 20 ms (160 samples @ 8 kHz)\n")
    header = f"{'operation':30} {'ours ns/frame':>14} {'audioop ns/frame':>17} {'ours/ref':>9}"
    print(header)
    print("-" * len(header))
    for r in rows:
        ref = "-" if r["ref_ns_per_frame"] is None else f"{r['ref_ns_per_frame']:.0f}"
        ratio = "-" if r["ratio_ours_over_ref"] is None else f"{r['ratio_ours_over_ref']:.2f}x"
        print(f"{r['op']:30} {r['ours_ns_per_frame']:>14.0f} {ref:>17} {ratio:>9}")
    print(
        "\nnote: audioop.ratecv is unfiltered linear interpolation; ours is soxr HQ (anti-aliased), "
        "whose stream output arrives in ~100 ms bursts."
    )
    print(
        json.dumps(
            {
                "benchmark": "codec_bench",
                "python": platform.python_version(),
                "reference": ref_name,
                "number": args.number,
                "repeat": args.repeat,
                "results": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
