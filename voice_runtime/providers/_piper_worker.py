"""Piper synthesis worker process: the GPL boundary of the local TTS.

Run as ``python -m voice_runtime.providers._piper_worker --voice <model.onnx>``. Piper (piper-tts) is
GPL-3.0-or-later, so the MIT ``voice_runtime`` process never imports it: only *this* separate process does,
and the two talk over pipes (the FSF's "separate programs" case). Importing this module is harmless: piper
is imported inside :func:`main` only, so :mod:`voice_runtime.providers.local_tts` can share the protocol
constants defined here.

Wire protocol (both directions, stdin = requests, stdout = responses)
--------------------------------------------------------------------

Every message is one frame: a 9-byte little-endian header ``<B I I`` = ``(type, utterance_id, length)``
followed by ``length`` payload bytes. Utterance ids are chosen by the parent (non-zero ``uint32``).

Requests (parent → worker):

* ``b"S"`` SYNTH  ``id``: payload = ``<f f f f`` (``length_scale``, ``noise_scale``, ``noise_w_scale``,
  ``volume``; NaN means "the voice's default") followed by the UTF-8 text.
* ``b"C"`` CANCEL ``id``: empty payload. Synthesis of ``id`` stops at the next sentence boundary and the
  worker answers with END (flag 1). Unknown / finished ids are ignored.
* ``b"Q"`` SHUTDOWN: empty payload; the worker exits. EOF on stdin means the same.

Responses (worker → parent):

* ``b"R"`` READY  id 0: payload = ``<I`` sample rate + UTF-8 voice name. Sent once, after the voice loaded.
* ``b"A"`` AUDIO  ``id``: payload = mono s16le PCM at the voice's sample rate (one sentence per frame).
* ``b"E"`` END    ``id``: payload = 1 byte flags (bit 0: the utterance was cancelled). Last frame for ``id``.
* ``b"X"`` ERROR  ``id``: payload = UTF-8 message. Last frame for ``id``. With id 0 it is fatal (the voice
  failed to load) and the worker exits.

Scheduling: utterances are synthesized sentence by sentence, round-robin across the utterances in flight, so
two calls speaking at once both make progress and each sentence is written (and flushed) as soon as it
exists. Cancellation is checked between sentences.

Nothing but frames is ever written to the real stdout: the frame channel is a duplicate of fd 1 and fd 1 is
pointed at stderr, so a stray ``print`` (or a C library writing to stdout) cannot corrupt the stream.
"""

from __future__ import annotations

import argparse
import math
import os
import struct
import sys
import threading
from collections import OrderedDict, deque
from typing import Any, BinaryIO

HEADER = struct.Struct("<BII")
SYNTH_PARAMS = struct.Struct("<ffff")
READY_INFO = struct.Struct("<I")

REQ_SYNTH = ord("S")
REQ_CANCEL = ord("C")
REQ_SHUTDOWN = ord("Q")

RESP_READY = ord("R")
RESP_AUDIO = ord("A")
RESP_END = ord("E")
RESP_ERROR = ord("X")

END_CANCELLED = 1


def encode_frame(kind: int, uid: int, payload: bytes = b"") -> bytes:
    """One wire frame."""
    return HEADER.pack(kind, uid, len(payload)) + payload


def encode_synth(uid: int, text: str, length_scale: float | None, noise_scale: float | None,
                 noise_w_scale: float | None, volume: float | None) -> bytes:
    """A SYNTH request frame (``None`` parameters mean "voice default")."""

    def f(value: float | None) -> float:
        return math.nan if value is None else float(value)

    params = SYNTH_PARAMS.pack(f(length_scale), f(noise_scale), f(noise_w_scale), f(volume))
    return encode_frame(REQ_SYNTH, uid, params + text.encode("utf-8"))


def read_exact(stream: BinaryIO, n: int) -> bytes | None:
    """Read exactly ``n`` bytes, or return None at EOF."""
    chunks = []
    while n:
        chunk = stream.read(n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame(stream: BinaryIO) -> tuple[int, int, bytes] | None:
    """Read one frame ``(type, id, payload)``; None at EOF (or a truncated frame)."""
    header = read_exact(stream, HEADER.size)
    if header is None:
        return None
    kind, uid, length = HEADER.unpack(header)
    payload = read_exact(stream, length) if length else b""
    if payload is None:
        return None
    return kind, uid, payload


# --------------------------------------------------------------------------------------------------------
# Worker side (everything below runs only in the child process)
# --------------------------------------------------------------------------------------------------------


class _Worker:
    def __init__(self, voice: Any, out_fd: int) -> None:
        self.voice = voice
        self.out_fd = out_fd
        self.cond = threading.Condition()
        self.pending: deque[tuple[int, str, tuple[float, float, float, float]]] = deque()
        self.active: OrderedDict[int, Any] = OrderedDict()
        self.cancelled: set[int] = set()
        self.stopping = False

    # -- output -------------------------------------------------------------------------------------------
    def send(self, kind: int, uid: int, payload: bytes = b"") -> None:
        data = memoryview(encode_frame(kind, uid, payload))
        while data:
            written = os.write(self.out_fd, data)
            data = data[written:]

    # -- input (reader thread) ----------------------------------------------------------------------------
    def read_requests(self, stream: BinaryIO) -> None:
        try:
            while True:
                frame = read_frame(stream)
                if frame is None:
                    break
                kind, uid, payload = frame
                if kind == REQ_SYNTH:
                    params = SYNTH_PARAMS.unpack_from(payload)
                    text = payload[SYNTH_PARAMS.size:].decode("utf-8", errors="replace")
                    with self.cond:
                        self.pending.append((uid, text, params))
                        self.cond.notify()
                elif kind == REQ_CANCEL:
                    with self.cond:
                        if uid in self.active or any(p[0] == uid for p in self.pending):
                            self.cancelled.add(uid)
                            self.cond.notify()
                elif kind == REQ_SHUTDOWN:
                    break
        finally:
            with self.cond:
                self.stopping = True
                self.cond.notify()

    # -- synthesis loop (main thread) ---------------------------------------------------------------------
    def _config(self, params: tuple[float, float, float, float]) -> Any:
        from piper import SynthesisConfig

        length_scale, noise_scale, noise_w_scale, volume = (None if math.isnan(p) else p for p in params)
        return SynthesisConfig(
            length_scale=length_scale,
            noise_scale=noise_scale,
            noise_w_scale=noise_w_scale,
            volume=1.0 if volume is None else volume,
        )

    def run(self) -> None:
        while True:
            with self.cond:
                while not (self.pending or self.active or self.stopping):
                    self.cond.wait()
                if self.stopping:
                    return
                while self.pending:
                    uid, text, params = self.pending.popleft()
                    self.active[uid] = (text, params, None)
                uid, (text, params, gen) = next(iter(self.active.items()))
                self.active.move_to_end(uid)  # round-robin: the next turn goes to another utterance
                cancelled = uid in self.cancelled
            if cancelled:
                self._finish(uid, gen, END_CANCELLED)
                continue
            try:
                if gen is None:
                    gen = iter(self.voice.synthesize(text, self._config(params)))
                    with self.cond:
                        if uid in self.active:
                            self.active[uid] = (text, params, gen)
                chunk = next(gen, None)
            except Exception as exc:  # noqa: BLE001 - reported to the parent, never fatal
                self._finish(uid, gen, None, error=f"{type(exc).__name__}: {exc}")
                continue
            if chunk is None:
                self._finish(uid, gen, 0)
                continue
            self.send(RESP_AUDIO, uid, chunk.audio_int16_bytes)

    def _finish(self, uid: int, gen: Any, flags: int | None, error: str | None = None) -> None:
        with self.cond:
            self.active.pop(uid, None)
            self.cancelled.discard(uid)
        if gen is not None:
            try:
                gen.close()
            except Exception:  # noqa: BLE001
                pass
        if error is not None:
            self.send(RESP_ERROR, uid, error.encode("utf-8", errors="replace"))
        else:
            self.send(RESP_END, uid, bytes([flags or 0]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="voice_runtime Piper worker (framed stdin/stdout protocol)")
    parser.add_argument("--voice", required=True, help="path to the Piper .onnx voice model")
    parser.add_argument("--config", default=None, help="path to the voice's .onnx.json (default: <voice>.json)")
    args = parser.parse_args(argv)

    # Keep a private handle on the real stdout for frames, then point fd 1 at stderr.
    out_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    stdin = sys.stdin.buffer

    def fatal(message: str) -> int:
        try:
            data = encode_frame(RESP_ERROR, 0, message.encode("utf-8", errors="replace"))
            os.write(out_fd, data)
        except OSError:
            pass
        return 2

    try:
        from piper import PiperVoice

        voice = PiperVoice.load(args.voice, config_path=args.config)
    except Exception as exc:  # noqa: BLE001
        return fatal(f"cannot load Piper voice {args.voice!r}: {type(exc).__name__}: {exc}")

    worker = _Worker(voice, out_fd)
    name = os.path.basename(args.voice).encode("utf-8")
    worker.send(RESP_READY, 0, READY_INFO.pack(int(voice.config.sample_rate)) + name)
    reader = threading.Thread(target=worker.read_requests, args=(stdin,), name="piper-requests", daemon=True)
    reader.start()
    try:
        worker.run()
    except (BrokenPipeError, KeyboardInterrupt):
        return 0
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through the subprocess
    sys.exit(main())
