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
upper bound on what the runtime adds.

``--client process`` (the default) runs the carrier client in a separate process and reads its arrival times
over a pipe: ``perf_counter`` is ``CLOCK_MONOTONIC`` on Linux, one clock for every process, so there is still no
skew. ``--client thread`` runs it as a thread of the server process, as this benchmark did first: then the
client's own Python (parsing every frame, echoing) competes with the server for the one GIL, and the p99 is
partly the client's. ``--client thread,process`` measures both, alternating, in one run. The client echoes marks at once (no playout wait): the point is the
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
TARGETS_MS = {"mark": 1.0, "clear": 1.0, "tts_chunk": 1.0, "frame_to_stt": 1.0}  # issue #19: runtime-added p99 ≤ 1 ms each


def now_us() -> int:
    return int(time.perf_counter() * 1e6) & ((1 << 72) - 1)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


class Client:
    """The carrier's side: streams caller frames, records when agent messages arrive, echoes marks at once."""

    def __init__(self, url: str, dialect: str, notify: Any = None) -> None:
        from voice_runtime.testing.carriers import carrier_codec

        self.url = url
        self.notify = notify  # (kind, perf_counter) per agent message, for a client in its own process
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
            notify = self.notify
            if event in ("media", "playAudio"):
                if notify is not None:
                    notify(("media", arrived))
                elif not self.media_event.is_set():
                    self.media_at = arrived
                    self.media_event.set()
            elif event in ("mark", "checkpoint"):
                name = msg["mark"]["name"] if event == "mark" else msg["name"]
                echo = self.codec.mark_echo(name)
                self.echo_sent_at = time.perf_counter()
                await ws.send(echo)
                if notify is not None:
                    notify(("echo", self.echo_sent_at))
            elif event in ("clear", "clearAudio"):
                if notify is not None:
                    notify(("clear", arrived))
                else:
                    self.clear_at = arrived
                    self.clear_event.set()
                ack = self.codec.clear_ack()
                if ack:
                    await ws.send(ack)


def _client_process(url: str, dialect: str, pipe: Any) -> None:
    """The carrier client alone in its process: every agent message's arrival time goes down ``pipe``."""
    client = Client(url, dialect, notify=pipe.send)
    client.start()
    pipe.send(("connected", 0.0))
    pipe.recv()  # the parent says stop (or closes the pipe)
    client.stopping = True


class ThreadClientView:
    """What the flow waits on, for the client running as a thread of this process."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def reset(self) -> None:
        self.client.media_event.clear()
        self.client.clear_event.clear()

    def media_at(self, timeout: float) -> float | None:
        return self.client.media_at if self.client.media_event.wait(timeout) else None

    def clear_at(self, timeout: float) -> float | None:
        return self.client.clear_at if self.client.clear_event.wait(timeout) else None

    def echo_sent_at(self, timeout: float) -> float | None:
        return self.client.echo_sent_at


class ProcessClientView:
    """The same, for the client in its own process: its arrival times are read off the pipe."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self.lock = threading.Lock()  # the flow thread and the parent's "connected" wait both read
        self.early: list[tuple[str, float]] = []  # read while waiting for "connected": the flow's first echo

    def reset(self) -> None:
        with self.lock:
            self.early.clear()
            while self.pipe.poll(0):  # notifications of earlier messages (the 2 s bed's frames)
                self.pipe.recv()

    def wait_connected(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.lock:
            while self.pipe.poll(max(0.0, deadline - time.monotonic())):
                got, at = self.pipe.recv()
                if got == "connected":
                    return True
                self.early.append((got, at))
        return False

    def _next(self, kind: str, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        with self.lock:
            for i, (got, at) in enumerate(self.early):
                if got == kind:
                    del self.early[: i + 1]
                    return float(at)
            self.early.clear()
            while self.pipe.poll(max(0.0, deadline - time.monotonic())):
                got, at = self.pipe.recv()
                if got == kind:
                    return float(at)
        return None

    def media_at(self, timeout: float) -> float | None:
        return self._next("media", timeout)

    def clear_at(self, timeout: float) -> float | None:
        return self._next("clear", timeout)

    def echo_sent_at(self, timeout: float) -> float | None:
        return self._next("echo", timeout)


class BareMark:
    def __init__(self) -> None:
        self.echoed = threading.Event()

    def wait(self, timeout: float) -> bool:
        return self.echoed.wait(timeout)


class BareSession:
    """The same four hand-offs with no runtime: the least any server must do (the baseline rows).

    A flow thread hands each outbound message to the event loop with ``call_soon_threadsafe`` and a send, as a
    bare websockets or picows server written by hand would; caller frames are parsed (orjson, base64) and go
    through one ``asyncio.Queue`` to a consumer task, as an STT client's queue does. No pacing, budget, state
    machine or events: what is left of our figures over these is what the runtime adds.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, send: Any, on_frame: Any) -> None:
        self.loop, self._send, self._on_frame = loop, send, on_frame
        self.sid = ""
        self.marks: dict[str, BareMark] = {}
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._count = 0

    # flow thread side
    def _post(self, message: dict[str, Any]) -> None:
        import orjson

        self.loop.call_soon_threadsafe(self._send, orjson.dumps(message))

    def put_outbound_sync(self, ulaw: bytes) -> None:
        import base64

        for i in range(0, len(ulaw), 160):
            self._post({"event": "media", "streamSid": self.sid, "media": {"payload": base64.b64encode(ulaw[i : i + 160]).decode()}})

    def send_mark(self, label: str) -> BareMark:
        self._count += 1
        name = f"{label}-{self._count}"
        mark = self.marks[name] = BareMark()
        self._post({"event": "mark", "streamSid": self.sid, "mark": {"name": name}})
        return mark

    def send_mark_and_wait(self, label: str, timeout: float) -> bool:
        return self.send_mark(label).wait(timeout)

    def request_clear_buffer(self) -> None:
        self._post({"event": "clear", "streamSid": self.sid})

    # loop side
    def on_message(self, raw: str | bytes) -> bool:
        """One carrier message; True once ``start`` is in (the flow may begin)."""
        import base64

        import orjson

        msg = orjson.loads(raw)
        event = msg.get("event")
        if event == "media":
            self.queue.put_nowait(base64.b64decode(msg["media"]["payload"]))
        elif event == "mark":
            mark = self.marks.pop(msg["mark"]["name"], None)
            if mark is not None:
                mark.echoed.set()
        elif event == "start":
            self.sid = msg["start"]["streamSid"]
            return True
        return False

    async def consume(self) -> None:
        while True:
            self._on_frame(await self.queue.get())


def _start_bare(kind: str, flow: Any, on_frame: Any) -> tuple[str, Any]:
    """A bare websockets or picows server on its own loop thread; returns its URL and a stop function."""
    ready: dict[str, Any] = {}
    started = threading.Event()

    def begin(session: BareSession) -> None:
        asyncio.ensure_future(session.consume())
        threading.Thread(target=flow, args=(session,), daemon=True).start()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        ready["stop"] = lambda: loop.call_soon_threadsafe(stop.set)
        if kind == "bare-websockets":
            from websockets.asyncio.server import serve

            async def handler(ws: Any) -> None:
                session = BareSession(loop, lambda data: asyncio.ensure_future(ws.send(data.decode())), on_frame)
                async for message in ws:
                    if session.on_message(message):
                        begin(session)

            async with serve(handler, "127.0.0.1", 0, compression=None, ping_interval=None) as server:
                ready["port"] = server.sockets[0].getsockname()[1]
                started.set()
                await stop.wait()
        else:
            from picows import WSListener, WSMsgType, ws_create_server

            class Listener(WSListener):  # type: ignore[misc]
                def on_ws_connected(self, transport: Any) -> None:
                    self.session = BareSession(loop, lambda data: transport.send(WSMsgType.TEXT, data), on_frame)

                def on_ws_frame(self, transport: Any, frame: Any) -> None:
                    if frame.msg_type is WSMsgType.TEXT and self.session.on_message(frame.get_payload_as_bytes()):
                        begin(self.session)

            server = await ws_create_server(lambda _request: Listener(), "127.0.0.1", 0, enable_auto_ping=False)
            ready["port"] = server.sockets[0].getsockname()[1]
            started.set()
            await stop.wait()
            server.close()

    def run() -> None:
        try:
            import uvloop

            factory: Any = uvloop.new_event_loop
        except ImportError:  # pragma: no cover
            factory = None
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(main())

    threading.Thread(target=run, daemon=True).start()
    if not started.wait(10):
        raise RuntimeError(f"{kind} did not start")
    return f"ws://127.0.0.1:{ready['port']}/stream", ready["stop"]


def measure(mode: str, dialect: str, samples: int, client_kind: str = "process") -> dict[str, Any]:
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
    client_box: dict[str, Any] = {}
    failures: list[str] = []

    def flow(session: Any) -> None:
        try:
            client = client_box["view"]
            session.send_mark_and_wait("warmup", timeout=5)
            client.echo_sent_at(5)
            recording.set()
            chunk = b"\x7f" * 160
            for i in range(samples):
                client.reset()
                t0 = time.perf_counter()
                session.put_outbound_sync(chunk)
                media_at = client.media_at(2)
                if media_at is None:
                    failures.append("media not received")
                    break
                results["tts_chunk"].append((media_at - t0) * 1000)
                mark = session.send_mark("lat")
                mark.wait(5)
                woke = time.perf_counter()
                echo_sent_at = client.echo_sent_at(2)
                if echo_sent_at is None:
                    failures.append("mark echo not reported")
                    break
                results["mark"].append((woke - echo_sent_at) * 1000)
                if i % 2 == 0:
                    client.reset()
                    session.put_outbound_sync(b"\x7f" * 16000)  # 2 s: the pump is pacing when the clear comes
                    client.media_at(2)
                    time.sleep(random.uniform(0.0, 0.05))
                    client.reset()
                    t0 = time.perf_counter()
                    session.request_clear_buffer()
                    clear_at = client.clear_at(2)
                    if clear_at is None:
                        failures.append("clear not received")
                        break
                    results["clear"].append((clear_at - t0) * 1000)
                time.sleep(random.uniform(0.005, 0.025))  # no phase lock with the 20 ms caller frames
        except Exception as exc:
            failures.append(repr(exc))
        finally:
            recording.clear()
            done.set()

    if mode.startswith("bare-"):
        url, stop = _start_bare(mode, flow, on_frame)
        handle: Any = type("BareHandle", (), {"ws_url": url[: -len("/stream")], "stop": staticmethod(stop)})()
    else:
        handle = _start_server(VoiceServer(stt_factory=stt_factory, tts_factory=MockTts, inbound_flow=flow), mode)
    process = None
    try:
        url = handle.ws_url + "/stream"
        if client_kind == "process":
            import multiprocessing

            context = multiprocessing.get_context("spawn")  # the server's threads are running: never fork
            ours, theirs = context.Pipe()
            process = context.Process(target=_client_process, args=(url, dialect, theirs), daemon=True)
            view = ProcessClientView(ours)
            client_box["view"] = view
            process.start()
            if not view.wait_connected(30):
                raise RuntimeError("client process did not connect")
            done.wait(samples * 0.5 + 60)
            ours.send("stop")
        else:
            client = Client(url, dialect)
            client_box["view"] = ThreadClientView(client)
            client.start()
            done.wait(samples * 0.5 + 60)
            client.stopping = True
    finally:
        handle.stop()
        if process is not None:
            process.join(10)
            if process.is_alive():
                process.kill()
    out: dict[str, Any] = {"mode": mode, "dialect": dialect, "client": client_kind}
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


def _start_server(server: Any, mode: str) -> Any:
    if mode == "native":
        from voice_runtime.server.ws_native import start_native

        return start_native(server)
    if mode == "picows":
        from voice_runtime.server.ws_picows import start_picows

        return start_picows(server)
    return server.start()


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=400)
    p.add_argument("--modes", default="fastapi,native")
    p.add_argument("--dialect", choices=("twilio", "plivo"), default="twilio")
    p.add_argument("--client", default="process", help="process, thread, or both comma-separated (alternated per mode)")
    p.add_argument("--rounds", type=int, default=1, help="repeat every (mode, client) pair, interleaved")
    args = p.parse_args()
    import logging

    logging.basicConfig(level=logging.ERROR)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    clients = [c.strip() for c in args.client.split(",") if c.strip()]
    runs = [measure(mode, args.dialect, args.samples, kind) for _ in range(args.rounds) for mode in modes for kind in clients]
    label = (lambda r: f"{r['mode']}/{r['client']}") if len(clients) > 1 else (lambda r: r["mode"])
    print(f"{'metric':<14}" + "".join(f"{label(r) + ' p50/p99/max ms':>32}" for r in runs) + f"{'target p99':>12}")
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
