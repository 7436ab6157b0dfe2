"""Hold music: "please hold", music with a "still holding" prompt every few seconds, then the agent is back.

    python examples/hold_music.py                # an 8 s hold, a prompt after every 2 s of music
    python examples/hold_music.py --hold 20 --period 5

What runs: a real ``VoiceServer`` on a loopback port and a ``SimulatedPhone`` that dials it, offline. The flow
puts the caller on hold (``session.hold``) while it "waits for an agent" — a timer here, a queue or a transfer
in real life — then releases it (``session.unhold``). The hold music is made in code (a little tune), the
still-holding prompt with the mock TTS. The script prints what the caller's line carried and exits 0 if the
line was never silent during the hold and the prompt came round as often as it should.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

import numpy as np

from voice_runtime import VoiceServer, create_stt, create_tts
from voice_runtime.audio.g711 import pcm16_to_ulaw
from voice_runtime.errors import CallError
from voice_runtime.testing import SimulatedPhone


def tune(seconds_per_note: float = 0.25) -> bytes:
    """A short looping melody (C major arpeggio with soft edges), μ-law 8 kHz."""
    notes = [261.6, 329.6, 392.0, 523.3, 392.0, 329.6]
    n = int(seconds_per_note * 8000)
    t = np.arange(n) / 8000
    fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.02)
    parts = [np.sin(2 * np.pi * f * t) * fade * 6000 for f in notes]
    return pcm16_to_ulaw(np.concatenate(parts).astype(np.int16))


def hold_flow(hold_seconds: float, period: float, report: dict[str, Any]):
    still_holding = b"".join(create_tts("mock").synthesize("Thanks for holding.", threading.Event()))

    def flow(session: Any) -> None:
        try:
            session.speak("All our agents are busy. Please hold.", wait=True)
            session.hold(tune(), still_holding_prompt=still_holding, period=period)
            report["hold_from"] = time.monotonic()
            agent_ready = threading.Event()
            threading.Timer(hold_seconds, agent_ready.set).start()  # stands in for a queue or a transfer
            agent_ready.wait(hold_seconds + 5)
            report["hold_until"] = time.monotonic()
            report["held_seconds"] = round(session.unhold(), 2)
            report["back"] = session.speak("Hello, this is Sam. How can I help?", wait=True).heard
            session.hangup()
        except CallError:
            report["caller_hung_up"] = True

    return flow, still_holding


def run(hold_seconds: float = 8.0, period: float = 2.0) -> dict[str, Any]:
    report: dict[str, Any] = {}
    flow, prompt = hold_flow(hold_seconds, period, report)
    server = VoiceServer(inbound_flow=flow, stt_factory=lambda: create_stt("mock"), tts_factory=lambda: create_tts("mock"))
    running = server.start()
    phone = SimulatedPhone(running.ws_url + "/stream")
    try:
        phone.connect()
        closed = phone.wait_closed(hold_seconds + 30)
        # from the first music frame (one pump refill after hold() returned) to the release
        held = phone.levels(report.get("hold_from", 0.0) + 0.1, report.get("hold_until", 0.0))
        report["line_closed"] = closed
        report["hold_ticks"] = len(held)
        report["silent_ticks_during_hold"] = sum(1 for f in held if not f.audio)
        report["still_holding_prompts_heard"] = phone.heard_audio().count(prompt)
        report["prompt_seconds"] = round(len(prompt) / 8000, 2)
    finally:
        phone.close()
        running.stop()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hold", type=float, default=8.0, help="seconds on hold")
    parser.add_argument("--period", type=float, default=2.0, help="seconds between still-holding prompts")
    args = parser.parse_args(argv)
    started = time.monotonic()
    report = run(args.hold, args.period)
    report["wall_seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps({k: v for k, v in report.items() if k not in ("hold_from", "hold_until")}, indent=2))
    cycle = args.period + report.get("prompt_seconds", 0.0)
    expected_prompts = int(args.hold // cycle)  # whole music + prompt cycles that fit in the hold
    ok = (
        report.get("back") is True
        and report.get("silent_ticks_during_hold") == 0
        and report.get("hold_ticks", 0) > 0
        and report.get("still_holding_prompts_heard", 0) >= max(1, expected_prompts)
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
