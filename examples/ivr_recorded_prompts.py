"""An IVR whose prompts are recorded WAV files: press 1 for sales, 2 for support — offline, end to end.

    python examples/ivr_recorded_prompts.py            # prompts made with the mock TTS (tones), key "2"
    python examples/ivr_recorded_prompts.py --tts local --key 1   # real speech prompts (Piper), key "1"

What runs: the prompts are written once as 16 kHz WAV files (as a studio or a TTS tool would hand them over);
a real ``VoiceServer`` on a loopback port runs the IVR flow — plain sequential code; a ``SimulatedPhone`` dials
it and, like an impatient caller, presses a key half a second into the welcome prompt. The key stops the prompt
(DTMF barge-in), the flow routes on it, plays the department's prompt and reads a reference number back as
in-band DTMF tones, which the phone decodes. The script prints what the caller heard and exits 0 if it all
happened as it should.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import wave
from pathlib import Path
from typing import Any

import numpy as np

from voice_runtime import VoiceServer, create_stt, create_tts
from voice_runtime.audio.g711 import ulaw_to_pcm16
from voice_runtime.audio.resample import resample
from voice_runtime.audio.sources import load_file
from voice_runtime.errors import CallError
from voice_runtime.testing import SimulatedPhone, locate

PROMPTS = {
    "welcome": "Welcome to Acme. For sales, press one. For support, press two. To hear this again, stay on the line.",
    "sales": "Connecting you to sales. Your reference number follows.",
    "support": "Connecting you to support. Your reference number follows.",
    "invalid": "Sorry, that is not an option.",
}
REFERENCE = "4821"


def make_prompts(folder: Path, tts_name: str = "mock") -> dict[str, Path]:
    """Write each prompt as a 16 kHz mono WAV (kept if already there)."""
    folder.mkdir(parents=True, exist_ok=True)
    tts = create_tts(tts_name)
    paths = {}
    for name, text in PROMPTS.items():
        path = folder / f"{name}.wav"
        if not path.exists():
            ulaw = b"".join(tts.synthesize(text, threading.Event()))
            pcm = resample(ulaw_to_pcm16(ulaw), 8000, 16000)
            with wave.open(str(path), "wb") as wav:
                wav.setnchannels(1)
                wav.setsampwidth(2)
                wav.setframerate(16000)
                wav.writeframes(np.asarray(pcm, dtype="<i2").tobytes())
        paths[name] = path
    return paths


def ivr_flow(prompts: dict[str, Path], report: dict[str, Any]):
    """The IVR, as a flow: what a developer writes."""

    def flow(session: Any) -> None:
        try:
            key = ""
            for _attempt in range(2):
                welcome = session.play(prompts["welcome"])  # a key stops it (dtmf_barge_in is on by default)
                try:
                    key = session.wait_for_dtmf(timeout=welcome.audio_seconds + 5)
                except CallError:
                    continue
                report["welcome_cut_by_key"] = welcome.wait(5) == "cleared"
                report["welcome_heard_s"] = round(welcome.heard_seconds, 2)
                if key in ("1", "2"):
                    break
                session.play(prompts["invalid"], wait=True)
            report["key"] = key
            department = {"1": "sales", "2": "support"}.get(key)
            if department is None:
                session.hangup()
                return
            report["department"] = department
            session.play(prompts[department], wait=True, interruptible=False)
            tones = session.send_dtmf(REFERENCE)  # Twilio: in-band Q.23 tones
            report["tones_played"] = str(tones.wait(10))
            session.hangup()
        except CallError:
            report["caller_hung_up"] = True

    return flow


def run(tts_name: str = "mock", key: str = "2", prompt_dir: Path | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        prompts = make_prompts(prompt_dir or Path(tmp) / "prompts", tts_name)
        report: dict[str, Any] = {}
        server = VoiceServer(
            inbound_flow=ivr_flow(prompts, report),
            stt_factory=lambda: create_stt("mock"),
            tts_factory=lambda: create_tts("mock"),
        )
        running = server.start()
        phone = SimulatedPhone(running.ws_url + "/stream", custom_parameters={"from_number": "+15550100"})
        try:
            phone.connect()
            phone.wait_for("playback_start", timeout=10)
            # about half a second into the welcome prompt (position marks are echoed every 200 ms)
            phone.wait_for("mark_echoed", timeout=10, predicate=lambda _e: len(phone.marks_echoed) >= 4)
            phone.press(key)
            phone.wait_closed(30)
            heard = phone.heard_audio()
            department = {"1": "sales", "2": "support"}.get(key)
            if department:
                report["caller_heard_department_prompt"] = locate(load_file(prompts[department])[:1600], heard) is not None
            report["caller_decoded_tones"] = phone.tones_heard
        finally:
            phone.close()
            running.stop()
        return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tts", default="mock", help="TTS that records the prompts: mock (default) or local")
    parser.add_argument("--key", default="2", help="the key the caller presses")
    args = parser.parse_args(argv)
    report = run(args.tts, args.key)
    print(json.dumps(report, indent=2))
    ok = (
        report.get("welcome_cut_by_key") is True
        and report.get("caller_heard_department_prompt") is True
        and report.get("caller_decoded_tones") == REFERENCE
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
