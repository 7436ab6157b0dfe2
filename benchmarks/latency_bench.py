"""Runtime-added latency of the four hand-offs a voice agent feels, measured with timestamps in one process.

Run:  python benchmarks/latency_bench.py [--samples 400] [--modes fastapi,native,picows] [--dialect twilio]

One real ``VoiceServer`` (FastAPI/uvicorn mode, then the websockets-native mode, then picows if asked for) and one carrier-side client
in the same process, over loopback. ``time.perf_counter()`` on both sides, so no clock skew:

* **mark**: the client writes the mark echo → the flow thread blocked in ``Mark.wait`` wakes up;
* **clear**: the flow calls ``request_clear_buffer()`` while 2 s of audio is being paced out → the client has
  read the ``clear`` message;
* **tts_chunk**: the flow queues a 20 ms chunk (``put_outbound_sync``) with the pump idle → the client has
  read the media message carrying it;
* **frame_to_stt**: the client writes a caller frame (its send time embedded in the payload, as in
  ``load_bench.py``) → ``MockStt`` takes it off the provider queue (``on_frame``).

Each figure includes the loopback socket hop and the client's own parsing (a few tens of µs), so it is an
upper bound on what the runtime adds. The client echoes marks at once (no playout wait): the point is the
runtime's hand-off, not the carrier's buffer. Prints a table, then one final JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HEADER = 18
_TO_ULAW = bytes.maketrans(b"0123456789abcdef", bytes(range(0xF0, 0x100)))
_FROM_ULAW = bytes.maketrans(bytes(range(0xF0, 0x100)), b"0123456789abcdef")
TARGETS_MS = {"mark": 1.0, "clear": 5.0, "tts_chunk": 5.0, "frame_to_stt": 2.0}


def now_us() -> int:
    return int(time.perf_counter() * 1e6) & ((1 << 72) - 1)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


class Client:
    """The carrier's side: streams caller frames, records when agent messages arrive, echoes marks at once."""

    def __init__(self, url: str, dialect: str) -> None:
        from voice_runtime.testing.carriers import carrier_codec

        self.url = url
        self.codec = carrier_codec(dialect) if dialect == "twilio" else carrier_codec(dialect, extra_headers_style="omit")
        self.media_event, self.clear_event, self.echo_event = threading.Event(), threading.Event(), threading.Event()
        self.media_at = self.clear_at = self.echo_sent_at = 0.0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.connected = threading.Event()
        self.stopping = False
        self.errors: list[str] = []

    def start(self) -> None:
        threading.Thread(target=lambda: asyncio.run(self.main()), daemon=True).start()
        if not self.connected.wait(10):
            raise RuntimeError(f"client could not connect: {self.errors}")

    async def main(self) -> None:
        from websockets.asyncio.client import connect

        self.loop = asyncio.get_running_loop()
        async with connect(self.url, ping_interval=None, compression=None, max_size=2**20) as ws:
            for message in self.codec.opening():
                await ws.send(message)
            self.connected.set()
            sender = asyncio.ensure_future(self.stream(ws))
            try:
                await self.receive(ws)
            finally:
                sender.cancel()

    async def stream(self, ws: Any) -> None:
        chunk = 0
        t = time.monotonic()
        silence = b"\xff" * (160 - HEADER)
        while not self.stopping:
            header = f"{now_us():018x}".encode().translate(_TO_ULAW)
            await ws.send(self.codec.media(header + silence, chunk, chunk * 20))
            chunk += 1
            t += 0.02
            await asyncio.sleep(max(0.0, t - time.monotonic()))

    async def receive(self, ws: Any) -> None:
        import orjson

        async for raw in ws:
            arrived = time.perf_counter()
            msg = orjson.loads(raw)
            event = msg.get("event")
            if event in ("media", "playAudio"):
                if not self.media_event.is_set():
                    self.media_at = arrived
                    self.media_event.set()
            elif event in ("mark", "checkpoint"):
                name = msg["mark"]["name"] if event == "mark" else msg["name"]
                echo = self.codec.mark_echo(name)
                self.echo_sent_at = time.perf_counter()
                await ws.send(echo)
            elif event in ("clear", "clearAudio"):
                self.clear_at = arrived
                self.clear_event.set()
                ack = self.codec.clear_ack()
                if ack:
                    await ws.send(ack)


def measure(mode: str, dialect: str, samples: int) -> dict[str, Any]:
    from voice_runtime import VoiceServer
    from voice_runtime.providers.mock import MockStt, MockTts

    stt_ms: list[float] = []
    recording = threading.Event()

    def on_frame(frame: bytes) -> None:
        if recording.is_set():
            sent = int(frame[:HEADER].translate(_FROM_ULAW), 16)
            stt_ms.append((now_us() - sent) / 1000.0)

    def stt_factory() -> Any:
        stt = MockStt(vad=False)
        stt.on_frame = on_frame
        return stt

    results: dict[str, list[float]] = {"mark": [], "clear": [], "tts_chunk": []}
    done = threading.Event()
    client_box: dict[str, Client] = {}
    failures: list[str] = []

    def flow(session: Any) -> None:
        try:
            client = client_box["client"]
            session.send_mark_and_wait("warmup", timeout=5)
            recording.set()
            chunk = b"\x7f" * 160
            for i in range(samples):
                client.media_event.clear()
                t0 = time.perf_counter()
                session.put_outbound_sync(chunk)
                if not client.media_event.wait(2):
                    failures.append("media not received")
                    break
                results["tts_chunk"].append((client.media_at - t0) * 1000)
                mark = session.send_mark("lat")
                mark.wait(5)
                woke = time.perf_counter()
                results["mark"].append((woke - client.echo_sent_at) * 1000)
                if i % 2 == 0:
                    client.media_event.clear()
                    client.clear_event.clear()
                    session.put_outbound_sync(b"\x7f" * 16000)  # 2 s: the pump is pacing when the clear comes
                    client.media_event.wait(2)
                    time.sleep(random.uniform(0.0, 0.05))
                    t0 = time.perf_counter()
                    session.request_clear_buffer()
                    if not client.clear_event.wait(2):
                        failures.append("clear not received")
                        break
                    results["clear"].append((client.clear_at - t0) * 1000)
                time.sleep(random.uniform(0.005, 0.025))  # no phase lock with the 20 ms caller frames
        except Exception as exc:
            failures.append(repr(exc))
        finally:
            recording.clear()
            done.set()

    server = VoiceServer(stt_factory=stt_factory, tts_factory=MockTts, inbound_flow=flow)
    if mode == "native":
        from voice_runtime.server.ws_native import start_native

        handle = start_native(server)
    elif mode == "picows":
        from voice_runtime.server.ws_picows import start_picows

        handle = start_picows(server)
    else:
        handle = server.start()
    try:
        client = Client(handle.ws_url + "/stream", dialect)
        client_box["client"] = client
        client.start()
        done.wait(samples * 0.5 + 60)
        client.stopping = True
    finally:
        handle.stop()
    out: dict[str, Any] = {"mode": mode, "dialect": dialect}
    for name, values in (*results.items(), ("frame_to_stt", stt_ms)):
        out[name] = {
            "n": len(values),
            "p50_ms": _r(pct(values, 50)),
            "p99_ms": _r(pct(values, 99)),
            "max_ms": _r(max(values) if values else None),
            "target_p99_ms": TARGETS_MS[name],
        }
        out[name]["meets_target"] = out[name]["p99_ms"] is not None and out[name]["p99_ms"] <= TARGETS_MS[name]
    out["failures"] = failures
    return out


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=400)
    p.add_argument("--modes", default="fastapi,native")
    p.add_argument("--dialect", choices=("twilio", "plivo"), default="twilio")
    args = p.parse_args()
    import logging

    logging.basicConfig(level=logging.ERROR)
    runs = [measure(mode.strip(), args.dialect, args.samples) for mode in args.modes.split(",") if mode.strip()]
    print(f"{'metric':<14}" + "".join(f"{r['mode'] + ' p50/p99/max ms':>32}" for r in runs) + f"{'target p99':>12}")
    for name in TARGETS_MS:
        cells = "".join(f"{r[name]['p50_ms']:>10} /{r[name]['p99_ms']:>8} /{r[name]['max_ms']:>8}   " for r in runs)
        print(f"{name:<14}{cells}{TARGETS_MS[name]:>10}")
    final = {
        "benchmark": "latency",
        "machine": f"{platform.machine()} {os.cpu_count()} vCPU, Python {platform.python_version()}",
        "samples": args.samples,
        "runs": runs,
    }
    print(json.dumps(final))


if __name__ == "__main__":
    main()
