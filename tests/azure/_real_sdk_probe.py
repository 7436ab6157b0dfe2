"""Run the Azure providers on the *real* SDK against loopback endpoints; print one JSON line of findings.

Executed as a subprocess by ``test_azure_real_sdk.py`` (the native SDK has been seen to abort at interpreter
exit while objects are alive, so it gets its own process). Only the HTTP handshake is involved: a local HTTP
server answering every upgrade with 401, and a closed port. No part of the SDK's internal protocol is faked.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from voice_runtime.errors import ProviderError
from voice_runtime.providers.azure_stt import AzureStt
from voice_runtime.providers.azure_tts import AzureTts


class Reject401(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.send_response(401)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run_stt(host: str, **kwargs: Any) -> dict[str, Any]:
    errors: list[str] = []
    got = asyncio.Event()
    stt = AzureStt(subscription_key="dummy-key", host=host, backoff_jitter=0.0, **kwargs)
    stt.on_error = lambda message: (errors.append(message), got.set())
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    await stt.start(queue)
    for _ in range(50):
        queue.put_nowait(b"\xff" * 160)
    timed_out = False
    try:
        await asyncio.wait_for(got.wait(), 30.0)
    except asyncio.TimeoutError:
        timed_out = True
    await asyncio.wait_for(stt.stop(), 10.0)  # the recognizer is fully torn down: a repeat would be in `errors`
    return {"errors": errors, "timed_out": timed_out, "restart_delays": stt.restart_delays, "stats": dict(stt.stats)}


def run_tts(host: str) -> dict[str, Any]:
    tts = AzureTts(subscription_key="dummy-key", host=host, first_chunk_timeout=15.0)
    try:
        list(tts.synthesize("Hello.", threading.Event()))
        return {"error": None}
    except ProviderError as exc:
        return {"error": str(exc), "retryable": exc.retryable, "provider": exc.provider}
    finally:
        tts.close()


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Reject401)
    threading.Thread(target=server.serve_forever, name="reject-401", daemon=True).start()
    rejecting = f"ws://127.0.0.1:{server.server_address[1]}"
    refused = f"ws://127.0.0.1:{closed_port()}"
    findings = {
        "stt_401": asyncio.run(run_stt(rejecting)),
        "stt_refused": asyncio.run(run_stt(refused, backoff_base_s=0.05, max_restarts=2)),
        "tts_401": run_tts(rejecting),
        "tts_refused": run_tts(refused),
    }
    server.shutdown()
    print("FINDINGS " + json.dumps(findings))


if __name__ == "__main__":
    main()
