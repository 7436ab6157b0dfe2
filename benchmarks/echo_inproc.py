"""In-process echo harness: our Python cost per caller frame round trip, with no sockets and no other process.

Run:  python benchmarks/echo_inproc.py --style listener --frames 20000
      python benchmarks/echo_inproc.py --style loop --profile            # cProfile, top 30 by tottime
      python benchmarks/echo_inproc.py --count-bytecodes --frames 2000    # bytecodes run per frame, per function
      python benchmarks/echo_inproc.py --calls 200 --frames 40000         # 200 calls round robin
      python benchmarks/echo_inproc.py --style stt --calls 200            # the listener echo + an STT fed inline
      python benchmarks/echo_inproc.py --style stt-queue --calls 200      # ... the STT reading its queue (before)

Why: ``echo_bench.py`` measures the real thing (server CPU per call-second against bare echoes), but on a
shared 2-core machine its rounds are noisy and it cannot say *where* the time goes. This drives the picows
mode's real :class:`~voice_runtime.server.ws_picows.PicowsWire` (admission, ``VoiceServer.serve_wire``,
``CallConnection``, the session) with a fake picows transport that only collects what is sent, feeding it
Twilio media frames the way picows' frame callback would, one call at a time. The figure is µs of our code
per frame (parse → session → echo → encode → transport.send), and every frame's echo is checked. Under
``valgrind --tool=callgrind`` the instruction count of a run is a noise-free before/after comparison, and
``--count-bytecodes`` counts the bytecodes each function runs per frame (exact, and it says *where*: on 3.11 the
interpreter loop is most of our per-frame cost, so fewer bytecodes and fewer Python calls is what makes it faster).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import orjson  # noqa: E402
from picows import WSMsgType  # noqa: E402

from echo_bench import start_loop_echo  # noqa: E402  (the same echo the socket benchmark serves)
from load_bench import queue_only  # noqa: E402

FRAME = 160
MEDIA = '{"event":"media","sequenceNumber":"%d","media":{"track":"inbound","chunk":"%d","timestamp":"%d","payload":"%s"},"streamSid":"%s"}'


class FakeFrame:
    """What ``PicowsWire.on_ws_frame`` reads of a picows frame."""

    __slots__ = ("msg_type", "fin", "_payload")

    def __init__(self, msg_type: Any, payload: bytes) -> None:
        self.msg_type, self.fin, self._payload = msg_type, True, payload

    def get_payload_as_bytes(self) -> bytes:
        return self._payload


class FakeTransport:
    """Collects sent messages; never pauses writing."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, _kind: Any, data: bytes) -> None:
        self.sent.append(data)

    def send_close(self, *args: Any) -> None:
        pass

    def disconnect(self) -> None:
        pass


class BytecodeCounter:
    """``sys.settrace`` with per-opcode events: how many bytecodes each Python function runs (``--count-bytecodes``).

    Exact and machine-independent, so a before/after needs one run of each; it does not weigh them (a call costs
    more than a ``LOAD_FAST``), which callgrind's instruction count does."""

    def __init__(self) -> None:
        self.counts: collections.Counter[tuple[str, str, int]] = collections.Counter()

    def _trace(self, frame: Any, event: str, _arg: Any) -> Any:
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        if event == "opcode":
            code = frame.f_code
            self.counts[(Path(code.co_filename).name, code.co_name, code.co_firstlineno)] += 1
        return self._trace

    def enable(self) -> None:
        sys.settrace(self._trace)

    def disable(self) -> None:
        sys.settrace(None)

    def report(self, frames: int, top: int = 25) -> dict[str, Any]:
        total = sum(self.counts.values())
        for (filename, name, line), count in self.counts.most_common(top):
            print(f"{count / frames:8.1f}  {filename}:{line} {name}")
        return {"bytecodes_per_frame": round(total / frames, 1)}


class BareEcho:
    """The bare picows echo of ``echo_bench.py`` (``--style bare``): the floor our per-frame cost is compared to."""

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

    def on_ws_disconnected(self, transport: Any) -> None:
        pass


async def run(style: str, frames: int, profile: bool, calls: int = 1, count_bytecodes: bool = False) -> dict[str, Any]:

    from voice_runtime import VoiceServer
    from voice_runtime.server.admission import Admitted, HandshakeView, admit_stream_sync
    from voice_runtime.server.connection import ConnectionConfig
    from voice_runtime.server.inbound_budget import BudgetConfig
    from voice_runtime.server.ws_picows import PicowsWire

    from voice_runtime.providers.mock import MockStt

    started: list[Any] = []
    stts: list[Any] = []
    all_started = asyncio.Event()

    def on_started(session: Any) -> None:
        start_loop_echo(session, "loop" if style == "loop" else "listener")
        started.append(session)
        if len(started) == calls:
            all_started.set()

    # Frames arrive far faster than real time here: a lead and a rate budget too large to ever bind keep every
    # echo on the per-frame path that a real-time call takes (inline send, budget checked but never dropping).
    budget = BudgetConfig(message_rate=1e9, message_burst=1e9, byte_rate=1e12, byte_burst=1e12, media_factor=1e9, media_burst_seconds=1e9)
    config = ConnectionConfig(playout_lead=1e9, inbound_budget=budget)
    def make_stt() -> Any:
        stt = MockStt(vad=False)  # counts what it gets: the cost measured is the hand-off, not recognition
        if style == "stt-queue":
            queue_only(stt)
        stts.append(stt)
        return stt

    server = VoiceServer(on_call_started=on_started, connection_config=config,
                         stt_factory=make_stt if style.startswith("stt") else None)
    text = WSMsgType.TEXT
    per_call = frames // calls
    frames = per_call * calls
    lines = []  # (wire, transport, expected payloads, frames) per call
    for idx in range(calls):
        admitted = admit_stream_sync(server, HandshakeView("/stream", [("host", "127.0.0.1")]), None)
        assert isinstance(admitted, Admitted), admitted
        transport = FakeTransport()
        if style == "bare":
            wire: Any = BareEcho()
            started.append(wire)
            if len(started) == calls:
                all_started.set()
        else:
            wire = PicowsWire(server, admitted)
            wire.on_ws_connected(transport)
        sid = f"MZ{idx:032d}"
        wire.on_ws_frame(transport, FakeFrame(text, json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}).encode()))
        start = {"event": "start", "sequenceNumber": "1", "streamSid": sid,
                 "start": {"streamSid": sid, "callSid": f"CA{idx:032d}", "accountSid": "AC0", "tracks": ["inbound"],
                           "customParameters": {}, "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}
        wire.on_ws_frame(transport, FakeFrame(text, json.dumps(start).encode()))
        payloads = [f"{idx:04x}{n:08x}".encode() + b"\xff" * (FRAME - 12) for n in range(per_call)]
        messages = [FakeFrame(text, (MEDIA % (n + 2, n + 1, n * 20, base64.b64encode(p).decode(), sid)).encode()) for n, p in enumerate(payloads)]
        lines.append((wire, transport, payloads, messages))
    await asyncio.wait_for(all_started.wait(), 30)
    # Round robin over the calls, as a server sees them: each frame's objects are cold again (200 calls' state).
    order = [(line[0].on_ws_frame, line[1], line[3][n]) for n in range(per_call) for line in lines]
    profiler: Any = BytecodeCounter() if count_bytecodes else cProfile.Profile() if profile else None
    sleep = asyncio.sleep
    every = calls if style == "loop" or style.startswith("stt") else 10  # a loop turn per round where tasks read
    t0 = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    for n, (on_frame, transport, frame) in enumerate(order):
        on_frame(transport, frame)
        if n % every == every - 1:
            await sleep(0)  # the loop-style echoes need their tasks to run: a loop turn per round of frames
    if profiler is not None:
        profiler.disable()
    elapsed = time.perf_counter() - t0
    # Whatever the inline path left to the pump goes out on the next loop turns: wait for it, then check that
    # every byte came back, in order.
    deadline = time.monotonic() + 60
    ok = False
    sent = 0
    while time.monotonic() < deadline:
        ok, sent = True, 0
        for _wire, transport, payloads, _messages in lines:
            echoed = bytearray()
            for data in transport.sent:
                msg = json.loads(data)
                if msg.get("event") == "media":
                    echoed += base64.b64decode(msg["media"]["payload"])
            sent += len(transport.sent)
            ok = ok and bytes(echoed) == b"".join(payloads)
        if ok:
            break
        await asyncio.sleep(0.05)
    if stts:  # every frame reached every call's STT (by its queue or inline)
        while time.monotonic() < deadline and sum(stt.frames_received for stt in stts) < frames:
            await asyncio.sleep(0.05)
        ok = ok and sum(stt.frames_received for stt in stts) == frames
    for wire, transport, _payloads, _messages in lines:
        wire.on_ws_disconnected(transport)
    extra: dict[str, Any] = {}
    if isinstance(profiler, BytecodeCounter):
        extra = profiler.report(frames)  # µs per frame is meaningless under the tracer
    elif profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    return {"style": style, "calls": calls, "frames": frames, "us_per_frame": round(elapsed * 1e6 / frames, 2),
            "sent_messages": sent, "echo_ok": ok, **extra}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--style", choices=("listener", "loop", "bare", "stt", "stt-queue"), default="listener")
    p.add_argument("--frames", type=int, default=20000)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--calls", type=int, default=1, help="calls fed round robin (their state is cold per frame, as on a server)")
    p.add_argument("--count-bytecodes", action="store_true", help="bytecodes run per frame, per function (sys.settrace)")
    args = p.parse_args()
    try:
        import uvloop

        loop_factory: Any = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        print(json.dumps(runner.run(run(args.style, args.frames, args.profile, args.calls, args.count_bytecodes))))


if __name__ == "__main__":
    main()
