"""``voice-runtime console MODULE:FLOW``: be the caller of a flow, in this terminal.

The flow runs on a real :class:`VoiceServer` on loopback; this terminal is the phone (a
:class:`SimulatedPhone` over a real WebSocket). A typed line is *spoken*: synthesized with the local TTS
(Piper) and streamed in real time as caller audio, so it goes through the flow's real STT, endpointing and
barge-in. Without the ``[local]`` extra the line becomes a tone of the same length and the mock STT "hears"
the typed words — same timing, marks and barge-in, no models. What the agent says is printed as it is
spoken, with marks (heard to the end) and barge-ins (you talked over it).
"""

from __future__ import annotations

import argparse
import queue
import re
import sys
import threading
from typing import Any

from voice_runtime.cli.common import CliError, add_provider_flags, load_flow, provider_factories
from voice_runtime.cli.logs import LEVELS, configure_logging
from voice_runtime.cli.transcript import TranscriptPrinter

DTMF_LINE = re.compile(r"^[0-9*#]+$")
HANGUP_WORDS = {"/hangup", "/quit", "/exit"}
#: Longest a console call may last before we hang up ourselves (nothing waits forever).
MAX_CALL_SECONDS = 3600.0

EXAMPLES = """\
examples:
  voice-runtime console examples/ivr_menu.py:flow              # local speech if [local] is installed
  voice-runtime console examples/appointment.py:flow --stt mock --tts mock   # no models
  voice-runtime console myapp.voice:server --audio             # microphone + speakers ([audio] extra)

while the call runs: type a sentence and press Enter to say it; type digits alone (e.g. 1 or 42#) to
press keys; /hangup or Ctrl-D hangs up.
"""


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "console",
        help="talk to a flow from this terminal (you are the caller)",
        description="Run FLOW on a local server and be its caller: typed lines are spoken into the call.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("flow", metavar="MODULE:FLOW")
    add_provider_flags(parser)
    parser.add_argument("--caller-number", default="+15550100999", help="the caller id the flow sees")
    parser.add_argument("--audio", action="store_true", help="use the microphone and speakers ([audio] extra); falls back to text")
    parser.add_argument("--no-marks", action="store_true", help="do not print mark lines")
    parser.add_argument("--log-level", choices=LEVELS, default="error")
    parser.set_defaults(run=run)


def _local_available() -> bool:
    try:
        import faster_whisper  # noqa: F401

        from voice_runtime.providers import local_stt, local_tts  # noqa: F401
    except ImportError:
        return False
    return True


class CallerVoice:
    """Turns typed text into caller audio: Piper when installed, else a speech-like tone of similar length."""

    def __init__(self, use_piper: bool) -> None:
        self._piper: Any = None
        if use_piper:
            from voice_runtime.providers.local_tts import PiperTts

            self._piper = PiperTts()

    @property
    def real_speech(self) -> bool:
        return self._piper is not None

    def audio(self, text: str) -> tuple[Any, int]:
        if self._piper is not None:
            return self._piper.synthesize_pcm(text, noise_scale=0.0, noise_w_scale=0.0)
        from voice_runtime.providers.mock import tone_speech

        return tone_speech(max(0.6, len(text) / 14.0), frequency=180.0), 8000


class MockSttFeeder:
    """With the mock STT, the typed words are what it will 'hear' for the next utterance."""

    def __init__(self, factory: Any) -> None:
        self._factory = factory
        self.current: Any = None

    def __call__(self) -> Any:
        self.current = self._factory()
        return self.current

    def expect(self, text: str) -> None:
        script = getattr(self.current, "script", None)
        if script is not None:
            script.append(text)


def _audio_devices() -> tuple[Any, str]:
    """``(sounddevice module, "")`` when a microphone and speakers exist, else ``(None, why not)``."""
    try:
        import sounddevice
    except ImportError:
        return None, "sounddevice is not installed (pip install 'voice-runtime[audio]')"
    except OSError as exc:  # PortAudio library missing
        return None, f"no audio library: {exc}"
    try:
        sounddevice.check_input_settings(samplerate=8000, channels=1, dtype="int16")
        sounddevice.check_output_settings(samplerate=8000, channels=1, dtype="int16")
    except Exception as exc:
        return None, f"no usable sound device: {exc}"
    return sounddevice, ""


class AudioBridge:
    """Microphone → caller frames (the phone's ``caller_source``); what the phone plays → speakers."""

    def __init__(self, sounddevice: Any) -> None:
        from voice_runtime.audio.g711 import pcm16_to_ulaw

        self._sd = sounddevice
        self._encode = pcm16_to_ulaw
        self._mic: queue.Queue[bytes] = queue.Queue(maxsize=50)  # 1 s; oldest dropped beyond that
        self._phone: Any = None
        self._played = 0
        self._streams: list[Any] = []

    def caller_source(self, _index: int) -> bytes | None:
        try:
            return self._mic.get_nowait()
        except queue.Empty:
            return None

    def start(self, phone: Any) -> None:
        import numpy as np

        from voice_runtime.audio.g711 import ULAW_DECODE_TABLE

        self._phone = phone

        def on_mic(indata: Any, frames: int, _time: Any, _status: Any) -> None:
            frame = self._encode(np.asarray(indata[:, 0], dtype=np.int16))
            if self._mic.full():
                self._mic.get_nowait()
            self._mic.put_nowait(frame)

        def on_speaker(outdata: Any, frames: int, _time: Any, _status: Any) -> None:
            track = self._phone.agent_track
            chunk = bytes(track[self._played : self._played + frames])
            self._played += len(chunk)
            samples = ULAW_DECODE_TABLE[np.frombuffer(chunk, dtype=np.uint8)] if chunk else np.zeros(0, np.int16)
            outdata[: len(samples), 0] = samples
            outdata[len(samples) :, 0] = 0

        self._streams = [
            self._sd.InputStream(samplerate=8000, channels=1, dtype="int16", blocksize=160, callback=on_mic),
            self._sd.OutputStream(samplerate=8000, channels=1, dtype="int16", blocksize=160, callback=on_speaker),
        ]
        for stream in self._streams:
            stream.start()

    def stop(self) -> None:
        for stream in self._streams:
            stream.stop()
            stream.close()


def run(args: argparse.Namespace) -> int:
    from voice_runtime.call_events import CALL_ENDED
    from voice_runtime.server import VoiceServer
    from voice_runtime.testing import SimulatedPhone

    configure_logging(args.log_level)
    flow = load_flow(args.flow)
    local = _local_available()
    default = "local" if local else "mock"
    stt_factory, tts_factory = provider_factories(args, default=default)
    stt_name = args.stt or default
    feeder = MockSttFeeder(stt_factory)
    caller = CallerVoice(use_piper=local and stt_name != "mock")
    out = sys.stdout
    printer = TranscriptPrinter(out, show_marks=not args.no_marks)

    bridge: AudioBridge | None = None
    if args.audio:
        sounddevice, why_not = _audio_devices()
        if sounddevice is None:
            printer.line("AUDIO", f"{why_not}: using text mode")
        else:
            bridge = AudioBridge(sounddevice)

    server = VoiceServer(stt_factory=feeder, tts_factory=tts_factory)
    session = server.new_session(caller_number=args.caller_number, called_number="+15550100000")
    inbox: queue.Queue[tuple[str, str | None]] = queue.Queue()
    session.add_event_listener(printer)
    session.add_event_listener(lambda e: inbox.put(("ended", None)) if e.kind == CALL_ENDED else None)

    def call_flow(s: Any) -> None:
        s.wait_for_ws_connect(10)
        flow(s)

    running = server.start()
    try:
        token = server.expect_stream(session)
        server.start_flow(session, call_flow)
        phone = SimulatedPhone(
            running.ws_url + f"/stream/{token}",
            custom_parameters={"from_number": args.caller_number, "to_number": "+15550100000"},
            caller_source=bridge.caller_source if bridge else None,
        )
        phone.connect()
        if bridge is not None:
            bridge.start(phone)
        mode = "speech (Piper)" if caller.real_speech else "tones; the mock STT hears your typed words"
        out.write(f"console: you are the caller ({mode}). Type and press Enter to speak; digits alone press keys; /hangup ends.\n")
        out.flush()
        threading.Thread(target=_read_lines, args=(inbox,), name="console-input", daemon=True).start()
        _converse(inbox, phone, session, caller, feeder, printer, stt_name == "mock")
        session.wait_until_disconnected(10)
        phone.wait_closed(5)
        phone.close()
        if bridge is not None:
            bridge.stop()
    finally:
        running.stop()
    return 0


def _read_lines(inbox: queue.Queue[tuple[str, str | None]]) -> None:
    for line in sys.stdin:
        inbox.put(("line", line.rstrip("\n")))
    inbox.put(("eof", None))


def _converse(inbox: queue.Queue[tuple[str, str | None]], phone: Any, session: Any, caller: CallerVoice, feeder: MockSttFeeder, printer: TranscriptPrinter, mock_stt: bool) -> None:
    while True:
        try:
            kind, text = inbox.get(timeout=MAX_CALL_SECONDS)
        except queue.Empty:
            printer.line("CALL", f"still going after {MAX_CALL_SECONDS:.0f}s: hanging up")
            phone.hangup()
            return
        if kind == "ended" or session.is_disconnected:
            return
        if kind == "eof" or (text or "").strip().lower() in HANGUP_WORDS:
            printer.line("YOU", "hang up")
            phone.hangup()
            return
        line = (text or "").strip()
        if not line:
            continue
        if DTMF_LINE.match(line):
            printer.line("YOU", f"press {line}")
            phone.press(line)
            continue
        if mock_stt:
            feeder.expect(line)
        printer.line("YOU", f'say: "{line}"')
        phone.say(*caller.audio(line))


__all__ = ["CliError", "run"]
