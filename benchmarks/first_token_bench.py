"""First token → first audio on the wire, per TTS provider, for ``session.speak(iterable_of_text)``.

An "LLM" yields a scripted answer token by token (``--token-ms`` apart, default 30 ms ≈ 33 tokens/s). The flow
calls ``session.speak(tokens())``, which returns at once (the call's speech worker drives the tokens into the
provider). We measure, on one clock, from the moment the first token is yielded to the moment the
SimulatedPhone receives the first media frame of that utterance over the real server's socket; and how long
``speak()`` itself took to return.

Paths, side by side in one run:

* ``mock`` — the mock TTS (instant synthesis), chunked per sentence: the floor is "the first sentence is
  complete" (token pacing), plus the runtime.
* ``elevenlabs_stream_input`` — ``ElevenLabsTts.synthesize_stream`` (stream-input WebSocket, token by token)
  against the loopback fake ElevenLabs (simulated first-byte latency and generation speed).
* ``elevenlabs_per_sentence`` — the same client and fake, but with streaming input hidden, so the runtime
  falls back to one HTTP synthesis per sentence.
* ``local_piper`` — the offline Piper voice (``local`` extra), per sentence; skipped if it is not installed.

Azure is not measured: its SDK needs the real service (tests use an SDK fake that has no timing model).

    python benchmarks/first_token_bench.py [--runs 5] [--token-ms 30] [--model-latency 0.1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from voice_runtime import VoiceServer, create_tts
from voice_runtime.testing import SimulatedPhone

ANSWER = (
    "Sure, I can help with that. Your order number four two seven is ready for pickup at the front counter, "
    "and the store is open until nine tonight."
)


def tokens_of(text: str) -> list[str]:
    words = text.split(" ")
    return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]


def run_path(factory: Callable[[], Any], runs: int, token_s: float) -> dict[str, list[float]]:
    firsts: list[float] = []
    returns: list[float] = []
    done = threading.Event()

    def llm(box: list[float]) -> Iterator[str]:
        for index, token in enumerate(tokens_of(ANSWER)):
            if index:
                time.sleep(token_s)  # the simulated model's pacing (a benchmark input, not a settle-sleep)
            else:
                box.append(time.monotonic())
            yield token

    def flow(session: Any) -> None:
        try:
            session.speak("Warm up.", wait=True, timeout=60)  # connections, models and caches warm, like a live call
            for _ in range(runs):
                box: list[float] = []
                called = time.monotonic()
                result = session.speak(llm(box))
                returns.append(time.monotonic() - called)
                result.wait(120)
                firsts.append(box[0])
        finally:
            done.set()

    server = VoiceServer(tts_factory=factory, inbound_flow=flow)
    with server.start() as running:
        phone = SimulatedPhone(running.ws_url + "/stream").connect()
        try:
            if not done.wait(120 + 60 * runs):
                raise RuntimeError("benchmark flow did not finish")
            latencies = [phone.wait_for("media", timeout=5, after=start).at - start for start in firsts]
        finally:
            phone.close()
    return {"first_token_to_wire": latencies, "speak_return": returns}


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "min_ms": round(ordered[0] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


class PerSentence:
    """Hides a provider's streaming-input API, so the runtime chunks per sentence (comparison only)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.on_error = None

    def synthesize(self, text: str, stop_event: threading.Event) -> Iterator[bytes]:
        return self.inner.synthesize(text, stop_event)

    def close(self) -> None:
        getattr(self.inner, "close", lambda: None)()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--token-ms", type=float, default=30.0)
    parser.add_argument("--model-latency", type=float, default=0.1, help="fake ElevenLabs time to first byte (s)")
    parser.add_argument("--speed", type=float, default=4.0, help="fake ElevenLabs generation speed, x real time")
    args = parser.parse_args()
    token_s = args.token_ms / 1000
    results: dict[str, Any] = {"runs": args.runs, "token_ms": args.token_ms, "model_latency_s": args.model_latency}
    paths: dict[str, Callable[[], Any]] = {"mock": lambda: create_tts("mock")}

    from voice_runtime.providers.elevenlabs_tts import ElevenLabsTts
    from voice_runtime.testing.fake_elevenlabs import FakeElevenLabs

    with FakeElevenLabs("bench-key", tts_realtime_factor=args.speed, tts_first_byte_delay=args.model_latency) as fake:
        common = {"api_key": "bench-key", "base_url": fake.http_url, "ws_base_url": fake.ws_url}
        paths["elevenlabs_stream_input"] = lambda: ElevenLabsTts(**common)
        paths["elevenlabs_per_sentence"] = lambda: PerSentence(ElevenLabsTts(**common))
        try:
            local = create_tts("local")
            paths["local_piper"] = lambda: local
        except Exception as exc:  # the local extra is optional
            results["local_piper"] = f"skipped: {type(exc).__name__}: {exc}"
        for name, factory in paths.items():
            measured = run_path(factory, args.runs, token_s)
            results[name] = {key: summary(values) for key, values in measured.items()}
            line = results[name]["first_token_to_wire"]
            ret = results[name]["speak_return"]
            print(
                f"{name:26s} first token -> wire: median {line['median_ms']:8.1f} ms (min {line['min_ms']:.1f}, "
                f"max {line['max_ms']:.1f})   speak() returned in median {ret['median_ms']:.3f} ms"
            )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
