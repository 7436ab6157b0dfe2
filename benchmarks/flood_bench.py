"""A good call's mark round-trip while one hostile socket floods the same server (issue 13, hole 7).

::

    .venv/bin/python benchmarks/flood_bench.py --marks 200 --runs 3

For each flood kind (none, binary frames, unknown events, valid media far above real time) and for the inbound
rate budget off ("before") and on ("after", the default), in one run side by side:

* a server process (``VoiceServer.start``, mock providers) whose good call's flow sends ``--marks`` marks one
  after another with ``send_mark_and_wait`` and reports each round trip (mark queued → carrier echo seen);
* a good call: a :class:`~voice_runtime.testing.SimulatedPhone` (real time, echoes marks as a carrier does);
* a flooder process: a raw ``websockets`` client sending the carrier's opening and then the flood as fast as
  loopback allows (``--reconnect``: after each close it reconnects and floods again, a persistent attacker),
  until the good call is done. The good call starts once the flood is running.

Reports p50/p99 (ms) per run and the median and min–max over ``--runs``; the goal is p99 under each flood
within 2x the no-flood p99 (the ratio column: each run's p99 over the no-flood p99 of the same round, code and
mode; ``med/med``: the median p99 over the median no-flood p99, less swayed by one noisy no-flood run). Loopback only.

``--trees main=/work/main,branch=.`` runs the *server* from each source tree in turn (its PYTHONPATH),
alternating within every round, so before and after share one run's machine load; ``--budgets on`` runs only
the default budget; ``--mode native`` serves with the websockets-native runner instead of uvicorn
(``VoiceServer.start``). The load average is recorded at every run (``loadavg`` in the JSON). The JSON line also names each run's three slowest marks (by index:
start-up or steady state). ``--kinds media,none`` runs a subset; ``--profile DIR`` writes a cProfile of each
server's event-loop thread (where every call's messages are handled) to ``DIR`` — that is how the costs in
``benchmarks/README.md`` ("Flood") were found.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
KINDS = ["none", "binary", "unknown", "media"]

SERVER = textwrap.dedent(
    """
    import json, sys, time
    from voice_runtime import VoiceServer, create_stt, create_tts
    from voice_runtime.server import ConnectionConfig
    budget, port, marks = sys.argv[1] == "on", int(sys.argv[2]), int(sys.argv[3])
    config = ConnectionConfig() if budget else ConnectionConfig(inbound_budget=None, max_protocol_errors=10**12)

    def flow(session):
        if session.custom_parameters.get("who") != "good":
            session.wait_until_disconnected(120)
            return
        rtts = []
        try:
            for i in range(marks):
                t0 = time.perf_counter()
                session.send_mark_and_wait(f"m{i}", timeout=30)
                rtts.append((time.perf_counter() - t0) * 1000)
        except Exception as exc:  # say so: the bench must not wait for an RTT line that never comes
            print(f"FAILED after {len(rtts)} marks: {exc!r}", flush=True)
            return
        print("RTT " + json.dumps(rtts), flush=True)

    server = VoiceServer(stt_factory=lambda: create_stt("mock"), tts_factory=lambda: create_tts("mock"),
                         inbound_flow=flow, connection_config=config)
    server.allow_unsigned_streams = True
    if sys.argv[4] == "native":
        from voice_runtime.server.ws_native import start_native
        handle = start_native(server, port=port)
    else:
        handle = server.start(port=port)
    profile = None
    if len(sys.argv) > 5:  # --profile: cProfile the event loop's thread (where every call's messages are handled)
        import cProfile, threading
        profile, ready = cProfile.Profile(), threading.Event()
        handle.loop.call_soon_threadsafe(lambda: (profile.enable(), ready.set()))
        ready.wait(10)
    print("LISTENING", flush=True)
    sys.stdin.readline()
    if profile is not None:
        done = threading.Event()
        handle.loop.call_soon_threadsafe(lambda: (profile.disable(), done.set()))
        done.wait(10)
        profile.dump_stats(sys.argv[5])
    handle.stop()
    """
)


def _flooder(url: str, kind: str, stop: Any, flooding: Any, counter: Any, reconnect: bool) -> None:
    """Flood as fast as loopback allows; with ``reconnect``, flood again on a new socket after each close."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    from voice_runtime.testing.carriers import carrier_codec

    async def main() -> None:
        sent = connections = 0
        while not stop.is_set():
            codec = carrier_codec("twilio")
            make = {
                "binary": lambda i: b"\x00" * 64,
                "unknown": lambda i: json.dumps({"event": "whatever", "n": i}),
                "media": lambda i: codec.media(b"\xff" * 160, i + 1, 20 * i),
            }[kind]
            try:
                async with connect(url, max_size=None, ping_interval=None) as ws:
                    connections += 1
                    for message in codec.opening():
                        await ws.send(message)
                    n = 0
                    while not stop.is_set():
                        await ws.send(make(n))
                        n += 1
                        sent += 1
                        if n == 512:
                            flooding.set()
                        if n % 256 == 0:
                            await asyncio.sleep(0)  # yield to the reader (a close frame) now and then
            except (ConnectionClosed, OSError):
                flooding.set()
            if not reconnect:
                break
        counter.value = sent

    asyncio.run(main())


def _readline_within(proc: subprocess.Popen[str], seconds: float) -> str:
    """The server's next stdout line, or "" after ``seconds`` (a stuck good call must end the run, not hang it)."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(seconds)
    return lines[0] if lines else ""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def one(budget: str, kind: str, marks: int, reconnect: bool = False, profile: Path | None = None,
        tree: Path = ROOT, mode: str = "fastapi", label: str = "") -> dict[str, Any]:
    from voice_runtime.testing import SimulatedPhone

    from voice_runtime.testing.ports import free_port

    port = free_port()
    script = ROOT / "benchmarks" / f".flood_server_{os.getpid()}.py"
    script.write_text(SERVER)
    command = [sys.executable, str(script), budget, str(port), str(marks), mode]
    if profile is not None:  # cProfile of the server's event-loop thread, one pstats file per variant
        profile.mkdir(parents=True, exist_ok=True)
        command.append(str(profile / f"{label or 'this'}-{mode}-{kind}-{budget}-{time.strftime('%H%M%S')}.pstats"))
    proc = subprocess.Popen(command, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=tree, env=dict(os.environ, PYTHONPATH=str(tree)))
    stop, flooding, counter = multiprocessing.Event(), multiprocessing.Event(), multiprocessing.Value("q", 0)
    flooder = None
    loadavg = os.getloadavg()[0]
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "LISTENING"
        url = f"ws://127.0.0.1:{port}/stream"
        if kind != "none":
            flooder = multiprocessing.Process(target=_flooder, args=(url, kind, stop, flooding, counter, reconnect))
            flooder.start()
            assert flooding.wait(60), "the flooder never got going"
        t0 = time.monotonic()
        phone = SimulatedPhone(url, custom_parameters={"who": "good"}).connect(10)
        line = _readline_within(proc, 60 + marks * 0.1)
        elapsed = time.monotonic() - t0
        phone.close()
        if not line.startswith("RTT "):
            raise RuntimeError(f"good call did not finish ({kind}, budget {budget}): {line.strip() or 'no answer in time'}")
        rtts = json.loads(line.split(" ", 1)[1])
    finally:
        stop.set()
        if flooder is not None:
            flooder.join(10)
        assert proc.stdin is not None
        try:
            proc.stdin.write("\n")
            proc.stdin.flush()
            proc.wait(20)
        except (OSError, subprocess.TimeoutExpired):  # the server died, or is stuck: never leave it running
            proc.kill()
            proc.wait(10)
        script.unlink(missing_ok=True)
    slowest = sorted(range(len(rtts)), key=rtts.__getitem__)[-3:]  # which marks were slow: start-up or steady
    return {"p50": pct(rtts, 0.5), "p99": pct(rtts, 0.99), "flood_sent": counter.value, "seconds": elapsed,
            "slowest": [[i, round(rtts[i], 2)] for i in reversed(slowest)], "loadavg": loadavg}


def _trees(spec: str) -> list[tuple[str, Path]]:
    if not spec:
        return [("this", ROOT)]
    trees = []
    for item in spec.split(","):
        name, _, path = item.partition("=")
        trees.append((name, Path(path or name).resolve()))
    return trees


def _fmt(values: list[float], digits: int = 2) -> str:
    return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--marks", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--reconnect", action="store_true", help="the flooder reconnects after each close")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated subset of " + ",".join(KINDS))
    parser.add_argument("--budgets", default="off,on", help="off,on (default), or only one of them")
    parser.add_argument("--trees", default="", help="name=path,... : run the server from each tree, alternated")
    parser.add_argument("--mode", default="fastapi", choices=["fastapi", "native"])
    parser.add_argument("--profile", type=Path, help="cProfile each server's event loop into this folder")
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    budgets = [b for b in args.budgets.split(",") if b]
    trees = _trees(args.trees)
    results: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {
        name: {b: {k: [] for k in kinds} for b in budgets} for name, _ in trees
    }
    for _ in range(args.runs):
        for kind in kinds:
            for budget in budgets:
                for name, tree in trees:  # alternated: before and after see the same moment's load
                    results[name][budget][kind].append(
                        one(budget, kind, args.marks, args.reconnect, args.profile, tree, args.mode, name))
    how = "reconnecting flooder" if args.reconnect else "one hostile socket"
    loads = [r["loadavg"] for t in results.values() for b in t.values() for k in b.values() for r in k]
    print(f"mark round trip (ms), {args.marks} marks x {args.runs} runs, {how}, {args.mode} mode: median [min-max];"
          f" load average {min(loads):.1f}-{max(loads):.1f}")
    print(f"{'code':<8} {'flood':<8} {'budget':<7} {'p50':>20} {'p99':>22} {'p99/no-flood':>20} {'med/med':>7} {'flood msgs':>11}")
    for name, _ in trees:
        for kind in kinds:
            for budget in budgets:
                runs = results[name][budget][kind]
                p50 = [r["p50"] for r in runs]
                p99 = [r["p99"] for r in runs]
                ratio = overall = "-"
                if "none" in kinds:  # each run over the no-flood run of the same round, code and budget
                    base = [r["p99"] for r in results[name][budget]["none"]]
                    ratio = _fmt([a / b for a, b in zip(p99, base)], 1)
                    overall = f"{statistics.median(p99) / statistics.median(base):.1f}"  # median over median
                sent = int(statistics.median(r["flood_sent"] for r in runs))
                print(f"{name:<8} {kind:<8} {budget:<7} {_fmt(p50):>20} {_fmt(p99):>22} {ratio:>20} {overall:>7}"
                      f" {sent:>11}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
