"""Echo benchmark: server CPU per call-second when every caller frame is echoed back, for every server mode of
ours against a bare ``websockets`` echo and a bare ``picows`` echo — side by side, in one run.

Run:  python benchmarks/echo_bench.py                          # 40 and 200 calls, 3 runs each, all servers
      python benchmarks/echo_bench.py --calls 40,200,500 --runs 3 --duration 10
      python benchmarks/echo_bench.py --servers vr-picows-loop,bare-picows --calls 200
      python benchmarks/echo_bench.py --base-tree /work/wt/base --servers vr-picows-listener,bare-picows --calls 200

The workload (the same load generator for every server): N simulated Twilio calls on raw loopback sockets,
each sending one 20 ms μ-law frame every 20 ms; every frame carries the call's frame counter in its first
bytes, and the generator matches what comes back byte for byte, in order (0 frames lost, 0 corrupt is a
precondition of every row). The measured figure is the server process's CPU (utime + stime from ``/proc``)
over the window, divided by calls × window seconds, also given as its user-mode and system parts (``user``,
``sys``: the Python and C code run, and mostly the socket calls). The generator runs in its own process and
its CPU is reported too (it shares the 2 cores).

Servers:

* ``bare-websockets``: ``websockets`` + uvloop + orjson, a 25-line echo with no runtime at all;
* ``bare-picows``: ``picows`` + uvloop + orjson, the same echo (on ``aiofastnet``'s sockets where it is installed,
  as ``ws_create_server`` does by default: reads are ``recv`` calls from picows' side);
* ``bare-picows-uvloop``: the same echo on uvloop's own ``create_server`` (``use_aiofastnet=False``), the network
  layer our picows mode listens with (``server/picows_guard.py``): reads are libuv's ``read`` calls. Not one of
  the issue's rows; it tells the network layer's share of a difference from the code's;
* ``bare-picows-decoded``: the bare picows echo plus the least a runtime must do before a flow sees audio:
  check the message is this stream's inbound media, decode the base64 to bytes (strict) and encode the reply's
  base64 again (a floor for ours, which also budgets, paces, and runs the session; not one of the issue's rows);
* ``vr-<mode>-thread``: a ``VoiceServer`` whose flow thread echoes through the public API
  (``for chunk in session.audio_in(): session.send_audio(chunk)``);
* ``vr-<mode>-loop``: the same echo written on the event loop (``async for chunk in session.audio_in_async()``);
* ``vr-<mode>-listener``: the echo as an inline audio listener (``session.add_audio_listener(session.send_audio)``);
* ``<mode>`` is ``fastapi`` (the default), ``native`` (websockets) or ``picows`` (the ``[fast]`` extra).

Rounds interleave the servers (run 1 of every server, then run 2 ...) so that noise from other processes on a
shared machine spreads over all rows alike. The last line printed is one JSON object.

Before/after in one run: ``--base-tree PATH`` (another checkout, e.g. ``git worktree add --detach PATH main``)
adds a ``base:<kind>`` row for every ``vr-*`` server, served by *that* tree's code (its own ``echo_bench.py``
server role, its ``voice_runtime`` first on the path). Each base row runs right next to its branch row, the
order of the two alternating per round, and the summary gives ``x base`` (row median / base median).
``--also-tree LABEL=PATH`` (repeatable) adds more checkouts the same way, e.g. an intermediate commit, so that
each change of a series gets its before/after in the same run.

``--pin``: the server on the last CPU, the generator on the first (``sched_setaffinity`` before each process
starts, so every thread inherits it). Unpinned on loopback, the scheduler tends to wake the generator on the
server's CPU (the server's send is what wakes it), where it preempts the server several hundred times a second
and takes its caches; pinned rows are steadier. Off by default, so that rows stay comparable with earlier runs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from load_bench import cpu_seconds, cpu_split, free_port, ws_frame  # noqa: E402

SERVERS = (
    "bare-picows",
    "bare-picows-decoded",
    "bare-picows-uvloop",
    "bare-websockets",
    "vr-picows-listener",
    "vr-picows-loop",
    "vr-picows-thread",
    "vr-picows-loop-noguard",  # the picows mode on ws_create_server, without server/picows_guard.py (before row)
    "vr-native-loop",
    "vr-native-thread",
    "vr-fastapi-loop",
    "vr-fastapi-thread",
)
FRAME = 160
MEDIA = '{"event":"media","sequenceNumber":"%d","media":{"track":"inbound","chunk":"%d","timestamp":"%d","payload":"%s"},"streamSid":"%s"}'


# ===================================================================================== server role
def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()


async def _bare_websockets(port: int) -> None:
    import orjson
    from websockets.asyncio.server import serve

    async def handler(ws: Any) -> None:
        sid = ""
        async for message in ws:
            msg = orjson.loads(message)
            event = msg.get("event")
            if event == "media":
                await ws.send(orjson.dumps({"event": "media", "streamSid": sid, "media": {"payload": msg["media"]["payload"]}}).decode())
            elif event == "start":
                sid = msg["start"]["streamSid"]

    async with serve(handler, "127.0.0.1", port, compression=None, ping_interval=None):
        print("READY", flush=True)
        await asyncio.Event().wait()


async def _bare_picows(port: int, *, use_aiofastnet: bool | None = None) -> None:
    import orjson
    from picows import WSListener, WSMsgType, ws_create_server

    class Echo(WSListener):  # type: ignore[misc]
        sid = ""

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type is not WSMsgType.TEXT:
                return
            msg = orjson.loads(frame.get_payload_as_bytes())
            event = msg.get("event")
            if event == "media":
                transport.send(WSMsgType.TEXT, orjson.dumps({"event": "media", "streamSid": self.sid, "media": {"payload": msg["media"]["payload"]}}))
            elif event == "start":
                self.sid = msg["start"]["streamSid"]

    await ws_create_server(lambda _request: Echo(), "127.0.0.1", port, enable_auto_ping=False, use_aiofastnet=use_aiofastnet)
    print("READY", flush=True)
    await asyncio.Event().wait()


async def _bare_picows_decoded(port: int) -> None:
    from binascii import a2b_base64, b2a_base64

    import orjson
    from picows import WSListener, WSMsgType, ws_create_server

    class DecodingEcho(WSListener):  # type: ignore[misc]
        sid = ""
        prefix = b""

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type is not WSMsgType.TEXT:
                return
            msg = orjson.loads(frame.get_payload_as_bytes())
            event = msg.get("event")
            if event == "media":
                media = msg["media"]
                if msg["streamSid"] == self.sid and media["track"] == "inbound":
                    audio = a2b_base64(media["payload"], strict_mode=True)  # the bytes a flow would get
                    transport.send(WSMsgType.TEXT, self.prefix + b2a_base64(audio, newline=False) + b'"}}')
            elif event == "start":
                self.sid = msg["start"]["streamSid"]
                self.prefix = b'{"event":"media","streamSid":' + orjson.dumps(self.sid) + b',"media":{"payload":"'

    await ws_create_server(lambda _request: DecodingEcho(), "127.0.0.1", port, enable_auto_ping=False)
    print("READY", flush=True)
    await asyncio.Event().wait()


async def _loop_echo(session: Any) -> None:
    async for chunk in session.audio_in_async():
        session.send_audio(chunk)


def start_loop_echo(session: Any, style: str) -> None:
    """The echo written on the event loop (``on_call_started``): ``loop`` = ``async for`` over the caller's audio,
    ``listener`` = an inline audio listener; any other style (``thread``) starts nothing here."""
    if style == "loop":
        asyncio.ensure_future(_loop_echo(session))
    elif style == "listener":
        session.add_audio_listener(session.send_audio)


def _voice_server(kind: str) -> Any:
    from voice_runtime import VoiceServer

    mode, _, style = kind[len("vr-") :].partition("-")

    def thread_echo(session: Any) -> None:
        with session.audio_in(timeout=120) as caller:
            for chunk in caller:
                session.send_audio(chunk)

    server = VoiceServer(inbound_flow=thread_echo if style == "thread" else None,
                         on_call_started=lambda session: start_loop_echo(session, style))
    return server, mode


def _serve_picows_without_guard() -> None:
    """The picows mode as it listened before the connection guard: ``ws_create_server`` and picows' own
    protocol (no cap, picows' uncounted handshake timeout) — the before row for the guard's per-frame cost."""
    from picows import ws_create_server

    from voice_runtime.server import ws_picows

    async def listen(server: Any, host: str, port: int, sock: Any, reuse_port: bool) -> Any:
        return await ws_create_server(
            ws_picows._listener_factory(server), host, port,
            max_frame_size=server.connection_config.hard_max_inbound_message,
            websocket_handshake_timeout=server.limits.header_timeout, enable_auto_ping=False,
        )

    ws_picows._listen = listen  # type: ignore[assignment]


def server_main(kind: str, port: int) -> None:
    if kind == "bare-websockets":
        with asyncio.Runner(loop_factory=_new_loop) as runner:
            runner.run(_bare_websockets(port))
        return
    if kind in ("bare-picows", "bare-picows-uvloop", "bare-picows-decoded"):
        with asyncio.Runner(loop_factory=_new_loop) as runner:
            if kind == "bare-picows-decoded":
                runner.run(_bare_picows_decoded(port))
            else:
                runner.run(_bare_picows(port, use_aiofastnet=False if kind == "bare-picows-uvloop" else None))
        return
    noguard = kind.endswith("-noguard")
    server, mode = _voice_server(kind.removesuffix("-noguard"))
    if noguard:
        _serve_picows_without_guard()
    if mode == "fastapi":
        server.start(port=port)
    elif mode == "native":
        from voice_runtime.server.ws_native import start_native

        start_native(server, port=port)
    else:
        from voice_runtime.server.ws_picows import start_picows

        start_picows(server, port=port)
    print("READY", flush=True)
    threading.Event().wait()


# ===================================================================================== generator role
class EchoCall(asyncio.Protocol):
    """One simulated Twilio call on a raw socket; checks that what comes back is what it sent, in order."""

    def __init__(self, idx: int, port: int) -> None:
        self.idx, self.port = idx, port
        self.sid = f"MZ{idx:032d}"
        self.transport: asyncio.Transport | None = None
        self.ready = asyncio.get_running_loop().create_future()
        self.buf = bytearray()
        self.open = False
        self.sent = bytearray()  # every payload byte sent
        self.received = bytearray()
        self.seq = 1
        self.frames = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            (f"GET /stream HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed during handshake"))

    def data_received(self, data: bytes) -> None:
        import orjson

        buf = self.buf
        buf += data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end])
            del buf[: end + 4]
            if b" 101 " not in head.split(b"\r\n", 1)[0]:
                self.ready.set_exception(ConnectionError(head[:80].decode("latin-1")))
                return
            self.open = True
            self.ready.set_result(None)
        while len(buf) >= 2:
            n = buf[1] & 0x7F
            pos = 2
            if n == 126:
                if len(buf) < 4:
                    return
                n, pos = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n, pos = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < pos + n:
                return
            opcode = buf[0] & 0x0F
            payload = bytes(buf[pos : pos + n])
            del buf[: pos + n]
            if opcode == 1:
                msg = orjson.loads(payload)
                if msg.get("event") == "media":
                    self.received += base64.b64decode(msg["media"]["payload"])
            elif opcode == 8:
                self.open = False
                return

    def start(self) -> None:
        assert self.transport is not None
        self.transport.write(ws_frame(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})))
        start = {"event": "start", "sequenceNumber": "1", "streamSid": self.sid,
                 "start": {"streamSid": self.sid, "callSid": f"CA{self.idx:032d}", "accountSid": "AC0", "tracks": ["inbound"],
                           "customParameters": {}, "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}
        self.transport.write(ws_frame(json.dumps(start)))

    def send_frame(self) -> None:
        if not self.open or self.transport is None:
            return
        self.frames += 1
        self.seq += 1
        # The frame counter in the first 8 bytes (as hex nibbles), silence after: every frame is unique.
        frame = f"{self.idx:04x}{self.frames:04x}".encode() + b"\xff" * (FRAME - 8)
        self.sent += frame
        payload = base64.b64encode(frame).decode()
        self.transport.write(ws_frame(MEDIA % (self.seq, self.frames, self.frames * 20, payload, self.sid)))


async def generator(port: int, calls: int, ramp: float, warmup: float) -> None:
    loop = asyncio.get_running_loop()
    active: list[EchoCall] = []
    for idx in range(calls):
        _, call = await loop.create_connection(lambda idx=idx: EchoCall(idx, port), "127.0.0.1", port)
        await asyncio.wait_for(call.ready, 10)
        call.start()
        active.append(call)
        if ramp > 0:
            await asyncio.sleep(1.0 / ramp)  # pacing the ramp: the benchmark's own clock, not a settle wait
    sending = True
    start = time.monotonic()

    async def ticker() -> None:
        tick = 0
        while sending:
            tick += 1
            for call in active:
                call.send_frame()
            delay = start + tick * 0.02 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    task = asyncio.ensure_future(ticker())
    await asyncio.sleep(warmup)
    print("WINDOW", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)  # the orchestrator ends the window
    sending = False
    await task
    # Let the echoes of the last frames arrive, then compare byte for byte.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(len(c.received) < len(c.sent) for c in active):
        await asyncio.sleep(0.05)
    lost = sum(max(0, len(c.sent) - len(c.received)) for c in active) // FRAME
    corrupt = sum(1 for c in active if bytes(c.received[: len(c.sent)]) != bytes(c.sent[: len(c.received)]))
    for call in active:
        if call.transport is not None:
            call.transport.close()
    print(json.dumps({"frames_sent": sum(c.frames for c in active), "frames_lost": lost, "corrupt_calls": corrupt}), flush=True)


# ===================================================================================== orchestrator
BASE_PREFIX = "base:"


def _spawn(args: list[str], tree: str | None = None, cpu: int | None = None) -> subprocess.Popen[str]:
    """This script in another role; with ``tree``, that checkout's copy of it and its ``voice_runtime``; with
    ``cpu``, pinned to that CPU from before it starts (``--pin``: any tree's code, every thread).

    The pin is this thread's own affinity while it forks, which the child inherits (no ``preexec_fn``, which is
    unsafe with the reader threads this orchestrator runs)."""
    env, cwd, script = None, None, __file__
    if tree is not None:
        env, cwd, script = {**os.environ, "PYTHONPATH": tree}, tree, str(Path(tree) / "benchmarks" / "echo_bench.py")
    previous = os.sched_getaffinity(0)
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    try:
        return subprocess.Popen([sys.executable, script, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                env=env, cwd=cwd)
    finally:
        if cpu is not None:
            os.sched_setaffinity(0, previous)


def _pin_cpus(pin: bool) -> tuple[int | None, int | None]:
    """(server CPU, generator CPU) for ``--pin``: the last and the first the process may use; (None, None) off."""
    if not pin:
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("--pin needs at least 2 CPUs (one for the server, one for the generator)")
    return cpus[-1], cpus[0]


def _expect(proc: subprocess.Popen[str], prefix: str, timeout: float) -> str:
    result: dict[str, str] = {}

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(prefix):
                result["line"] = line.strip()
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    if "line" not in result:
        raise RuntimeError(f"no {prefix!r} from {proc.args}")
    return result["line"]


def run_once(
    kind: str, calls: int, duration: float, warmup: float, trees: dict[str, str] | None = None, pin: bool = False
) -> dict[str, Any]:
    port = free_port()
    tree = None
    served = kind
    label, sep, rest = kind.partition(":")
    if sep:
        if not trees or label not in trees:
            raise SystemExit(f"{kind}: no tree labelled {label!r} (--base-tree / --also-tree)")
        tree, served = trees[label], rest
    server_cpu, gen_cpu = _pin_cpus(pin)
    server = _spawn(["--role", "server", "--kind", served, "--port", str(port)], tree, server_cpu)
    gen = None
    try:
        _expect(server, "READY", 30)
        gen = _spawn(["--role", "gen", "--port", str(port), "--calls", str(calls), "--warmup", str(warmup)], cpu=gen_cpu)
        _expect(gen, "WINDOW", 120)
        cpus = {"server_cpus": sorted(os.sched_getaffinity(server.pid)), "generator_cpus": sorted(os.sched_getaffinity(gen.pid))}
        (u0, k0), g0, t0 = cpu_split(server.pid), cpu_seconds(gen.pid), time.monotonic()
        time.sleep(duration)  # the measurement window itself
        (u1, k1), g1, t1 = cpu_split(server.pid), cpu_seconds(gen.pid), time.monotonic()
        assert gen.stdin is not None
        gen.stdin.write("stop\n")
        gen.stdin.flush()
        result = json.loads(_expect(gen, "{", 60))
        window = t1 - t0
        return {
            "server": kind,
            "calls": calls,
            "server_ms_per_call_s": round((u1 - u0 + k1 - k0) * 1000 / (calls * window), 3),
            "server_user_ms_per_call_s": round((u1 - u0) * 1000 / (calls * window), 3),
            "server_sys_ms_per_call_s": round((k1 - k0) * 1000 / (calls * window), 3),
            "generator_cpu_pct": round((g1 - g0) * 100 / window, 1),
            "pinned": pin,
            **cpus,
            **result,
        }
    finally:
        for proc in (gen, server):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(5)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--role", choices=("orchestrate", "server", "gen"), default="orchestrate")
    p.add_argument("--kind", default="")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--calls", default="40,200")
    p.add_argument("--servers", default=",".join(SERVERS))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--ramp", type=float, default=200.0, help="new calls per second")
    p.add_argument("--out", default="")
    p.add_argument("--base-tree", default="", help="another checkout: adds a base:<kind> row per vr-* server (before/after)")
    p.add_argument("--also-tree", action="append", default=[], metavar="LABEL=PATH",
                   help="more checkouts (e.g. an intermediate commit): a LABEL:<kind> row per vr-* server")
    p.add_argument("--pin", action="store_true", help="server on the last CPU, generator on the first (see the docstring)")
    args = p.parse_args()
    if args.role == "server":
        server_main(args.kind, args.port)
        return
    if args.role == "gen":
        with asyncio.Runner(loop_factory=_new_loop) as runner:
            runner.run(generator(args.port, int(args.calls), args.ramp, args.warmup))
        return
    servers = [s for s in args.servers.split(",") if s]
    trees: dict[str, str] = {}
    if args.base_tree:
        trees["base"] = str(Path(args.base_tree).resolve())
    for spec in args.also_tree:
        label, _, path = spec.partition("=")
        trees[label] = str(Path(path).resolve())
    labels = list(trees)
    groups = [[s, *(f"{label}:{s}" for label in labels)] if s.startswith("vr-") else [s] for s in servers]
    sizes = [int(n) for n in args.calls.split(",") if n]
    rows: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for run in range(args.runs):
        for calls in sizes:
            # Rotate each branch/other-trees group per round, so that no tree always runs first or last.
            order = [k for g in groups for k in (g[run % len(g):] + g[: run % len(g)])]
            for kind in order:
                row = run_once(kind, calls, args.duration, args.warmup, trees, args.pin)
                rows.setdefault((kind, calls), []).append(row)
                print(json.dumps({"run": run + 1, **row}), flush=True)
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps({"run": run + 1, **row}) + "\n")
    summary = []
    for (kind, calls), runs in rows.items():
        values = [r["server_ms_per_call_s"] for r in runs]
        summary.append({
            "server": kind, "calls": calls, "median_ms": round(statistics.median(values), 3),
            "min_ms": min(values), "max_ms": max(values), "frames_lost": sum(r["frames_lost"] for r in runs),
            "corrupt_calls": sum(r["corrupt_calls"] for r in runs),
            "generator_cpu_pct": round(statistics.median(r["generator_cpu_pct"] for r in runs), 1),
            "user_ms": round(statistics.median(r["server_user_ms_per_call_s"] for r in runs), 3),
            "sys_ms": round(statistics.median(r["server_sys_ms_per_call_s"] for r in runs), 3),
        })
    for calls in sizes:
        base = {s["server"]: s["median_ms"] for s in summary if s["calls"] == calls}
        for s in summary:
            if s["calls"] == calls:
                s["x_bare_picows"] = round(s["median_ms"] / base["bare-picows"], 2) if base.get("bare-picows") else None
                s["x_bare_websockets"] = round(s["median_ms"] / base["bare-websockets"], 2) if base.get("bare-websockets") else None
                name = s["server"]
                plain = name.partition(":")[2] or name  # "mid:vr-x" -> "vr-x"
                before = None if name.startswith(BASE_PREFIX) else base.get(BASE_PREFIX + plain)
                s["x_base"] = round(s["median_ms"] / before, 3) if before else None
    print("\n%-26s %6s %9s %17s %6s %6s %8s %8s %7s %5s" % ("server", "calls", "median", "min-max", "user", "sys", "x picows",
                                                              "x ws", "x base", "lost"))
    for s in summary:
        print("%-26s %6d %9.3f %8.3f-%-8.3f %6.3f %6.3f %8s %8s %7s %5d" % (
            s["server"], s["calls"], s["median_ms"], s["min_ms"], s["max_ms"], s["user_ms"], s["sys_ms"],
            s["x_bare_picows"], s["x_bare_websockets"], s["x_base"] or "", s["frames_lost"]))
    print(json.dumps({"echo_bench": summary}))


if __name__ == "__main__":
    main()
