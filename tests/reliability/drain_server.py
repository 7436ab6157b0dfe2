"""A real voice server *process* for the graceful-drain test (``test_drain.py`` starts it and sends SIGTERM).

Flows, chosen by the caller's ``mode`` custom parameter:

* ``speak``: say a sentence of ``seconds`` seconds, wait until the caller heard it, then hang up;
* ``linger``: keep listening until the call ends (only the drain deadline will end it).

Call control: a minimal carrier control whose REST hangup POSTs ``Status=completed`` to ``--rest-url``
(a loopback fake run by the test), so the test sees the hangups the drain makes over "REST".
"""

from __future__ import annotations

import argparse
import logging
import sys

import httpx

from voice_runtime import CallHangupError, VoiceServer, create_stt, create_tts
from voice_runtime.session import VoiceSession


class LoopbackRestControl:
    """Hangs calls up with a REST request to the test's fake carrier API (as Twilio's ``Status=completed``)."""

    carrier = "twilio"

    def __init__(self, rest_url: str) -> None:
        self.rest_url = rest_url.rstrip("/")

    async def hangup(self, session: VoiceSession) -> None:
        async with httpx.AsyncClient(timeout=5.0) as client:
            response = await client.post(f"{self.rest_url}/Calls/{session.call_sid}.json", data={"Status": "completed"})
            response.raise_for_status()


def flow(session: VoiceSession) -> None:
    mode = session.custom_parameters.get("mode", "speak")
    try:
        if mode == "speak":
            seconds = float(session.custom_parameters.get("seconds", "2"))
            session.speak("x" * int(seconds * 14), wait=True, timeout=30)  # MockTts: 14 chars per second
            session.hangup(timeout=5)
        else:
            while True:
                session.listen(timeout=120)
    except CallHangupError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--deadline", type=float, default=5.0)
    parser.add_argument("--rest-url", required=True)
    parser.add_argument("--recordings", required=True)
    parser.add_argument("--mode", choices=("fastapi", "native", "picows"), default="fastapi")
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
    server = VoiceServer(
        stt_factory=lambda: create_stt("mock"),
        tts_factory=lambda: create_tts("mock"),
        inbound_flow=flow,
        recordings_dir=args.recordings,
    )
    server.register_call_control(LoopbackRestControl(args.rest_url))
    if args.mode == "native":
        from voice_runtime.server.ws_native import serve_native

        serve_native(server, host="127.0.0.1", port=args.port, drain_deadline=args.deadline)
    elif args.mode == "picows":
        from voice_runtime.server.ws_picows import serve_picows

        serve_picows(server, host="127.0.0.1", port=args.port, drain_deadline=args.deadline)
    else:
        server.serve(host="127.0.0.1", port=args.port, drain_deadline=args.deadline, log_level="warning", ws_ping_interval=None)


if __name__ == "__main__":
    main()
