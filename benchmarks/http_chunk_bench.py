"""CPU per HTTP chunk of a streamed response: httpx's own transport against urllib3 under httpx, side by side.

Run:  python benchmarks/http_chunk_bench.py [--chunks N] [--chunk-bytes B] [--rounds R]

Why: a streaming TTS response (ElevenLabs ``…/stream``, ``ulaw_8000``) is many small HTTP chunks, and the
speech thread reads each one under the GIL next to the event loop that carries every call's audio. This
measures only that read: a loopback server (a thread over a raw socket) sends ``N`` chunks of ``B`` bytes in
one chunked response, and the client reads them with ``httpx.Client.stream(...).iter_bytes()``, once through
httpx's default transport (httpcore + h11) and once through
:class:`voice_runtime.providers.urllib3_transport.Urllib3Transport`. The figure is the reading thread's own CPU
time (``time.thread_time``) per chunk, so the server thread does not count. Variants alternate round by round;
the report gives medians and min–max of the rounds and the ratio of the medians, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from voice_runtime.providers.urllib3_transport import Urllib3Transport  # noqa: E402


def serve_chunked(chunks: int, chunk_bytes: int) -> tuple[socket.socket, str]:
    """A listener answering every request on every connection with the same chunked body (keep-alive)."""
    piece = b"%x\r\n%s\r\n" % (chunk_bytes, b"\xff" * chunk_bytes)
    response = b"HTTP/1.1 200 OK\r\nContent-Type: audio/basic\r\nTransfer-Encoding: chunked\r\n\r\n" + piece * chunks + b"0\r\n\r\n"
    listener = socket.create_server(("127.0.0.1", 0))

    def one(conn: socket.socket) -> None:
        with conn:
            buffer = b""
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                _, _, buffer = buffer.partition(b"\r\n\r\n")  # the benchmark's requests have no body
                conn.sendall(response)

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=one, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener, f"http://127.0.0.1:{listener.getsockname()[1]}"


def read_once(client: httpx.Client) -> tuple[int, int, float]:
    """(pieces, bytes, thread CPU seconds) for one streamed response."""
    pieces = received = 0
    started = time.thread_time()
    with client.stream("GET", "/stream") as response:
        for piece in response.iter_bytes():
            pieces += 1
            received += len(piece)
    return pieces, received, time.thread_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=20000)
    parser.add_argument("--chunk-bytes", type=int, default=160, help="160: 20 ms of μ-law, the fake ElevenLabs' piece")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    listener, url = serve_chunked(args.chunks, args.chunk_bytes)
    makers: dict[str, Callable[[], httpx.Client]] = {
        "httpx (httpcore + h11)": lambda: httpx.Client(base_url=url, timeout=30.0),
        "httpx + Urllib3Transport": lambda: httpx.Client(base_url=url, timeout=30.0, transport=Urllib3Transport()),
    }
    per_chunk: dict[str, list[float]] = {name: [] for name in makers}
    clients = {name: make() for name, make in makers.items()}
    try:
        for client in clients.values():  # connect and warm up outside the measured rounds
            read_once(client)
        for _ in range(args.rounds):
            for name, client in clients.items():
                pieces, received, cpu = read_once(client)
                if received != args.chunks * args.chunk_bytes:
                    raise SystemExit(f"{name}: got {received} bytes, expected {args.chunks * args.chunk_bytes}")
                per_chunk[name].append(cpu / args.chunks * 1e6)
    finally:
        for client in clients.values():
            client.close()
        listener.close()
    medians = {name: statistics.median(values) for name, values in per_chunk.items()}
    before, after = medians.values()
    print(f"{args.chunks} chunks of {args.chunk_bytes} bytes per response, {args.rounds} rounds, reading thread's CPU")
    for name, values in per_chunk.items():
        print(f"  {name:26s} {medians[name]:6.2f} µs per chunk ({min(values):.2f}–{max(values):.2f})")
    print(f"  ratio after / before: {after / before:.2f}")
    print(json.dumps({"http_chunk_bench": {"chunks": args.chunks, "chunk_bytes": args.chunk_bytes, "rounds": args.rounds,
                                           "us_per_chunk": per_chunk, "medians": medians, "ratio": after / before}}))


if __name__ == "__main__":
    main()
