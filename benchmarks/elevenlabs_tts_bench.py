"""ElevenLabs TTS: time from ``speak()`` to the first media frame on the phone's socket, two audio paths.

* **ulaw passthrough** — ``ElevenLabsTts`` requests ``output_format=ulaw_8000`` and queues the bytes as they
  stream (what the provider does).
* **ulaw passthrough, httpx's own transport** — the same, read by httpcore + h11 instead of urllib3
  (``http_transport="httpx"``): the before row of stop 29's transport change, for first-audio latency.
* **MP3 + ffmpeg** — the same client requests ``mp3_44100_128`` (the API default) and pipes it through an
  ``ffmpeg`` subprocess (tuned for low delay) to μ-law 8 kHz, the way many integrations do it.

Both run against the same loopback fake ElevenLabs (same simulated model latency and generation speed, in
audio time) and through the real VoiceServer and SimulatedPhone, so the difference is the encoding path.
Prints a table and, last, one JSON line. If ffmpeg is not installed the MP3 path is reported as unavailable.

    python benchmarks/elevenlabs_tts_bench.py [--runs 10] [--model-latency 0.1] [--speed 4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

from voice_runtime import VoiceServer
from voice_runtime.errors import ProviderError
from voice_runtime.providers.elevenlabs_tts import ElevenLabsTts
from voice_runtime.testing import SimulatedPhone
from voice_runtime.testing.fake_elevenlabs import FakeElevenLabs, ffmpeg_available

TEXTS = [
    "Thanks for calling, how can I help you today?",
    "Your appointment is on Tuesday at ten in the morning.",
    "I can move it to Thursday afternoon if that suits you better.",
    "Please hold on while I check the calendar.",
]


class Mp3FfmpegTts(ElevenLabsTts):
    """The transcoding path, for comparison only: MP3 from the service → ffmpeg → μ-law 8 kHz."""

    mp3_format = "mp3_44100_128"

    def synthesize(self, text: str, stop_event: threading.Event) -> Iterator[bytes]:
        proc = subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-fflags", "nobuffer", "-flags", "low_delay",
             "-probesize", "32", "-analyzeduration", "0", "-f", "mp3", "-i", "pipe:0",
             "-ar", "8000", "-ac", "1", "-f", "mulaw", "-flush_packets", "1", "pipe:1"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        errors: list[BaseException] = []

        def pump() -> None:
            assert proc.stdin is not None
            try:
                for chunk in self.stream_audio(text, stop_event, output_format=self.mp3_format):
                    proc.stdin.write(chunk)
                    proc.stdin.flush()
            except (ProviderError, BrokenPipeError) as exc:
                errors.append(exc)
            finally:
                try:
                    proc.stdin.close()
                except OSError:
                    pass

        writer = threading.Thread(target=pump, daemon=True)
        writer.start()
        assert proc.stdout is not None
        try:
            while not stop_event.is_set():
                data = os.read(proc.stdout.fileno(), 4096)
                if not data:
                    break
                yield data
            if errors and isinstance(errors[0], ProviderError):
                raise errors[0]
        finally:
            proc.kill()
            proc.wait(5)
            writer.join(5)


def run_path(fake: FakeElevenLabs, factory: Any, runs: int) -> list[float]:
    """Latencies (s) from speak() to the phone receiving the first media frame of that utterance."""
    starts: list[float] = []
    done = threading.Event()

    def flow(session: Any) -> None:
        try:
            session.speak("Warm up.", wait=True, timeout=20)  # pool + ffmpeg binary warm, like a live call
            for index in range(runs):
                starts.append(time.monotonic())
                session.speak(TEXTS[index % len(TEXTS)], wait=True, timeout=30)
        finally:
            done.set()

    server = VoiceServer(tts_factory=factory, inbound_flow=flow)
    with server.start() as running:
        phone = SimulatedPhone(running.ws_url + "/stream").connect()
        try:
            if not done.wait(60 + 10 * runs):
                raise RuntimeError("benchmark flow did not finish")
            latencies = [phone.wait_for("media", timeout=5, after=start).at - start for start in starts]
        finally:
            phone.close()
    return latencies


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p90_ms": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))] * 1000, 1),
        "min_ms": round(ordered[0] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--model-latency", type=float, default=0.1, help="fake service time to first byte (s)")
    parser.add_argument("--speed", type=float, default=4.0, help="fake generation speed, x real time")
    args = parser.parse_args()

    results: dict[str, Any] = {"runs": args.runs, "model_latency_s": args.model_latency, "speed_x_realtime": args.speed}
    with FakeElevenLabs("bench-key", tts_realtime_factor=args.speed, tts_first_byte_delay=args.model_latency) as fake:
        common = {"api_key": "bench-key", "base_url": fake.http_url}
        results["ulaw_passthrough"] = summary(run_path(fake, lambda: ElevenLabsTts(**common), args.runs))
        results["ulaw_passthrough_httpx"] = summary(
            run_path(fake, lambda: ElevenLabsTts(**common, http_transport="httpx"), args.runs)
        )
        has_ffmpeg = ffmpeg_available()
        results["ffmpeg"] = shutil.which("ffmpeg") if has_ffmpeg else None
        if has_ffmpeg:
            results["mp3_ffmpeg"] = summary(run_path(fake, lambda: Mp3FfmpegTts(**common), args.runs))
        else:
            results["mp3_ffmpeg"] = None
            results["mp3_ffmpeg_unavailable"] = "ffmpeg is not installed (apt-get install -y ffmpeg); MP3 path skipped"

    print(f"ElevenLabs TTS, speak() -> first media frame on the phone's socket ({args.runs} utterances, "
          f"fake model latency {args.model_latency * 1000:.0f} ms, generation {args.speed:g}x real time)")
    print(f"{'path':<24}{'n':>4}{'p50 ms':>10}{'p90 ms':>10}{'min ms':>10}{'max ms':>10}")
    for name in ("ulaw_passthrough", "ulaw_passthrough_httpx", "mp3_ffmpeg"):
        row = results[name]
        if row is None:
            print(f"{name:<24}   UNAVAILABLE: {results['mp3_ffmpeg_unavailable']}")
        else:
            print(f"{name:<24}{row['n']:>4}{row['p50_ms']:>10}{row['p90_ms']:>10}{row['min_ms']:>10}{row['max_ms']:>10}")
    if results["mp3_ffmpeg"] is not None:
        results["mp3_minus_ulaw_p50_ms"] = round(results["mp3_ffmpeg"]["p50_ms"] - results["ulaw_passthrough"]["p50_ms"], 1)
        print(f"MP3+ffmpeg costs {results['mp3_minus_ulaw_p50_ms']} ms more at the median")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
