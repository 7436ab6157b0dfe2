"""Live call monitor: hear both sides of a call through a local player (0.1.x ``VOICE_MONITOR``).

:class:`LiveMonitor` is a subscriber of the mixer/recorder protocol the transport feeds
(``write_caller(ulaw, at)``, ``write_agent(ulaw, at)``, ``truncate_agent(at)``, ``close()``): it keeps the
two streams in bounded queues (8 s each, oldest dropped and counted), mixes one 20 ms frame of each every
20 ms and writes the mix to a player's stdin — ``ffplay`` reading raw μ-law 8 kHz by default. It never
blocks the transport: writes only append to a deque; the player runs on its own thread, and a player that
dies (closed window, broken pipe) just ends the monitoring.

Turn it on with ``VOICE_MONITOR=1`` for the prior-art route (``register_voice_websocket``), or pass
:func:`monitor_factory` as a server's ``recorder_factory``. ``VOICE_MONITOR_PLAYER`` replaces the player
command (whitespace-separated argv).
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any

from voice_runtime.audio.frames import FRAME_BYTES, SILENCE_FRAME
from voice_runtime.audio.mixer import mix_frames
from voice_runtime.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_PLAYER", "LiveMonitor", "monitor_enabled", "monitor_factory"]

DEFAULT_PLAYER = ("ffplay", "-nodisp", "-loglevel", "error", "-probesize", "32", "-fflags", "nobuffer",
                  "-f", "mulaw", "-ar", "8000", "-i", "-")
MAX_FRAMES = 400  # 8 s per side
_TRUTHY = {"1", "true", "yes", "on"}


def monitor_enabled(environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return env.get("VOICE_MONITOR", "").strip().lower() in _TRUTHY


def player_command(environ: dict[str, str] | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    custom = env.get("VOICE_MONITOR_PLAYER", "").strip()
    return shlex.split(custom) if custom else list(DEFAULT_PLAYER)


class LiveMonitor:
    """Mixes caller and agent audio in real time into a player process (see module doc)."""

    def __init__(self, command: Sequence[str] | None = None, *, frame_interval: float = 0.020) -> None:
        self.command = list(command) if command is not None else player_command()
        if not self.command or shutil.which(self.command[0]) is None:
            raise ConfigError(f"monitor player {self.command[:1]} not found on PATH (install ffmpeg for ffplay)")
        self.frame_interval = frame_interval
        self.stats: Counter[str] = Counter()
        self._caller: deque[bytes] = deque(maxlen=MAX_FRAMES)
        self._agent: deque[bytes] = deque(maxlen=MAX_FRAMES)
        self._caller_tail = b""
        self._agent_tail = b""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._played = threading.Condition()
        self._process: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> LiveMonitor:
        if self._thread is not None:
            return self
        self._process = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
        self._thread = threading.Thread(target=self._play, name="voice-monitor", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop mixing, close the player's stdin and reap it (bounded waits). Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        process = self._process
        if process is not None:
            try:
                if process.stdin is not None:
                    process.stdin.close()
            except OSError:
                pass
            try:
                process.wait(2.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(2.0)
        return None

    shutdown = close  # the prior-art mixer's name

    def wait_for_frames(self, count: int, timeout: float = 5.0) -> bool:
        """Block until ``count`` frames have gone to the player (False at the deadline or if it stopped)."""
        with self._played:
            return self._played.wait_for(lambda: self.stats["frames"] >= count or self._stop.is_set(), timeout) and (
                self.stats["frames"] >= count
            )

    # ------------------------------------------------------------------ the mixer protocol (transport side)
    def _push(self, chunk: bytes, side: str) -> None:
        with self._lock:
            data = (self._caller_tail if side == "caller" else self._agent_tail) + bytes(chunk)
            frames = self._caller if side == "caller" else self._agent
            whole = len(data) - len(data) % FRAME_BYTES
            for start in range(0, whole, FRAME_BYTES):
                if len(frames) == frames.maxlen:
                    self.stats[f"{side}_dropped"] += 1
                frames.append(data[start : start + FRAME_BYTES])
            if side == "caller":
                self._caller_tail = data[whole:]
            else:
                self._agent_tail = data[whole:]

    def write_caller(self, chunk: bytes, at: float | None = None) -> None:
        self._push(chunk, "caller")

    def write_agent(self, chunk: bytes, at: float | None = None) -> None:
        self._push(chunk, "agent")

    def truncate_agent(self, at: float | None = None) -> None:
        """A barge-in cleared the agent's audio: stop playing what is still queued of it."""
        with self._lock:
            self._agent.clear()
            self._agent_tail = b""

    # ------------------------------------------------------------------ player thread
    def _next_frame(self) -> bytes:
        with self._lock:
            caller = self._caller.popleft() if self._caller else SILENCE_FRAME
            agent = self._agent.popleft() if self._agent else SILENCE_FRAME
        return mix_frames(caller, agent)

    def _play(self) -> None:
        process = self._process
        assert process is not None and process.stdin is not None
        deadline = time.monotonic()
        while not self._stop.is_set():
            try:
                process.stdin.write(self._next_frame())
                process.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                log.info("monitor player went away; monitoring stopped")
                return
            with self._played:
                self.stats["frames"] += 1
                self._played.notify_all()
            deadline += self.frame_interval
            delay = deadline - time.monotonic()
            if delay < -0.1:  # fell behind (machine busy): resynchronise instead of bursting
                deadline = time.monotonic()
            elif delay > 0 and self._stop.wait(delay):
                return


def monitor_factory(command: Sequence[str] | None = None) -> Callable[[Any], LiveMonitor | None]:
    """A ``recorder_factory`` giving each call a started :class:`LiveMonitor` (None if it cannot start)."""

    def factory(session: Any) -> LiveMonitor | None:
        try:
            return LiveMonitor(command).start()
        except (ConfigError, OSError) as exc:
            log.warning("VOICE_MONITOR: no live monitor for this call (%s)", exc)
            return None

    return factory
