"""A fleet of addressable workers for tests: ``python -m tests.server.fleet_app`` (config in the environment).

Each worker is a real ``VoiceServer`` + ``TwilioCallControl`` pointed at a fake Twilio in the test process.
Test-only routes let the test ask a worker to dial, and read back what each worker saw:

* ``POST /_test/dial`` ``{"count": n, "to": "+1555..."}`` dials ``n`` calls from this worker; each flow waits
  for its stream, says one word and hangs up. Answers ``{"call_sids": [...]}`` once every REST dial returned.
* ``GET /_test/report``: ``{"worker_id", "pid", "dialled": {sid: outcome}, "answered": {sid: outcome},
  "misdirected": n}``.
* ``GET /_test/outcome?sid=...&outcome=spoke&timeout=10``: waits (on a condition, not by polling) until a call
  of this worker reaches that outcome; answers ``{"outcome": <the call's outcome then>}`` either way.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from typing import Any

from fastapi import Request

from voice_runtime import VoiceServer, create_tts
from voice_runtime.server.workers import WorkerAddress, WorkerPlan, serve_workers
from voice_runtime.testing.fake_twilio import FakeTwilioHttpClient
from voice_runtime.transports.twilio_client import TwilioCredentials
from voice_runtime.transports.twilio_control import TwilioCallControl


def build_server(address: WorkerAddress) -> VoiceServer:
    env = os.environ
    server = VoiceServer(tts_factory=lambda: create_tts("mock", min_seconds=0.1))
    credentials = TwilioCredentials(
        account_sid=env["FAKE_TWILIO_ACCOUNT_SID"], auth_token=env["FAKE_TWILIO_AUTH_TOKEN"], from_number="+15550001000"
    )
    twilio = TwilioCallControl(server, credentials=credentials, http_client=FakeTwilioHttpClient(env["FAKE_TWILIO_URL"]))
    lock = threading.Lock()
    changed = threading.Condition(lock)  # notified on every outcome, for /_test/outcome
    dialled: dict[str, str] = {}
    answered: dict[str, str] = {}

    def record(book: dict[str, str], sid: str, outcome: str) -> None:
        with changed:
            book[sid] = outcome
            changed.notify_all()

    @twilio.on_inbound_call
    def inbound(session: Any) -> None:
        record(answered, session.call_sid, "live")
        session.speak("hi", wait=True, timeout=10)
        record(answered, session.call_sid, "spoke")

    def dialled_flow(outbound: Any) -> None:
        session = outbound.session
        try:
            outbound.wait_answered(30)
            record(dialled, outbound.call_id, "live")
            session.speak("hi", wait=True, timeout=10)
            record(dialled, outbound.call_id, "spoke")
        except Exception as exc:  # recorded, and the test fails on it
            record(dialled, outbound.call_id, f"error: {type(exc).__name__}: {exc}")
        finally:
            if not session.is_disconnected:
                session.hangup(10)  # raises CallTimeoutError if it does not end: recorded as an error above
            twilio.forget(outbound.call_id)

    async def dial(request: Request) -> Any:
        import asyncio

        spec = json.loads(await request.body())

        def place() -> list[str]:
            sids = []
            for _ in range(int(spec["count"])):
                outbound = twilio.dial(spec.get("to", "+15557654321"))
                record(dialled, outbound.call_id, "dialled")
                threading.Thread(target=dialled_flow, args=(outbound,), daemon=True).start()
                sids.append(outbound.call_id)
            return sids

        return {"call_sids": await asyncio.to_thread(place)}

    async def report() -> Any:
        with lock:
            return {
                "worker_id": address.worker_id,
                "pid": os.getpid(),
                "dialled": dict(dialled),
                "answered": dict(answered),
                "misdirected": server.registry.misdirected,
            }

    def wait_outcome(sid: str, outcome: str, timeout: float) -> str | None:
        def current() -> str | None:
            return dialled.get(sid, answered.get(sid))

        with changed:
            changed.wait_for(lambda: current() == outcome, timeout=min(timeout, 30.0))
            return current()

    async def outcome_route(sid: str, outcome: str, timeout: float = 10.0) -> Any:
        return {"outcome": await asyncio.to_thread(wait_outcome, sid, outcome, timeout)}

    server.app.add_api_route("/_test/dial", dial, methods=["POST"])
    server.app.add_api_route("/_test/outcome", outcome_route, methods=["GET"])
    server.app.add_api_route("/_test/report", report, methods=["GET"])
    return server


def main() -> None:
    env = os.environ
    logging.basicConfig(level=logging.WARNING, format=f"%(levelname)s [{os.getpid()}] %(name)s: %(message)s")
    logging.getLogger("voice_runtime.server.runners").setLevel(logging.INFO)  # "serving media streams on ...": ready
    plan = WorkerPlan(
        workers=int(env["FLEET_WORKERS"]),
        base_port=int(env["FLEET_BASE_PORT"]),
        webhook_port=int(env["FLEET_WEBHOOK_PORT"]),
        public_url=env.get("FLEET_PUBLIC_URL", "http://127.0.0.1:{port}"),
        host="127.0.0.1",
    )
    raise SystemExit(serve_workers(build_server, plan, drain_deadline=5.0))


if __name__ == "__main__":
    main()
