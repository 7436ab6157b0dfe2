"""What a child process prints, line by line, for tests to wait on.

Why: a server in another process has no readiness event a test can wait on except what it prints ("serving
media streams on ...", "worker w0 serving on port ..."). Polling its port with a sleep between tries is a
guess at when it is up, and a connect can succeed before the server serves at all (a socket bound before a
fork listens at once). Reader threads collect each stream's lines under one condition; :meth:`wait_for`
wakes on every new line, and fails at once, with everything printed so far, when the process has exited and
its output is read to the end.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Any

__all__ = ["OutputLines"]


class OutputLines:
    """The lines of ``streams`` (name -> text pipe of ``proc``), each also appended to ``tee`` if given."""

    def __init__(self, proc: subprocess.Popen[Any], *, tee: Path | None = None, **streams: IO[str]) -> None:
        self.proc = proc
        self.lines: dict[str, list[str]] = {name: [] for name in streams}
        self._cond = threading.Condition()
        self._tee = tee.open("a", encoding="utf-8") if tee is not None else None
        self._readers = [threading.Thread(target=self._read, args=(name, stream), daemon=True) for name, stream in streams.items()]
        for reader in self._readers:
            reader.start()

    def _read(self, name: str, stream: IO[str]) -> None:
        sink = self.lines[name]
        for line in stream:
            with self._cond:
                sink.append(line.rstrip("\n"))
                if self._tee is not None:
                    self._tee.write(line)
                    self._tee.flush()
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()  # end of this stream: a waiter re-checks whether all output is in

    def text(self, name: str) -> str:
        with self._cond:
            return "\n".join(self.lines[name])

    def describe(self) -> str:
        with self._cond:
            return "".join(f"\n--- {name}\n" + "\n".join(lines) for name, lines in self.lines.items())

    def _finished(self) -> bool:
        return self.proc.poll() is not None and not any(r.is_alive() for r in self._readers)

    def wait_for(self, pattern: str, timeout: float = 30.0, *, stream: str | None = None, count: int = 1) -> re.Match[str]:
        """Block until ``count`` lines (of ``stream``, or of the only stream) match ``pattern``; returns the last match.

        Raises ``AssertionError`` with the output so far after ``timeout``, or as soon as the process has exited
        and its output is read to the end without enough matches.
        """
        regex = re.compile(pattern)
        if stream is None:
            (stream,) = self.lines
        sink = self.lines[stream]
        deadline = time.monotonic() + timeout
        found, seen = 0, 0
        with self._cond:
            while True:
                for line in sink[seen:]:
                    match = regex.search(line)
                    if match:
                        found += 1
                        if found >= count:
                            return match
                seen = len(sink)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._finished():
                    why = f"exited with {self.proc.returncode}" if self._finished() else f"still running after {timeout}s"
                    raise AssertionError(f"{count} line(s) matching {pattern!r} expected; {found} seen, process {why}:{self.describe()}")
                # Woken by every new line and by each stream's end; the bound only catches an exit that
                # closes no pipe (a grandchild still holding it open).
                self._cond.wait(min(remaining, 1.0))

    def join(self, timeout: float = 5.0) -> None:
        for reader in self._readers:
            reader.join(timeout)
        with self._cond:
            if self._tee is not None:
                self._tee.close()
                self._tee = None
