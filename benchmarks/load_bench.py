"""Load benchmark: N simulated carrier calls against a real VoiceServer, in separate processes.

Run:  python benchmarks/load_bench.py --calls 200                 # one run, Twilio dialect
      python benchmarks/load_bench.py --sweep 100,200,300,400,500  # largest N that holds the targets
      python benchmarks/load_bench.py --calls 300 --dialect plivo --server-mode native --workers 2

Three kinds of process, all on this machine, traffic on 127.0.0.1 only:

* **server** (one, or ``--workers`` processes sharing one port with SO_REUSEPORT): a real ``VoiceServer`` with
  ``MockTts`` and ``MockStt`` (energy VAD). Each call's flow thread loops ``listen`` → ``speak(wait=True)``.
* **load generator** (one process, asyncio, uvloop when installed): N calls over raw sockets speaking the
  carrier's side of the dialect. Each call streams a 20 ms caller frame every 20 ms in real time (silence, and
  a 300 ms tone burst after each agent utterance has "played" so ``listen`` returns), receives the agent's
  audio, plays it out on a virtual carrier clock and echoes each mark when its audio has played. Frames are
  sent with a zero masking key (legal per RFC 6455 §5.3; the server cannot tell), so masking costs nothing and
  the generator stays cheap: one template fill and one ``write`` per frame.
* **orchestrator** (this process when run normally): starts both, reads server CPU and RSS from
  ``/proc/<pid>``, tells the server when the measurement window opens and closes, and prints the results.

Measurements (``benchmarks/README.md`` defines each precisely):

* server CPU ms per call-second (utime+stime over the window / (N × window));
* outbound pacing lateness at the phone, p50/p99/max, per 20 ms agent frame: how late the frame became
  playable relative to when continuous playback of its utterance needed it;
* inbound frame → STT latency: every caller frame carries its send time (``time.monotonic()``, system-wide on
  Linux) in its first 18 μ-law bytes (quiet codes, so the VAD does not hear them); ``MockStt.on_frame``
  subtracts it from the arrival time;
* frames lost / duplicated, both directions, per call: inbound by the counter embedded in each frame,
  outbound by comparing each played utterance byte for byte with what ``MockTts`` produces for its text;
* RSS per call, idle (connected, silence streaming, flow blocked in ``listen``) and active.

The final line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import random
import select
import socket
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TEXTS = (
    "Thanks for calling, how can I help you today?",
    "Sure, let me check that for you.",
    "Your appointment is confirmed for Tuesday at ten.",
    "Is there anything else?",
)
FRAME = 160
FRAME_S = 0.02
BURST_FRAMES = 15  # 300 ms of caller "speech" after each agent utterance
HEADER = 18  # μ-law bytes carrying (call, counter, send time) in each caller frame
#: Header nibble n is sent as μ-law byte 0xF0|n: exponent 0, so |sample| <= 120 of 32767 — inaudible to the VAD.
_TO_ULAW = bytes.maketrans(b"0123456789abcdef", bytes(range(0xF0, 0x100)))
_FROM_ULAW = bytes.maketrans(bytes(range(0xF0, 0x100)), b"0123456789abcdef")
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ===================================================================================== /proc helpers
def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), in seconds."""
    user, system = cpu_split(pid)
    return user + system


def cpu_split(pid: int) -> tuple[float, float]:
    """(utime, stime) of ``pid`` (all its threads), in seconds: user-mode time is the Python and C code run,
    system time mostly the socket calls, so the split says which of the two a difference is made of."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine so far, from /proc/stat (all cores summed)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    steal = fields[7] if len(fields) > 7 else 0
    return (sum(fields[:8]) - idle - steal) / CLK_TCK, steal / CLK_TCK


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(q / 100.0 * (len(ordered) - 1)))))
    return ordered[index]


def now_us32() -> int:
    return int(time.monotonic() * 1e6) & 0xFFFFFFFF


# ===================================================================================== server role
class Probe:
    """Server-side measurements, fed from ``MockStt.on_frame`` and the flows (event loop + flow threads)."""

    def __init__(self) -> None:
        self.active = False
        self.latency_us: list[int] = []
        self.calls: dict[int, list[int]] = {}  # call -> [received, duplicates, highest counter]
        self.utterances = 0
        self.mark_outcomes: dict[str, int] = {}
        self.flow_errors = 0

    def on_frame(self, frame: bytes) -> None:
        try:
            value = int(frame[:HEADER].translate(_FROM_ULAW), 16)
        except ValueError:
            return  # not one of ours (cannot happen with this generator)
        sent = value & 0xFFFFFFFF
        counter = (value >> 32) & 0xFFFFFF
        call = value >> 56
        state = self.calls.get(call)
        if state is None:
            state = self.calls[call] = [0, 0, -1]
        state[0] += 1
        if counter <= state[2]:
            state[1] += 1
        else:
            state[2] = counter
        if self.active:
            self.latency_us.append((now_us32() - sent) & 0xFFFFFFFF)


def queue_only(stt: Any) -> Any:
    """The before row: ``stt`` without the inline path (as any provider without ``feed_audio``), so the session
    queues every frame for its reader task. ``feed_audio`` is withdrawn after ``start``, which offers it."""
    start = stt.start

    async def start_without_inline(queue: Any) -> None:
        await start(queue)
        stt.feed_audio = None

    stt.start = start_without_inline
    return stt


#: The fake ElevenLabs' API key (loopback only) and its VAD end-of-speech wait, which is the same 300 ms as
#: MockStt's ``end_ms`` so both provider rows model the same endpointing delay.
FAKE_API_KEY = "load-bench-key"
FAKE_VAD_SILENCE_S = 0.3


def elevenlabs_factories(probe: Probe, fake_http: str, fake_ws: str, stt_min_chunk_ms: int = 60,
                         stt_ws_client: str = "auto", tts_http: str = "auto") -> tuple[Any, Any]:
    """(stt_factory, tts_factory) building the real ElevenLabs clients, one pair per call, aimed at the fake.

    The STT is the real ``ElevenLabsRealtimeStt`` with one hook: every frame it takes off the session's inbound
    queue is shown to the probe first (frame → STT latency, inbound loss), as ``MockStt.on_frame`` does.
    ``echo_discard_seconds=0``: the generator's caller answers the instant the agent's mark is echoed, and on
    this synthetic line there is no echo to discard (the default 0.4 s would swallow every answer).
    """
    from voice_runtime.providers.elevenlabs_stt import ElevenLabsRealtimeStt
    from voice_runtime.providers.elevenlabs_tts import ElevenLabsTts

    class ProbedStt(ElevenLabsRealtimeStt):
        def _enqueue(self, item: Any) -> None:
            if isinstance(item, bytes):
                for start in range(0, len(item) - FRAME + 1, FRAME):
                    probe.on_frame(item[start : start + FRAME])
            super()._enqueue(item)

    def stt_factory() -> Any:
        return ProbedStt(api_key=FAKE_API_KEY, base_url=fake_ws, vad_silence_threshold_secs=FAKE_VAD_SILENCE_S,
                         echo_discard_seconds=0.0, min_chunk_ms=stt_min_chunk_ms, ws_client=stt_ws_client)

    def tts_factory() -> Any:
        return ElevenLabsTts(api_key=FAKE_API_KEY, base_url=fake_http, http_transport=tts_http)

    return stt_factory, tts_factory


def expected_agent_audio(providers: str) -> list[bytes]:
    """What the phone must hear for each of TEXTS, byte for byte, from the provider the server uses."""
    if providers == "elevenlabs":
        from voice_runtime.testing.fake_elevenlabs import FakeElevenLabs

        fake = FakeElevenLabs()  # not started: only its (deterministic) audio model is used
        return [fake._audio(t, "ulaw_8000")[0] for t in TEXTS]
    from voice_runtime.providers.mock import MockTts

    tts = MockTts()
    return [tts.audio_for(t) for t in TEXTS]


def build_server(probe: Probe, batch_ms: float = 400.0, lead_ms: float = 240.0, background: bool = False,
                 background_lead_ms: float = 240.0, observe: str = "on", providers: str = "mock",
                 fake_http: str = "", fake_ws: str = "", stt_min_chunk_ms: int = 60,
                 speech_read_ahead: str = "default", stt_ws_client: str = "auto", stt_feed: str = "inline",
                 tts_http: str = "auto") -> Any:
    from voice_runtime import ConnectionConfig, VoiceServer
    from voice_runtime.audio.g711 import pcm16_to_ulaw
    from voice_runtime.errors import CallError
    from voice_runtime.providers.mock import MockStt, MockTts, tone_speech

    # --background: every call has a 3 s looping bed at volume 0.1 under speech and in silences
    bed = pcm16_to_ulaw(tone_speech(3.0, frequency=110.0)) if background else b""
    if providers == "elevenlabs":
        stt_factory, tts_factory = elevenlabs_factories(probe, fake_http, fake_ws, stt_min_chunk_ms, stt_ws_client, tts_http)
    else:
        tts = MockTts()  # shared: its audio cache would otherwise count as per-call memory

        def stt_factory() -> Any:
            stt = MockStt(default_text="ok", end_ms=300)
            stt.on_frame = probe.on_frame
            return stt

        def tts_factory() -> Any:
            return tts

    if stt_feed == "queue":  # --stt-feed queue: the before row, every frame through the inbound queue
        inline_factory = stt_factory

        def stt_factory() -> Any:
            return queue_only(inline_factory())

    def flow(session: Any) -> None:
        k = 0
        try:
            if bed:
                session.set_background(bed, volume=0.1)
            while True:
                session.listen(timeout=300)
                result = session.speak(TEXTS[k % len(TEXTS)], wait=True, timeout=60)
                k += 1
                outcome = str(result.mark.outcome) if result.mark is not None else "none"
                probe.mark_outcomes[outcome] = probe.mark_outcomes.get(outcome, 0) + 1
                probe.utterances += 1
        except CallError:
            pass
        except Exception:
            probe.flow_errors += 1

    # barge-in off: the caller only speaks after the agent's mark echo, and the byte-exact outbound check
    # needs every utterance played whole.
    # --speech-read-ahead: the sessions' speech_read_ahead_seconds ("default": the runtime's; "none": off)
    read_ahead = {} if speech_read_ahead == "default" else {
        "speech_read_ahead_seconds": None if speech_read_ahead == "none" else float(speech_read_ahead)}
    config = ConnectionConfig(max_batch_seconds=batch_ms / 1000.0, playout_lead=lead_ms / 1000.0,
                              background_lead=background_lead_ms / 1000.0)
    return VoiceServer(
        stt_factory=stt_factory,
        tts_factory=tts_factory,
        inbound_flow=flow,
        session_defaults={"barge_in": False, **read_ahead},
        connection_config=config,
        # observability (docs/observability.md): "off" = none of it; "on" = turn tracking, CallReport, Prometheus,
        # lifecycle log lines; "log" = "on" plus a JSON-lines call log per call
        observe=observe != "off",
        call_log_dir=os.path.join(os.environ.get("TMPDIR", "/tmp"), f"load_bench_calls_{os.getpid()}") if observe == "log" else None,
    )


def reuse_port_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def server_main(args: argparse.Namespace) -> None:
    import logging

    logging.basicConfig(level=logging.ERROR)
    if os.environ.get("LOAD_BENCH_GC") == "off":  # diagnostics: is a latency tail the cyclic GC?
        import gc

        gc.disable()
    probe = Probe()
    server = build_server(probe, args.batch_ms, args.lead_ms, background=args.background,
                          background_lead_ms=args.background_lead_ms, observe=args.observe,
                          providers=args.providers, fake_http=args.fake_http, fake_ws=args.fake_ws,
                          stt_min_chunk_ms=args.stt_min_chunk_ms, speech_read_ahead=args.speech_read_ahead,
                          stt_ws_client=args.stt_ws_client, stt_feed=args.stt_feed, tts_http=args.tts_http)
    if args.server_mode == "native":
        from voice_runtime.server.ws_native import start_native

        running = start_native(server, host="127.0.0.1", port=args.port, reuse_port=args.port != 0)
        port = running.port
    elif args.server_mode == "picows":
        from voice_runtime.server.ws_picows import start_picows

        running = start_picows(server, host="127.0.0.1", port=args.port, reuse_port=args.port != 0)
        port = running.port
    else:
        if args.port:  # a worker of several: uvicorn on a socket shared through SO_REUSEPORT
            running = start_uvicorn_on(server, reuse_port_socket("127.0.0.1", args.port))
        else:
            running = server.start(port=0)
        port = running.port
    print(f"READY {port}", flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "start":
            probe.latency_us = []
            probe.active = True
            print("OK", flush=True)
        elif cmd == "stop":
            probe.active = False
            print("OK", flush=True)
        elif cmd == "report":
            stats: dict[str, int] = {}
            for connection in list(server.connections):
                session = connection.session
                if session is not None:
                    for key, value in session.stats.items():
                        stats[key] = stats.get(key, 0) + value
                for key, value in connection.stats.items():
                    stats[f"conn_{key}"] = stats.get(f"conn_{key}", 0) + value
            report = {
                "latency_us": probe.latency_us,
                "calls": {str(k): v for k, v in probe.calls.items()},
                "utterances": probe.utterances,
                "mark_outcomes": probe.mark_outcomes,
                "flow_errors": probe.flow_errors,
                "live_connections": len(server.connections),
                "stats": stats,
                "threads": threading.active_count(),
            }
            print("REPORT " + json.dumps(report), flush=True)
        elif cmd == "quit":
            break
    running.stop(timeout=5)
    log_dir = server.observer.call_log_dir
    if log_dir is not None:
        import shutil

        print(f"CALL_LOGS {sum(1 for _ in log_dir.glob('*.jsonl'))}", file=sys.stderr, flush=True)
        shutil.rmtree(log_dir, ignore_errors=True)
    os._exit(0)


def start_uvicorn_on(server: Any, sock: socket.socket) -> Any:
    """uvicorn on an already-bound (SO_REUSEPORT) socket, in a thread, like ``VoiceServer.start``."""
    import uvicorn

    from voice_runtime.server.runners import RunningServer

    config = uvicorn.Config(server.app, log_level="warning", lifespan="off", ws_ping_interval=None,
                            ws_max_size=server.connection_config.hard_max_inbound_message)
    uv = uvicorn.Server(config)
    uv.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started and time.monotonic() < deadline:
        time.sleep(0.01)
    host, port = sock.getsockname()[:2]
    return RunningServer(host, port, uv, thread)


# ===================================================================================== fake ElevenLabs role
def fake_main(args: argparse.Namespace) -> None:
    """The fake ElevenLabs (``voice_runtime.testing.fake_elevenlabs``) in a process of its own, so its CPU is
    not the server's. Its latency model is its own: STT commits after ``FAKE_VAD_SILENCE_S`` of caller silence
    (audio time), TTS streams 160-byte μ-law chunks at ``--fake-tts-realtime-factor`` × real time after
    ``--fake-tts-first-byte-ms``. uvloop when installed, like the generator."""
    import logging

    logging.basicConfig(level=logging.ERROR)
    try:
        import uvloop

        uvloop.install()  # the fake's asyncio.run() in its thread then runs on uvloop
    except ImportError:
        pass
    from voice_runtime.testing.fake_elevenlabs import FakeElevenLabs

    fake = FakeElevenLabs(api_key=FAKE_API_KEY, tts_realtime_factor=args.fake_tts_realtime_factor or None,
                          tts_first_byte_delay=args.fake_tts_first_byte_ms / 1000.0)
    fake.start(timeout=30)
    print(f"READY {fake.http_url} {fake.ws_url}", flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "report":
            sessions = fake.stt_sessions
            report = {
                "stt_sessions": len(sessions),
                "stt_commits": sum(len(r.commits) for r in sessions),
                "stt_chunks": sum(r.chunks for r in sessions),
                "stt_audio_bytes": sum(len(r.audio) for r in sessions),
                "tts_requests": len(fake.tts_requests),
                "tts_completed": sum(1 for r in fake.tts_requests if r.completed),
                "tts_failed": sum(1 for r in fake.tts_requests if r.status != 200),
            }
            print("REPORT " + json.dumps(report), flush=True)
        elif cmd == "quit":
            break
    fake.stop(timeout=5)
    os._exit(0)


# ===================================================================================== generator role
class Dialect:
    """The carrier side of one dialect, reduced to what the generator needs on its hot path."""

    def __init__(self, name: str) -> None:
        from voice_runtime.testing.carriers import carrier_codec

        self.name = name
        self.carrier_codec = carrier_codec
        if name == "twilio":
            self.media_tpl = ('{"event":"media","sequenceNumber":"%d","media":{"track":"inbound","chunk":"%d",'
                              '"timestamp":"%d","payload":"%s"},"streamSid":"%s"}')
            self.media_events = ("media",)
            self.mark_events = ("mark",)
            self.clear_events = ("clear",)
        else:
            self.media_tpl = ('{"event":"media","sequenceNumber":%d,"streamId":"%s",'
                              '"media":{"track":"inbound","chunk":%d,"timestamp":"%d","payload":"%s"}}')
            self.media_events = ("playAudio",)
            self.mark_events = ("checkpoint",)
            self.clear_events = ("clearAudio",)

    def codec(self, idx: int) -> Any:
        if self.name == "twilio":
            return self.carrier_codec("twilio", call_id=f"CA{idx:032d}", stream_id=f"MZ{idx:032d}")
        return self.carrier_codec("plivo", call_id=f"00000000-0000-4000-8000-{idx:012d}",
                                  stream_id=f"11111111-0000-4000-8000-{idx:012d}", extra_headers_style="omit",
                                  epoch_timestamps=False)

    def media(self, seq: int, chunk: int, ts: int, payload: str, sid: str) -> str:
        if self.name == "twilio":
            return self.media_tpl % (seq, chunk, ts, payload, sid)
        return self.media_tpl % (seq, sid, chunk, ts, payload)

    def mark_name(self, msg: dict[str, Any]) -> str:
        return msg["mark"]["name"] if self.name == "twilio" else msg["name"]

    def media_payload(self, msg: dict[str, Any]) -> bytes:
        return base64.b64decode(msg["media"]["payload"])


def ws_frame(text: str) -> bytes:
    """One client text frame, masked with the all-zero key (so the payload goes out as is)."""
    data = text.encode()
    n = len(data)
    if n < 126:
        return bytes((0x81, 0x80 | n, 0, 0, 0, 0)) + data
    if n < 65536:
        return bytes((0x81, 0xFE, n >> 8, n & 0xFF, 0, 0, 0, 0)) + data
    return bytes((0x81, 0xFF)) + n.to_bytes(8, "big") + b"\0\0\0\0" + data


class Stats:
    def __init__(self) -> None:
        self.window = False
        self.lateness_ms: list[float] = []
        self.turn_ms: list[float] = []
        self.ticker_late_ms: list[float] = []
        self.connect_failures = 0
        self.protocol_errors = 0
        self.clears = 0  # bed-only clears (with --background): speech replacing the bed queued at the carrier


class Call(asyncio.Protocol):
    """One simulated carrier call on a raw socket."""

    def __init__(self, gen: Generator, idx: int) -> None:
        self.gen, self.idx = gen, idx
        self.d = gen.dialect
        self.codec = self.d.codec(idx)
        self.sid = self.codec.stream_id
        self.transport: asyncio.Transport | None = None
        self.handshake_done = asyncio.get_running_loop().create_future()
        self.buf = bytearray()
        self.open = False
        self.closed = False
        self.seq = 1
        self.chunk = 0
        self.counter = 0
        self.next_due = 0.0
        self.streaming = False
        self.burst_left = 0
        self.burst_end: float | None = None  # when the caller's last loud frame was sent (the caller stopped)
        # outbound playout model
        self.play_end = 0.0
        self.u_start: float | None = None
        self.u_off = 0.0
        self.u_bytes = bytearray()
        self.utterances: list[tuple[int, int]] = []  # (length, crc32) of each mark-terminated utterance
        self.pending_echoes = 0
        self.frames_sent = 0
        self.close_code: int | None = None

    # -- socket ----------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            (f"GET {self.gen.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.gen.port}\r\nUpgrade: websocket\r\n"
             f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.open = False
        if not self.handshake_done.done():
            self.handshake_done.set_exception(ConnectionError("closed during handshake"))

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end])
            del buf[: end + 4]
            if b" 101 " not in head.split(b"\r\n", 1)[0]:
                self.handshake_done.set_exception(ConnectionError(head.split(b"\r\n", 1)[0].decode()))
                self.transport.close()  # type: ignore[union-attr]
                return
            self.open = True
            if not self.handshake_done.done():  # the wait may already have failed (timed out, closed)
                self.handshake_done.set_result(None)
        while len(buf) >= 2:
            b0, b1 = buf[0], buf[1]
            n = b1 & 0x7F
            pos = 2
            if n == 126:
                if len(buf) < 4:
                    return
                n = int.from_bytes(buf[2:4], "big")
                pos = 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n = int.from_bytes(buf[2:10], "big")
                pos = 10
            if len(buf) < pos + n:
                return
            payload = bytes(buf[pos : pos + n])
            del buf[: pos + n]
            opcode = b0 & 0x0F
            if opcode == 1:
                self.on_message(payload)
            elif opcode == 8:
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self.open = False
                self.streaming = False
                self.transport.close()  # type: ignore[union-attr]
                return

    def send_text(self, text: str) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(ws_frame(text))

    # -- carrier behaviour ---------------------------------------------------------------------------
    def on_message(self, payload: bytes) -> None:
        import orjson

        msg = orjson.loads(payload)
        event = msg.get("event")
        now = time.monotonic()
        if event in self.d.media_events:
            audio = self.d.media_payload(msg)
            if self.u_start is None:
                self.u_start = max(now, self.play_end)
                self.u_off = 0.0
                if self.burst_end is not None:  # caller stopped → agent audible (playout of the answer starts)
                    if self.gen.stats.window:
                        self.gen.stats.turn_ms.append((self.u_start - self.burst_end) * 1000.0)
                    self.burst_end = None
            if self.gen.stats.window:
                late = self.gen.stats.lateness_ms
                for j in range((len(audio) + FRAME - 1) // FRAME):
                    needed = self.u_start + self.u_off + j * FRAME_S
                    late.append(max(0.0, (now - needed) * 1000.0))
            self.u_off += len(audio) / 8000.0
            self.play_end = max(self.play_end, now) + len(audio) / 8000.0
            self.u_bytes += audio
        elif event in self.d.mark_events:
            name = self.d.mark_name(msg)
            self.utterances.append((len(self.u_bytes), zlib.crc32(self.u_bytes)))
            self.u_bytes = bytearray()
            self.u_start = None
            self.pending_echoes += 1
            asyncio.get_running_loop().call_later(max(0.0, self.play_end - now), self.echo, name)
        elif event in self.d.clear_events:
            if not self.gen.args.background:
                self.gen.stats.protocol_errors += 1  # the bench never barges in: a clear is unexpected
                return
            # With a bed, the server clears bed queued here when speech comes (speech replaces it rather than
            # waiting behind it). A carrier drops its buffer: playout restarts with the next media, which
            # starts a new playout for the lateness model (nothing queued before the clear is needed any more).
            self.gen.stats.clears += 1
            self.play_end = now
            self.u_start = None
        else:
            self.gen.stats.protocol_errors += 1

    def echo(self, name: str) -> None:
        self.pending_echoes -= 1
        if self.closed:
            return
        self.send_text(self.codec.mark_echo(name))
        if self.gen.talking:
            self.burst_left = BURST_FRAMES  # the caller answers once the agent has finished

    def tick(self, now: float) -> None:
        """Send every caller frame that is due (normally exactly one)."""
        frames = []
        gen = self.gen
        while self.next_due <= now and self.streaming:
            if self.burst_left > 0:
                body = gen.tone_b64[BURST_FRAMES - self.burst_left]
                self.burst_left -= 1
                if self.burst_left == 0:
                    self.burst_end = now
            else:
                body = gen.silence_b64
            header = f"{(self.idx << 56) | ((self.counter & 0xFFFFFF) << 32) | now_us32():018x}"
            payload = base64.b64encode(header.encode().translate(_TO_ULAW)).decode() + body
            frames.append(ws_frame(self.d.media(self.seq, self.chunk, self.chunk * 20, payload, self.sid)))
            self.seq += 1
            self.chunk += 1
            self.counter += 1
            self.frames_sent += 1
            self.next_due += FRAME_S
        if frames and self.transport is not None and not self.closed:
            self.transport.write(b"".join(frames) if len(frames) > 1 else frames[0])

    def expected_report(self) -> dict[str, Any]:
        lost = dup = corrupt = 0
        for k, (length, crc) in enumerate(self.utterances):
            ref = self.gen.expected[k % len(TEXTS)]
            if length < ref[0]:
                lost += (ref[0] - length + FRAME - 1) // FRAME
            elif length > ref[0]:
                dup += (length - ref[0] + FRAME - 1) // FRAME
            elif crc != ref[1]:
                corrupt += 1
        return {"utterances": len(self.utterances), "out_lost": lost, "out_dup": dup, "out_corrupt": corrupt}


class Generator:
    def __init__(self, args: argparse.Namespace) -> None:
        from voice_runtime.audio.g711 import pcm16_to_ulaw
        from voice_runtime.providers.mock import tone_speech

        self.args = args
        self.port = args.port
        self.path = "/stream"
        self.dialect = Dialect(args.dialect)
        self.stats = Stats()
        self.calls: list[Call] = []
        self.talking = False
        tone = pcm16_to_ulaw(tone_speech(BURST_FRAMES * FRAME_S, frequency=180.0, amplitude=12000.0))
        rest = FRAME - HEADER
        self.silence_b64 = base64.b64encode(b"\xff" * rest).decode()
        self.tone_b64 = [base64.b64encode(tone[i * FRAME + HEADER : (i + 1) * FRAME]).decode() for i in range(BURST_FRAMES)]
        self.expected = [(len(a), zlib.crc32(a)) for a in expected_agent_audio(args.providers)]
        self.commands: asyncio.Queue[str] = asyncio.Queue()
        self.groups: list[list[Call]] = [[] for _ in range(10)]  # ticker slots, 2 ms apart
        self.running = False

    def say(self, line: str) -> None:
        print(line, flush=True)

    async def command(self, expected: str) -> None:
        while (await self.commands.get()) != expected:
            pass

    async def ticker(self) -> None:
        slots = len(self.groups)
        groups = self.groups
        step = FRAME_S / slots
        t = time.monotonic()
        s = 0
        while self.running:
            now = time.monotonic()
            if self.stats.window:
                self.stats.ticker_late_ms.append((now - t) * 1000.0)
            for call in groups[s]:
                if call.streaming:
                    call.tick(now)
            s = (s + 1) % slots
            t += step
            delay = t - time.monotonic()
            if delay < -0.5:  # hopelessly behind: resynchronise (frames are still sent, see Call.tick)
                t = time.monotonic()
                delay = 0
            await asyncio.sleep(max(0.0, delay))

    async def connect(self, idx: int) -> Call | None:
        loop = asyncio.get_running_loop()
        try:
            _, call = await asyncio.wait_for(loop.create_connection(lambda: Call(self, idx), "127.0.0.1", self.port), 10)
            await asyncio.wait_for(call.handshake_done, 30)  # a contended machine can take this long
        except Exception as exc:
            self.stats.connect_failures += 1
            if self.stats.connect_failures <= 3:
                print(f"# connect {idx} failed: {exc!r}", file=sys.stderr)
            return None
        for message in call.codec.opening():
            call.send_text(message)
        call.next_due = time.monotonic() + FRAME_S
        call.streaming = True
        self.groups[idx % len(self.groups)].append(call)
        return call

    async def run(self) -> None:
        args = self.args
        loop = asyncio.get_running_loop()
        threading.Thread(target=self._read_stdin, args=(loop,), daemon=True).start()
        self.running = True
        # ramp: a new call starts every 1/--ramp seconds whether or not the earlier ones have finished their
        # handshake, as a carrier's calls arrive. (Waiting for each handshake before the next connect made the
        # ramp rate 1 / handshake time: on a busy server 500 calls took longer than the orchestrator's deadline,
        # and the refusals printed after it had stopped the servers looked like the cause.) The ticker runs from
        # the start.
        ticker_task = asyncio.ensure_future(self.ticker())
        t0 = time.monotonic()
        pending = []
        for i in range(args.calls):
            pending.append(asyncio.ensure_future(self.connect(i)))
            await asyncio.sleep(max(0.0, t0 + (i + 1) / args.ramp - time.monotonic()))
        self.calls = [call for call in await asyncio.gather(*pending) if call is not None]
        self.say(f"CONNECTED {len(self.calls)} in {time.monotonic() - t0:.1f}s")
        await asyncio.sleep(args.idle)
        self.say("IDLE_READY")
        await self.command("go")
        self.talking = True
        for call in self.calls:  # the caller speaks first, at a random moment in the next 2 s
            loop.call_later(random.uniform(0, 2.0), self._start_burst, call)
        await asyncio.sleep(args.warmup)
        self.stats.window = True
        self.say("WINDOW_START")
        await asyncio.sleep(args.duration)
        self.stats.window = False
        self.say("WINDOW_END")
        self.talking = False
        await asyncio.sleep(3.0)  # let utterances in flight finish and be echoed
        for call in self.calls:
            call.streaming = False
        await asyncio.sleep(1.0)  # inbound frames in flight reach the STT
        self.say("DRAINED")
        await self.command("close")
        self.running = False
        for call in self.calls:
            stop = call.codec.stop()
            if stop:
                call.send_text(stop)
            if call.transport is not None:
                call.transport.write(b"\x88\x82\0\0\0\0\x03\xe8")
        await asyncio.sleep(0.5)
        for call in self.calls:
            if call.transport is not None:
                call.transport.close()
        ticker_task.cancel()
        self.report()

    def _start_burst(self, call: Call) -> None:
        call.burst_left = BURST_FRAMES

    def _read_stdin(self, loop: asyncio.AbstractEventLoop) -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(self.commands.put_nowait, line.strip())

    def report(self) -> None:
        per_call = {}
        for call in self.calls:
            r = call.expected_report()
            r["sent"] = call.frames_sent
            r["close_code"] = call.close_code
            per_call[str(call.idx)] = r
        s = self.stats
        result = {
            "lateness_ms": [round(x, 3) for x in s.lateness_ms],
            "turn_ms": [round(x, 3) for x in s.turn_ms],
            "ticker_late_p99_ms": percentile(s.ticker_late_ms, 99),
            "connect_failures": s.connect_failures,
            "protocol_errors": s.protocol_errors,
            "clears": s.clears,
            "calls": per_call,
        }
        print("RESULT " + json.dumps(result), flush=True)


def generator_main(args: argparse.Namespace) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(Generator(args).run())


# ===================================================================================== orchestrator
class Child:
    """A child process speaking the line protocol on stdin/stdout."""

    def __init__(self, argv: list[str], cpu: int | None) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        if cpu is not None:
            try:
                os.sched_setaffinity(self.proc.pid, {cpu})
            except OSError:
                pass

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect(self, prefix: str, timeout: float) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"child {self.pid} did not say {prefix!r} within {timeout}s")
            ready, _, _ = select.select([self.proc.stdout], [], [], remaining)
            if not ready:
                continue
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"child {self.pid} exited (waiting for {prefix!r})")
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
            print("# child:", line.rstrip()[:200], file=sys.stderr)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)


def free_port() -> int:
    """A port for a server process to bind later: from below the ephemeral range (``voice_runtime.testing.ports``)."""
    from voice_runtime.testing.ports import free_port as below_ephemeral

    return below_ephemeral()


def run_once(args: argparse.Namespace, calls: int) -> dict[str, Any]:
    me = [sys.executable, str(Path(__file__).resolve())]
    workers = max(1, args.workers)
    port = free_port() if workers > 1 else 0
    servers: list[Child] = []
    gen: Child | None = None
    fake: Child | None = None
    providers = getattr(args, "providers", "mock")
    fake_argv: list[str] = []
    try:
        if providers == "elevenlabs":  # the fake service in its own process: its CPU is not the server's
            fake = Child(me + ["--role", "fake", "--fake-tts-realtime-factor", str(args.fake_tts_realtime_factor),
                               "--fake-tts-first-byte-ms", str(args.fake_tts_first_byte_ms)], None)
            fake_http, fake_ws = fake.expect("READY", 30).split()
            fake_argv = ["--fake-http", fake_http, "--fake-ws", fake_ws]
        for _ in range(workers):
            child = Child(
                me + ["--role", "server", "--server-mode", args.server_mode, "--port", str(port),
                      "--providers", providers, *fake_argv, "--stt-min-chunk-ms", str(getattr(args, "stt_min_chunk_ms", 60)),
                      "--batch-ms", str(getattr(args, "batch_ms", 400.0)), "--lead-ms", str(getattr(args, "lead_ms", 240.0)),
                      "--observe", getattr(args, "observe", "on"),
                      "--speech-read-ahead", getattr(args, "speech_read_ahead", "default"),
                      "--stt-ws-client", getattr(args, "stt_ws_client", "auto"),
                      "--stt-feed", getattr(args, "stt_feed", "inline"),
                      "--tts-http", getattr(args, "tts_http", "auto")]
                + (["--background"] if getattr(args, "background", False) else [])
                + ["--background-lead-ms", str(getattr(args, "background_lead_ms", 240.0))],
                None,
            )
            servers.append(child)
        ports = {int(s.expect("READY", 30)) for s in servers}
        port = ports.pop()
        time.sleep(0.5)
        rss_base = sum(rss_bytes(s.pid) for s in servers)
        gen = Child(
            me + ["--role", "gen", "--port", str(port), "--calls", str(calls), "--dialect", args.dialect,
                  "--providers", providers,
                  "--ramp", str(args.ramp), "--idle", str(args.idle), "--warmup", str(args.warmup),
                  "--duration", str(args.duration)]
            + (["--background"] if getattr(args, "background", False) else []),
            None,
        )
        # every connect has 10 s for TCP and 30 s for its handshake (Generator.connect), started on schedule
        connected_line = gen.expect("CONNECTED", calls / args.ramp + 60).split()
        connected, ramp_s = int(connected_line[0]), float(connected_line[2].rstrip("s"))
        gen.expect("IDLE_READY", args.idle + 30)
        rss_idle = sum(rss_bytes(s.pid) for s in servers)
        cpu_idle0 = sum(cpu_seconds(s.pid) for s in servers)
        time.sleep(2.0)
        cpu_idle = (sum(cpu_seconds(s.pid) for s in servers) - cpu_idle0) / 2.0
        gen.send("go")
        gen.expect("WINDOW_START", args.warmup + 30)
        for s in servers:
            s.send("start")
            s.expect("OK", 10)
        t0 = time.monotonic()
        cpu0 = sum(cpu_seconds(s.pid) for s in servers)
        gcpu0 = cpu_seconds(gen.pid)
        fcpu0 = cpu_seconds(fake.pid) if fake else 0.0
        load0 = os.getloadavg()[0]
        busy0, steal0 = machine_busy_seconds()
        rss_samples = []
        while True:
            try:
                gen.expect("WINDOW_END", min(5.0, args.duration + 30))
                break
            except TimeoutError:
                rss_samples.append(sum(rss_bytes(s.pid) for s in servers))
        window = time.monotonic() - t0
        cpu = sum(cpu_seconds(s.pid) for s in servers) - cpu0
        gcpu = cpu_seconds(gen.pid) - gcpu0
        fcpu = (cpu_seconds(fake.pid) - fcpu0) if fake else 0.0
        busy1, steal1 = machine_busy_seconds()
        load1 = os.getloadavg()[0]
        rss_active = sum(rss_bytes(s.pid) for s in servers)
        for s in servers:
            s.send("stop")
            s.expect("OK", 10)
        gen.expect("DRAINED", 30)
        reports = []
        for s in servers:
            s.send("report")
            reports.append(json.loads(s.expect("REPORT", 30)))
        fake_report: dict[str, Any] | None = None
        if fake is not None:
            fake.send("report")
            fake_report = json.loads(fake.expect("REPORT", 30))
        gen.send("close")
        result = json.loads(gen.expect("RESULT", 60))
    except Exception:
        for child in servers + ([gen] if gen else []) + ([fake] if fake else []):
            # a child that died says how (negative: killed by that signal), so a failed run is diagnosable
            print(f"# child {child.pid} {' '.join(child.proc.args[3:5])}: exit code {child.proc.poll()}", file=sys.stderr)
        if gen is not None:
            # The generator goes first: once the servers are told to quit they stop listening, and a generator
            # still connecting would print 503s and refusals that are this teardown, not the failure.
            gen.kill()
        raise
    finally:
        for s in servers + ([fake] if fake else []):
            try:
                s.send("quit")
            except Exception:
                pass
        time.sleep(0.3)
        for child in servers + ([gen] if gen else []) + ([fake] if fake else []):
            child.kill()

    latency_ms = [us / 1000.0 for r in reports for us in r["latency_us"]]
    model_ms = 300.0 + (args.fake_tts_first_byte_ms if providers == "elevenlabs" else 0.0)
    server_calls: dict[str, list[int]] = {}
    for r in reports:
        server_calls.update(r["calls"])
    in_lost = in_dup = out_lost = out_dup = out_corrupt = 0
    calls_with_loss = 0
    utterances = 0
    for idx, c in result["calls"].items():
        received, dups, _ = server_calls.get(idx, [0, 0, -1])
        lost_here = max(0, c["sent"] - (received - dups))
        in_lost += lost_here
        in_dup += dups
        out_lost += c["out_lost"]
        out_dup += c["out_dup"]
        out_corrupt += c["out_corrupt"]
        utterances += c["utterances"]
        if lost_here or dups or c["out_lost"] or c["out_dup"] or c["out_corrupt"]:
            calls_with_loss += 1
    lateness = result["lateness_ms"]
    stats: dict[str, int] = {}
    for r in reports:
        for k, v in r["stats"].items():
            stats[k] = stats.get(k, 0) + v
    marks: dict[str, int] = {}
    for r in reports:
        for k, v in r["mark_outcomes"].items():
            marks[k] = marks.get(k, 0) + v
    out = {
        "calls": calls,
        "connected": connected,
        "dialect": args.dialect,
        "server_mode": args.server_mode,
        "workers": workers,
        "window_s": round(window, 2),
        "ramp_s": ramp_s,  # first connect → last handshake done (--ramp calls/s when the server keeps up)
        "server_cpu_ms_per_call_s": round(cpu * 1000.0 / (connected * window), 3) if connected else None,
        "server_cpu_pct": round(cpu / window * 100.0, 1),
        "server_cpu_idle_ms_per_call_s": round(cpu_idle * 1000.0 / connected, 3) if connected else None,
        "generator_cpu_pct": round(gcpu / window * 100.0, 1),
        "providers": providers,
        "fake_cpu_pct": round(fcpu / window * 100.0, 1) if fake else None,
        "fake_report": fake_report,
        # CPU used by anything else on the machine during the window (other people's jobs skew the figures)
        "other_cpu_pct": round(max(0.0, (busy1 - busy0) - cpu - gcpu - fcpu) / window * 100.0, 1),
        "load_avg_1m": [round(load0, 2), round(load1, 2)],
        "steal_pct": round((steal1 - steal0) / window * 100.0, 1),
        "lateness_p50_ms": _r(percentile(lateness, 50)),
        "lateness_p99_ms": _r(percentile(lateness, 99)),
        "lateness_max_ms": _r(max(lateness) if lateness else None),
        "outbound_frames_measured": len(lateness),
        # caller's last loud frame sent → first frame of the agent's answer playable at the phone; includes the
        # modelled endpointing wait (300 ms of silence, MockStt end_ms or the fake's VAD) and, with the fake,
        # its TTS first-byte delay: turn_added_* subtracts those, leaving what the runtime + clients + wire add
        "turn_p50_ms": _r(percentile(result["turn_ms"], 50)),
        "turn_p99_ms": _r(percentile(result["turn_ms"], 99)),
        "turn_max_ms": _r(max(result["turn_ms"]) if result["turn_ms"] else None),
        "turn_added_p50_ms": _r(_minus(percentile(result["turn_ms"], 50), model_ms)),
        "turn_added_p99_ms": _r(_minus(percentile(result["turn_ms"], 99), model_ms)),
        "turns_measured": len(result["turn_ms"]),
        "stt_latency_p50_ms": _r(percentile(latency_ms, 50)),
        "stt_latency_p99_ms": _r(percentile(latency_ms, 99)),
        "stt_latency_max_ms": _r(max(latency_ms) if latency_ms else None),
        "inbound_frames_measured": len(latency_ms),
        "inbound_lost": in_lost,
        "inbound_dup": in_dup,
        "outbound_lost": out_lost,
        "outbound_dup": out_dup,
        "outbound_corrupt_utterances": out_corrupt,
        "calls_with_loss": calls_with_loss,
        "utterances_checked": utterances,
        "mark_outcomes": marks,
        "flow_errors": sum(r["flow_errors"] for r in reports),
        "rss_base_mb": round(rss_base / 2**20, 1),
        "rss_per_idle_call_kb": round((rss_idle - rss_base) / 1024 / connected, 1) if connected else None,
        "rss_per_active_call_kb": round((rss_active - rss_base) / 1024 / connected, 1) if connected else None,
        "rss_samples_mb": [round(x / 2**20, 1) for x in rss_samples],
        "generator_ticker_late_p99_ms": _r(result["ticker_late_p99_ms"]),
        "connect_failures": result["connect_failures"],
        "generator_protocol_errors": result["protocol_errors"],
        "generator_clears_seen": result.get("clears", 0),
        "server_stats": {k: v for k, v in stats.items() if "drop" in k or "error" in k or "gap" in k or "repeat" in k},
    }
    background = getattr(args, "background", False)
    out["background"] = background
    if background:
        # The bed is mixed into the agent audio and fills the gaps between utterances, so the byte-exact
        # per-utterance comparison with MockTts does not apply: those three figures are not measured.
        out["outbound_lost"] = out["outbound_dup"] = out["outbound_corrupt_utterances"] = None
        out_lost = out_dup = out_corrupt = 0
    out["pass"] = bool(
        connected == calls
        and out["lateness_p99_ms"] is not None
        and out["lateness_p99_ms"] <= args.max_lateness_ms
        and in_lost == 0 and in_dup == 0 and out_lost == 0 and out_dup == 0 and out_corrupt == 0
    )
    return out


def compare_background(args: argparse.Namespace) -> None:
    """Background bed off vs on at the same call count, runs interleaved (off, on, off, on ...) so drift in the
    machine's other load hits both alike; medians and min-max of server CPU per call-second."""
    import statistics

    results: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    for _ in range(max(1, args.repeats)):
        for background in (False, True):
            args.background = background
            res = run_once(args, args.calls)
            results[background].append(res)
            print(json.dumps({k: res.get(k) for k in (
                "background", "calls", "server_cpu_ms_per_call_s", "server_cpu_pct", "other_cpu_pct", "lateness_p50_ms",
                "lateness_p99_ms", "lateness_max_ms", "generator_ticker_late_p99_ms", "generator_clears_seen",
                "inbound_lost", "pass")}), flush=True)
    summary: dict[str, Any] = {"benchmark": "background", "calls": args.calls, "repeats": args.repeats,
                               "machine": f"{platform.machine()} {os.cpu_count()} vCPU, Python {platform.python_version()}"}
    for background, name in ((False, "off"), (True, "on")):
        cpu = [r["server_cpu_ms_per_call_s"] for r in results[background]]
        summary[name] = {
            "server_cpu_ms_per_call_s_median": round(statistics.median(cpu), 3),
            "min": min(cpu), "max": max(cpu),
            "lateness_p99_ms": [r["lateness_p99_ms"] for r in results[background]],
            "other_cpu_pct": [r["other_cpu_pct"] for r in results[background]],
            "pass": all(r["pass"] for r in results[background]),
        }
    summary["on_over_off"] = round(summary["on"]["server_cpu_ms_per_call_s_median"] / summary["off"]["server_cpu_ms_per_call_s_median"], 3)
    print(json.dumps(summary))
def compare_observe(args: argparse.Namespace) -> None:
    """Observability variants interleaved (off, on, ... round after round) so machine noise hits all alike."""
    import statistics

    variants = [v.strip() for v in args.compare_observe.split(",") if v.strip()]
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    other: dict[str, list[float]] = {v: [] for v in variants}
    passed: dict[str, list[bool]] = {v: [] for v in variants}
    for round_no in range(args.rounds):
        for variant in variants:
            args.observe = variant
            res = run_once(args, args.calls)
            cpu[variant].append(res["server_cpu_ms_per_call_s"])
            other[variant].append(res["other_cpu_pct"])
            passed[variant].append(res["pass"])
            print(json.dumps({"round": round_no, "observe": variant, **{k: res[k] for k in (
                "server_cpu_ms_per_call_s", "other_cpu_pct", "steal_pct", "lateness_p99_ms", "inbound_lost", "outbound_lost", "pass")}}),
                flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps({"observe": variant, **res}) + "\n")
    base = statistics.median(cpu[variants[0]])
    summary = {
        v: {
            "server_cpu_ms_per_call_s_median": round(statistics.median(cpu[v]), 3),
            "min": round(min(cpu[v]), 3),
            "max": round(max(cpu[v]), 3),
            "vs_" + variants[0]: round(statistics.median(cpu[v]) / base, 3),
            "other_cpu_pct_median": round(statistics.median(other[v]), 1),
            "all_passed": all(passed[v]),
        }
        for v in variants
    }
    print(json.dumps({"benchmark": "observability cost", "calls": args.calls, "rounds": args.rounds,
                      "machine": f"{platform.machine()} {os.cpu_count()} vCPU, Python {platform.python_version()}",
                      "server_mode": args.server_mode, "dialect": args.dialect, "variants": summary}))


def compare_providers(args: argparse.Namespace) -> None:
    """Provider variants (e.g. mock, elevenlabs) interleaved round after round at the same call count, so drift
    in the machine's other load hits both alike; medians and min-max of each headline figure."""
    import statistics

    chunk_variants = [v.strip() for v in getattr(args, "compare_stt_chunk", "").split(",") if v.strip()]
    variants = chunk_variants or [v.strip() for v in args.compare_providers.split(",") if v.strip()]
    keys = ("server_cpu_ms_per_call_s", "fake_cpu_pct", "generator_cpu_pct", "other_cpu_pct", "lateness_p99_ms",
            "turn_p50_ms", "turn_p99_ms", "turn_added_p99_ms", "stt_latency_p99_ms")
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    loads: list[float] = []
    for round_no in range(args.rounds):
        for variant in variants:
            if chunk_variants:  # the ElevenLabs clients with this STT min_chunk_ms
                args.providers, args.stt_min_chunk_ms = "elevenlabs", int(variant)
            else:
                args.providers = variant
            res = run_once(args, args.calls)
            runs[variant].append(res)
            loads += res["load_avg_1m"]
            print(json.dumps({"round": round_no, "providers": variant, "load_avg_1m": res["load_avg_1m"], **{k: res[k] for k in keys + (
                "connected", "ramp_s", "server_cpu_pct", "connect_failures", "inbound_lost", "outbound_lost", "utterances_checked", "turns_measured", "pass")}}), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(res) + "\n")

    def spread(values: list[Any]) -> dict[str, float] | None:
        xs = [float(x) for x in values if x is not None]
        if not xs:
            return None
        return {"median": round(statistics.median(xs), 3), "min": round(min(xs), 3), "max": round(max(xs), 3)}

    summary = {
        v: {**{k: spread([r[k] for r in runs[v]]) for k in keys},
            "frames_lost": sum(r["inbound_lost"] + r["outbound_lost"] for r in runs[v]),
            "all_connected": all(r["connected"] == args.calls for r in runs[v]),
            "all_passed": all(r["pass"] for r in runs[v])}
        for v in variants
    }
    print(json.dumps({"benchmark": "providers", "calls": args.calls, "rounds": args.rounds,
                      "machine": f"{platform.machine()} {os.cpu_count()} vCPU, Python {platform.python_version()}",
                      "server_mode": args.server_mode, "workers": args.workers, "dialect": args.dialect,
                      "load_avg_1m_min_max": [min(loads), max(loads)] if loads else None, "variants": summary}))


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def _minus(x: float | None, y: float) -> float | None:
    return None if x is None else x - y


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--role", choices=("orchestrate", "server", "gen", "fake"), default="orchestrate")
    p.add_argument("--providers", choices=("mock", "elevenlabs"), default="mock",
                   help="mock: MockStt + MockTts in the server; elevenlabs: the real ElevenLabs STT and TTS clients "
                   "against the fake ElevenLabs in a process of its own")
    p.add_argument("--fake-http", default="", help=argparse.SUPPRESS)
    p.add_argument("--fake-ws", default="", help=argparse.SUPPRESS)
    p.add_argument("--fake-tts-realtime-factor", type=float, default=4.0,
                   help="the fake's TTS streams audio at this many times real time (0: unpaced)")
    p.add_argument("--fake-tts-first-byte-ms", type=float, default=0.0, help="the fake's TTS time to first byte")
    p.add_argument("--stt-min-chunk-ms", type=int, default=60,
                   help="ElevenLabsRealtimeStt(min_chunk_ms=...): audio per Scribe message (20: one per carrier frame)")
    p.add_argument("--compare-stt-chunk", default="",
                   help="e.g. 20,60: run --providers elevenlabs with these min_chunk_ms values interleaved, --rounds times")
    p.add_argument("--speech-read-ahead", default="default",
                   help="the sessions' speech_read_ahead_seconds: default (the runtime's), none (off), or seconds")
    p.add_argument("--stt-ws-client", default="auto", choices=("auto", "picows", "websockets"),
                   help="the ElevenLabs STT's WebSocket client (providers/ws_client.py)")
    p.add_argument("--stt-feed", default="inline", choices=("inline", "queue"),
                   help="caller audio to the STT inline (feed_audio, the runtime's way) or through its queue (before)")
    p.add_argument("--tts-http", default="auto", choices=("auto", "httpx"),
                   help="ElevenLabsTts(http_transport=...): urllib3 under httpx (auto, the runtime's way) or httpx's own (before)")
    p.add_argument("--calls", type=int, default=100)
    p.add_argument("--sweep", default="", help="comma-separated call counts; reports the largest that passes")
    p.add_argument("--dialect", choices=("twilio", "plivo"), default="twilio")
    p.add_argument("--server-mode", choices=("fastapi", "native", "picows"), default="fastapi")
    p.add_argument("--workers", type=int, default=1, help="server processes sharing the port (SO_REUSEPORT)")
    p.add_argument("--duration", type=float, default=20.0, help="measurement window, seconds")
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--idle", type=float, default=3.0, help="seconds of idle calls before the conversation starts")
    p.add_argument("--ramp", type=float, default=100.0, help="new calls per second")
    p.add_argument("--max-lateness-ms", type=float, default=20.0)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--batch-ms", type=float, default=400.0, help="agent audio per outbound media message")
    p.add_argument("--lead-ms", type=float, default=240.0, help="agent audio kept ahead at the carrier")
    p.add_argument("--out", default="", help="also append each run's JSON to this file")
    p.add_argument("--background", action="store_true", help="every call plays a looping bed (set_background)")
    p.add_argument("--compare-background", action="store_true",
                   help="alternate runs without and with a background bed; report both side by side")
    p.add_argument("--repeats", type=int, default=2, help="runs of each variant with --compare-background")
    p.add_argument("--background-lead-ms", type=float, default=240.0,
                   help="bed kept ahead at the carrier in silences (ConnectionConfig.background_lead)")
    p.add_argument("--observe", choices=("on", "off", "log"), default="on",
                   help="server observability: off, on (reports + Prometheus), log (on + JSON-lines call logs)")
    p.add_argument("--compare-observe", default="",
                   help="e.g. off,on,log: run these variants interleaved, --rounds times, and report them side by side")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--compare-providers", default="",
                   help="e.g. mock,elevenlabs: run these provider variants interleaved, --rounds times, side by side")
    args = p.parse_args()
    if args.role == "server":
        server_main(args)
        return
    if args.role == "gen":
        generator_main(args)
        return
    if args.role == "fake":
        fake_main(args)
        return
    if args.compare_background:
        compare_background(args)
    if args.compare_observe:
        compare_observe(args)
        return
    if args.compare_providers or args.compare_stt_chunk:
        compare_providers(args)
        return
    counts = [int(x) for x in args.sweep.split(",") if x.strip()] or [args.calls]
    runs = []
    for n in counts:
        res = run_once(args, n)
        runs.append(res)
        brief = {k: res[k] for k in ("calls", "server_cpu_ms_per_call_s", "server_cpu_pct", "generator_cpu_pct", "other_cpu_pct",
                                     "lateness_p50_ms", "lateness_p99_ms", "turn_p99_ms", "stt_latency_p99_ms", "inbound_lost",
                                     "outbound_lost", "rss_per_idle_call_kb", "pass")}
        print(json.dumps(brief), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(res) + "\n")
    passing = [r["calls"] for r in runs if r["pass"]]
    final = {
        "benchmark": "load",
        "machine": f"{platform.machine()} {os.cpu_count()} vCPU, Python {platform.python_version()}",
        "dialect": args.dialect,
        "server_mode": args.server_mode,
        "workers": args.workers,
        "max_calls_passing": max(passing) if passing else 0,
        "runs": runs if len(runs) > 1 else None,
        **({} if len(runs) > 1 else runs[0]),
    }
    print(json.dumps(final))


if __name__ == "__main__":
    main()
