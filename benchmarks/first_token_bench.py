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
* ``azure_per_sentence`` — the real ``AzureTts`` provider (one synthesis per sentence: Azure has no
  streaming-input API) over the SDK seam with the package's SDK fake (``voice_runtime.testing.fake_azure_speech``,
  ``azure`` extra). **The Azure service is modelled, not measured**: the fake synthesizer fires its
  ``synthesizing`` events from a real foreign thread, the first one ``--model-latency`` seconds after
  ``speak_text_async``, then generates at ``--speed`` × real time, with audio as long as the fake ElevenLabs'
  for the same text (the shared model in ``voice_runtime.testing.speech_timing``). The figure is the runtime's
  and the provider's own cost on top of that model, comparable with ``elevenlabs_per_sentence``; a real
  service's latency would replace the model's. Skipped if the SDK is not installed.
* ``local_piper`` — the offline Piper voice (``local`` extra), per sentence; skipped if it is not installed.

    python benchmarks/first_token_bench.py [--runs 5] [--token-ms 30] [--model-latency 0.1] [--speed 4]
        [--paths mock,azure_per_sentence]
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


def run_path(factory: Callable[[], Any], runs: int, token_s: float, answer: str = ANSWER) -> dict[str, list[float]]:
    """One call on a fresh server: a warm-up utterance, then ``runs`` streamed answers, each played out in full."""
    firsts: list[float] = []
    returns: list[float] = []
    done = threading.Event()

    def llm(box: list[float]) -> Iterator[str]:
        for index, token in enumerate(tokens_of(answer)):
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


def azure_factory(model_latency: float, speed: float) -> Callable[[], Any]:
    """The real ``AzureTts`` over the SDK fake with the service model (one fake SDK per call, like one client).

    Raises ``ImportError`` when the Azure Speech SDK (``azure`` extra) is not installed: the fake carries the
    SDK's own enum members.
    """
    from voice_runtime.providers.azure_tts import AzureTts
    from voice_runtime.testing.fake_azure_speech import FakeSpeechSdk, SynthesisTiming

    timing = SynthesisTiming(first_chunk_latency=model_latency, realtime_factor=speed)
    return lambda: AzureTts(sdk=FakeSpeechSdk(timing=timing))


PATHS = ("mock", "elevenlabs_stream_input", "elevenlabs_per_sentence", "azure_per_sentence", "local_piper")


def run_paths(
    names: tuple[str, ...] = PATHS,
    *,
    runs: int = 5,
    token_ms: float = 30.0,
    model_latency: float = 0.1,
    speed: float = 4.0,
    answer: str = ANSWER,
    report: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure ``names`` side by side in this one process; a path whose extra is missing is reported skipped.

    ``answer`` is the scripted LLM text (a shorter one only shortens the play-out between runs; tests use it).
    """
    unknown = set(names) - set(PATHS)
    if unknown:
        raise ValueError(f"unknown paths {sorted(unknown)}; choose from {', '.join(PATHS)}")
    token_s = token_ms / 1000
    results: dict[str, Any] = {
        "runs": runs, "token_ms": token_ms, "model_latency_s": model_latency, "speed_x_realtime": speed,
    }
    paths: dict[str, Callable[[], Any]] = {"mock": lambda: create_tts("mock")}

    from voice_runtime.providers.elevenlabs_tts import ElevenLabsTts
    from voice_runtime.testing.fake_elevenlabs import FakeElevenLabs

    with FakeElevenLabs("bench-key", tts_realtime_factor=speed, tts_first_byte_delay=model_latency) as fake:
        common = {"api_key": "bench-key", "base_url": fake.http_url, "ws_base_url": fake.ws_url}
        paths["elevenlabs_stream_input"] = lambda: ElevenLabsTts(**common)
        paths["elevenlabs_per_sentence"] = lambda: PerSentence(ElevenLabsTts(**common))
        if "azure_per_sentence" in names:
            try:
                paths["azure_per_sentence"] = azure_factory(model_latency, speed)
            except ImportError as exc:  # the azure extra is optional
                results["azure_per_sentence"] = f"skipped: {type(exc).__name__}: {exc}"
        if "local_piper" in names:
            try:
                local = create_tts("local")
                paths["local_piper"] = lambda: local
            except Exception as exc:  # the local extra is optional
                results["local_piper"] = f"skipped: {type(exc).__name__}: {exc}"
        for name in names:
            factory = paths.get(name)
            if factory is None:
                report(f"{name:26s} {results[name]}")
                continue
            measured = run_path(factory, runs, token_s, answer)
            results[name] = {key: summary(values) for key, values in measured.items()}
            line = results[name]["first_token_to_wire"]
            ret = results[name]["speak_return"]
            report(
                f"{name:26s} first token -> wire: median {line['median_ms']:8.1f} ms (min {line['min_ms']:.1f}, "
                f"max {line['max_ms']:.1f})   speak() returned in median {ret['median_ms']:.3f} ms"
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--token-ms", type=float, default=30.0)
    parser.add_argument(
        "--model-latency", type=float, default=0.1, help="fake ElevenLabs / modelled Azure time to first audio (s)"
    )
    parser.add_argument(
        "--speed", type=float, default=4.0, help="fake ElevenLabs / modelled Azure generation speed, x real time"
    )
    parser.add_argument("--paths", default=",".join(PATHS), help="comma-separated subset of: " + ", ".join(PATHS))
    args = parser.parse_args()
    names = tuple(name.strip() for name in args.paths.split(",") if name.strip())
    results = run_paths(names, runs=args.runs, token_ms=args.token_ms, model_latency=args.model_latency, speed=args.speed)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
