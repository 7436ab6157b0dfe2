"""``voice-runtime demo``: a complete simulated call, offline, with a live transcript.

What runs: a real :class:`VoiceServer` on a loopback port; a :class:`SimulatedPhone` that dials it over a
real WebSocket and plays a scripted *caller*; and an agent *flow* — plain sequential code in its own
thread — that confirms a dental appointment: it greets, gets talked over (barge-in), asks again, branches on
what it heard, sends an SMS (simulated) and hangs up. With the ``local`` providers (Piper + Whisper) both
voices are real speech and the agent really transcribes the caller; with ``mock`` the audio is tones and the
words come from the script, but timing, marks and barge-in are the same.
"""

from __future__ import annotations

import re
import secrets
import sys
import wave
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from voice_runtime import call_events as ev
from voice_runtime.call_events import CallEvent
from voice_runtime.call_folder import new_call_folder
from voice_runtime.errors import CallError
from voice_runtime.providers.mock import tone_speech
from voice_runtime.recording import WavRecorder
from voice_runtime.report.calllog import CallLogWriter
from voice_runtime.server import VoiceServer
from voice_runtime.session import VoiceSession
from voice_runtime.stt import create_stt
from voice_runtime.testing import PhoneEvent, SimulatedPhone
from voice_runtime.transport import get_sms_transport
from voice_runtime.tts import create_tts

PATIENT_NUMBER = "+15550100123"

GREETING = (
    "Hello! This is Sunny Dental calling about your appointment with Doctor Lee. "
    "We have you booked for tomorrow afternoon at three o'clock, and we would like to make sure that still works for you."
)
QUESTION = "This is Sunny Dental. Can you come to your appointment tomorrow at three?"
CONFIRMED = "Great, you are all set for tomorrow at three. I will send you a text message with the details."
RESCHEDULE = "No problem. Our front desk will call you back to find a better time."
GOODBYE = "Thank you, goodbye!"

#: The caller's lines: the first one interrupts the greeting (barge-in), the second answers the question.
CALLER_LINES = ["Sorry, who is calling?", "Yes, that works for me."]

YES_WORDS = {"yes", "yeah", "yep", "sure", "works", "fine", "okay", "ok", "correct"}
NO_WORDS = {"no", "not", "can't", "cannot", "busy", "reschedule"}


def words(text: str) -> list[str]:
    """Lower-case words without punctuation or clitics ("who's" → "who"), as transcripts are compared."""
    return [re.sub(r"'(s|re|ll|d|ve|m)$", "", w) for w in re.findall(r"[a-z']+", text.lower())]


def classify(answer: str) -> str:
    said = set(words(answer))
    if said & NO_WORDS and not said & {"works"}:
        return "reschedule"
    if said & YES_WORDS:
        return "confirmed"
    return "unclear"


@dataclass
class DemoReport:
    """What happened, for the console summary and the end-to-end test."""

    heard: list[str] = field(default_factory=list)
    branch: str = ""
    barge_in_clear_latency: float | None = None  # caller speech onset → clear on the wire
    barge_in_stop_latency: float | None = None  # STT speech-start signal → clear on the wire
    greeting_outcome: str = ""
    agent_audio_after_barge_in: float | None = None  # seconds of agent audio the phone played after the onset
    transcript_latencies: list[float] = field(default_factory=list)  # end of caller speech → transcript
    first_audio_latencies: list[float] = field(default_factory=list)  # text → first agent audio
    sms: dict[str, str] | None = None
    wav_path: Path | None = None
    wav_seconds: float = 0.0
    call_id: str | None = None
    folder: Path | None = None  # this call's own folder (recording, log, timeline), when written under ``out_dir``
    log_path: Path | None = None  # the call's events as JSON lines (what ``voice-runtime report`` reads)
    timeline_path: Path | None = None  # the call's timeline picture, next to the WAV
    ok: bool = False
    error: str | None = None


def agent_flow(session: VoiceSession, report: DemoReport) -> None:
    """The agent: ordinary sequential code against the blocking session API."""
    session.wait_for_ws_connect(timeout=10)
    greeting = session.speak(GREETING)
    report.greeting_outcome = str(greeting.wait(timeout=60))
    if greeting.interrupted:
        heard = session.listen(timeout=20)  # what the caller said while interrupting
        report.heard.append(heard)
    answer = session.say_and_listen(QUESTION, timeout=20)
    report.heard.append(answer)
    branch = classify(answer)
    if branch == "unclear":  # ask once more, then give up gracefully
        answer = session.say_and_listen("Sorry, I did not catch that. Is tomorrow at three okay?", timeout=20)
        report.heard.append(answer)
        branch = classify(answer)
    report.branch = branch
    if branch == "confirmed":
        session.speak(CONFIRMED, wait=True, timeout=60)
        report.sms = get_sms_transport("mock").send_sms(PATIENT_NUMBER, "Sunny Dental: see you tomorrow at 3:00 PM.")
        session.log.emit("sms_sent", to=PATIENT_NUMBER, sid=report.sms["message_sid"])
    else:
        session.speak(RESCHEDULE, wait=True, timeout=60)
    session.speak(GOODBYE, wait=True, timeout=30)
    session.hangup(timeout=10)


class CallerVoice:
    """Produces the scripted caller's audio: Piper speech when available, otherwise tones.

    The caller's Piper voice runs with zero sampling noise so the same line always yields the same audio:
    the demo (and its test) then depend on the runtime, not on a lucky draw from the synthesizer.
    """

    def __init__(self, providers: str) -> None:
        self._piper: Any = None
        if providers == "local":
            from voice_runtime.providers.local_tts import PiperTts

            self._piper = PiperTts()

    def audio(self, text: str) -> tuple[np.ndarray, int]:
        if self._piper is not None:
            return self._piper.synthesize_pcm(text, length_scale=1.1, noise_scale=0.0, noise_w_scale=0.0)
        return tone_speech(max(0.6, len(text) / 14.0), frequency=180.0), 8000


class TranscriptPrinter:
    """Turns call events and phone events into a readable live transcript."""

    def __init__(self, out: TextIO, t0: float, report: DemoReport) -> None:
        self.out = out
        self.t0 = t0
        self.report = report
        self.lock = threading.Lock()
        self.caller_speech_started: float | None = None
        self.caller_speech_ended: float | None = None
        self.barge_in_at: float | None = None

    def line(self, at: float, who: str, text: str) -> None:
        with self.lock:
            self.out.write(f"[{at - self.t0:6.2f}s] {who:<7} {text}\n")
            self.out.flush()

    def on_call_event(self, event: CallEvent) -> None:
        d = event.data
        if event.kind == ev.STREAM_STARTED:
            self.line(event.at, "CALL", f"media stream started ({d.get('carrier')}, {event.call_id})")
        elif event.kind == ev.TTS_START:
            self.line(event.at, "AGENT", f'says: "{d.get("text")}"')
        elif event.kind == ev.TTS_FIRST_AUDIO:
            latency = d.get("latency") or 0.0
            self.report.first_audio_latencies.append(latency)
            self.line(event.at, "", f"first agent audio {latency * 1000:.0f} ms after the text")
        elif event.kind == ev.MARK_PLAYED:
            self.line(event.at, "", f"mark '{d.get('name')}' played: caller heard it all")
        elif event.kind == ev.MARK_CLEARED:
            self.line(event.at, "", f"mark '{d.get('name')}' cleared: the rest was never heard")
        elif event.kind == ev.BARGE_IN:
            self.barge_in_at = event.at
            onset = self.caller_speech_started
            note = ""
            if onset is not None:
                note = f" ({(event.at - onset) * 1000:.0f} ms after the caller started talking)"
            self.line(event.at, "BARGE", f"caller talked over the agent: stopping playback{note}")
        elif event.kind == ev.CLEAR_SENT:
            onset = self.caller_speech_started
            if onset is not None and self.report.barge_in_clear_latency is None:
                self.report.barge_in_clear_latency = event.at - onset
            if self.barge_in_at is not None and self.report.barge_in_stop_latency is None:
                self.report.barge_in_stop_latency = event.at - self.barge_in_at
        elif event.kind == ev.STT_FINAL:
            latency = ""
            if self.caller_speech_ended is not None:
                seconds = event.at - self.caller_speech_ended
                self.report.transcript_latencies.append(seconds)
                latency = f"  ({seconds * 1000:.0f} ms after end of speech)"
            self.line(event.at, "HEARD", f'"{d.get("text")}"{latency}')
        elif event.kind == ev.DTMF_RECEIVED:
            self.line(event.at, "DTMF", str(d.get("digit")))
        elif event.kind == "sms_sent":
            self.line(event.at, "SMS", f"to {d.get('to')} (sid {d.get('sid')})")
        elif event.kind == ev.HANGUP_REQUESTED:
            self.line(event.at, "CALL", "agent hangs up")
        elif event.kind == ev.CALL_ENDED:
            self.line(event.at, "CALL", f"ended ({d.get('reason')})")

    def on_phone_event(self, event: PhoneEvent) -> None:
        if event.kind == "caller_speech_start":
            self.caller_speech_started = event.at
        elif event.kind == "caller_speech_end":
            self.caller_speech_ended = event.at


def run_demo(
    *,
    providers: str = "auto",
    wav_path: str | Path | None = None,
    out_dir: str | Path | None = "calls",
    out: TextIO = sys.stdout,
    barge_in_after: float = 2.0,
) -> DemoReport:
    """Run the whole simulated call; returns a :class:`DemoReport`.

    The recording (and the call log and timeline next to it) go to ``wav_path`` when given, else to
    ``call.wav`` in a new folder for this call under ``out_dir`` (``calls/<start time>-<call id>/``), so a
    run never overwrites the previous one. Both None: nothing is written.
    """
    providers = _resolve_providers(providers)
    report = DemoReport()
    report.call_id = "CA" + secrets.token_hex(16)  # the simulated carrier's call id, known before the call
    if not wav_path and out_dir:
        report.folder = new_call_folder(out_dir, report.call_id, datetime.now())
        wav_path = report.folder / "call.wav"
    out.write(f"voice_runtime demo: a simulated outbound call with {providers} speech providers\n")
    if providers == "local":
        out.write("loading Piper and Whisper (first run takes a few seconds)...\n")
    stt_factory = (lambda: create_stt("local")) if providers == "local" else (lambda: create_stt("mock", script=list(CALLER_LINES)))
    tts = create_tts(providers)
    _warm_up(tts)
    if providers == "local":
        _warm_up(create_stt("local"))
    caller = CallerVoice(providers)
    caller_audio = [caller.audio(line) for line in CALLER_LINES]

    # The runtime's own recorder writes the WAV (stereo, aligned to the call's clock), so the timeline can
    # put the waveform under the events it belongs to.
    recorder_factory = (lambda _session: WavRecorder(Path(wav_path))) if wav_path else None
    server = VoiceServer(stt_factory=stt_factory, tts_factory=lambda: tts, recorder_factory=recorder_factory)
    t0 = time.monotonic()
    printer = TranscriptPrinter(out, t0, report)
    flow_done = threading.Event()
    session = server.new_session()
    session.add_event_listener(printer.on_call_event)
    call_log = CallLogWriter(Path(wav_path).with_suffix(".jsonl")).attach(session) if wav_path else None
    saved = threading.Event()
    session.add_event_listener(lambda e: e.kind == ev.RECORDING_SAVED and saved.set())  # type: ignore[arg-type,func-returns-value]  # narrow ignore so scripts/typecheck.sh holds zero errors; a real fix is for this module's owner

    def flow() -> None:
        try:
            agent_flow(session, report)
        except CallError as exc:
            report.error = str(exc)
        except Exception as exc:  # the demo reports, it does not hide
            report.error = f"{type(exc).__name__}: {exc}"
        finally:
            flow_done.set()

    with server.start() as running:
        token = server.expect_stream(session)
        threading.Thread(target=flow, name="agent-flow", daemon=True).start()
        phone = SimulatedPhone(running.ws_url + f"/stream/{token}", custom_parameters={"to_number": PATIENT_NUMBER}, call_id=report.call_id)
        phone.add_listener(printer.on_phone_event)
        phone.connect()
        try:
            _caller_script(phone, caller_audio, printer, barge_in_after)
            flow_done.wait(120)
            phone.wait_closed(10)
        finally:
            phone.close()
        if report.barge_in_clear_latency is not None and printer.caller_speech_started is not None:
            report.agent_audio_after_barge_in = _agent_audio_after(phone, printer.caller_speech_started)
        if wav_path and saved.wait(15):
            report.wav_path = Path(wav_path)
            with wave.open(str(wav_path)) as recorded:
                report.wav_seconds = recorded.getnframes() / recorded.getframerate()
    if call_log is not None and call_log.written.wait(10):
        report.log_path = call_log.flush()  # again, now that the recording_saved event is in it too
        report.timeline_path = _draw_timeline(report.log_path, out)
    report.ok = report.error is None and report.branch in ("confirmed", "reschedule")
    _summary(out, report)
    return report


def _draw_timeline(log_path: Path, out: TextIO) -> Path | None:
    """The timeline picture next to the WAV; skipped with one line when matplotlib is not installed."""
    try:
        from voice_runtime.report import render

        return render(log_path, log_path.with_suffix(".png"))
    except ImportError:
        out.write("timeline picture skipped: pip install 'voice-runtime[report]' to draw it\n")
        return None


def _caller_script(phone: SimulatedPhone, audio: list[tuple[np.ndarray, int]], printer: TranscriptPrinter, barge_in_after: float) -> None:
    """The caller: interrupts the greeting, then answers the question once it has been asked."""
    start = phone.wait_for("playback_start", timeout=30)
    wait_until = start.at + barge_in_after
    threading.Event().wait(max(0.0, wait_until - time.monotonic()))  # listen to the greeting for a while
    printer.line(time.monotonic(), "CALLER", f'says (over the agent): "{CALLER_LINES[0]}"')
    first = phone.say(*audio[0])
    first.wait_finished(30)
    # Wait for the agent's question to finish playing, then answer.
    after = time.monotonic()
    phone.wait_for("playback_start", timeout=30, after=after)
    phone.wait_for("playback_end", timeout=60, after=after)
    printer.line(time.monotonic(), "CALLER", f'says: "{CALLER_LINES[1]}"')
    phone.say(*audio[1]).wait_finished(30)


def _agent_audio_after(phone: SimulatedPhone, onset: float) -> float:
    """Seconds of agent audio the phone played after the caller started talking (barge-in cost)."""
    ends = [e for e in phone.events_of("playback_end") if e.at >= onset]
    return max(0.0, ends[0].at - onset) if ends else 0.0


def _resolve_providers(providers: str) -> str:
    if providers != "auto":
        return providers
    try:
        import faster_whisper  # noqa: F401

        from voice_runtime.providers import local_stt, local_tts  # noqa: F401
    except ImportError:
        return "mock"
    return "local"


def _warm_up(provider: Any) -> None:
    warm = getattr(provider, "warm_up", None)
    if callable(warm):
        warm()


def _summary(out: TextIO, report: DemoReport) -> None:
    out.write("\n--- summary ---\n")
    out.write(f"caller said: {report.heard}\n")
    out.write(f"branch taken: {report.branch or '-'}\n")
    if report.barge_in_clear_latency is not None:
        stop = report.barge_in_stop_latency
        out.write(
            f"barge-in: clear sent {report.barge_in_clear_latency * 1000:.0f} ms after the caller started talking"
            + (f" ({stop * 1000:.1f} ms after the STT detected speech)" if stop is not None else "")
            + "\n"
        )
    if report.transcript_latencies:
        out.write("end of caller speech -> transcript: " + ", ".join(f"{x * 1000:.0f} ms" for x in report.transcript_latencies) + "\n")
    if report.first_audio_latencies:
        out.write("text -> first agent audio: " + ", ".join(f"{x * 1000:.0f} ms" for x in report.first_audio_latencies) + "\n")
    if report.sms:
        out.write(f"SMS: {report.sms}\n")
    if report.wav_path:
        out.write(f"recording: {report.wav_path} (stereo: left caller, right agent; {report.wav_seconds:.1f} s)\n")
    if report.log_path:
        out.write(f"call log: {report.log_path} (voice-runtime report {report.log_path} -o call.html)\n")
    if report.timeline_path:
        out.write(f"timeline: {report.timeline_path}\n")
    out.write("result: " + ("OK" if report.ok else f"FAILED {report.error or ''}") + "\n")
