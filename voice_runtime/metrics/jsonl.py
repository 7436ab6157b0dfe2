"""A call's event log as JSON lines: one line per event, then one ``call_report`` line.

The schema (stable; ``docs/observability.md`` is its reference, and ``voice-runtime report`` reads it)::

    {"kind": "<event kind>", "at": <time.monotonic() seconds>, "call_id": "<carrier call id>", "data": {...}}
    ...
    {"kind": "call_report", "at": <monotonic>, "call_id": "...", "data": <CallReport.as_dict()>}

``data`` of the report holds ``wall_clock_offset``: ``at + wall_clock_offset`` is Unix time.
"""

from __future__ import annotations

import atexit
import logging
import re
import threading
import time
from functools import partial
from pathlib import Path
from typing import IO, Any

import orjson

from voice_runtime.call_events import CallEvent
from voice_runtime.on_demand_thread import OnDemandThread

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MAX_EVENT_LINES = 200_000  # per call; beyond it one "log_truncated" line, then only the report (bounded disk)
REPORT_KIND = "call_report"
_SECRET_KEY = re.compile(r"(token|secret|password|passwd|auth|api[_-]?key|signature)", re.IGNORECASE)
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def redact(data: dict[str, Any]) -> dict[str, Any]:
    """Custom parameters can carry credentials: their values are replaced when the key looks secret."""
    params = data.get("parameters")
    if not isinstance(params, dict):
        return data
    clean = {k: ("***" if _SECRET_KEY.search(str(k)) else v) for k, v in params.items()}
    return {**data, "parameters": clean}


def event_line(kind: str, at: float, call_id: str | None, data: dict[str, Any]) -> bytes:
    return orjson.dumps({"kind": kind, "at": at, "call_id": call_id, "data": data}, default=str) + b"\n"


def log_path(directory: Path, call_id: str | None, wall: float | None = None) -> Path:
    """``<dir>/<UTC time>_<call id>.jsonl``: unique per call, sorted by start time."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if wall is None else wall))
    name = _SAFE_NAME.sub("_", call_id or "call")[:80]
    path = directory / f"{stamp}_{name}.jsonl"
    n = 1
    while path.exists():
        n += 1
        path = directory / f"{stamp}_{name}-{n}.jsonl"
    return path


class JsonlCallLog:
    """One call's events as a JSON-lines file, written by the process's call-log thread.

    Why a thread: events fire on the event loop (marks, media, the end of the call), and file I/O there (the
    open, ``mkdir``, a buffer flush on a slow or network disk) would stall every call on the server. Lines are
    serialised where the event happens (``orjson``, microseconds) and handed to :data:`WRITER`, which owns the
    file. :meth:`close` waits for the file to be complete by default (for callers off the loop); the observer
    closes without waiting.
    """

    def __init__(self, directory: Path, writer: LogFileThread | None = None) -> None:
        self.directory = directory
        self.path: Path | None = None
        self._writer = writer or WRITER
        self._file: IO[bytes] | None = None  # owned by the writer thread
        self._failed = False
        self._closed = threading.Event()
        self._close_requested = False
        self.lines = 0

    def on_event(self, event: CallEvent) -> None:
        self.lines += 1
        if self.lines > MAX_EVENT_LINES:
            if self.lines == MAX_EVENT_LINES + 1:
                self._submit("log_truncated", event.at, event.call_id, {"after_lines": MAX_EVENT_LINES})
            return
        self._submit(event.kind, event.at, event.call_id, redact(event.data))

    def _submit(self, kind: str, at: float, call_id: str | None, data: dict[str, Any]) -> None:
        if self._close_requested:
            return
        self._writer.submit(self, call_id, event_line(kind, at, call_id, data))

    def write_report(self, call_id: str | None, report: dict[str, Any]) -> None:
        self._submit(REPORT_KIND, time.monotonic(), call_id, {"schema": SCHEMA_VERSION, **report})

    def close(self, *, wait: bool = True, timeout: float = 10.0) -> Path | None:
        """Finish the file. With ``wait`` (the default), return once it is complete on disk (or ``timeout``
        passed); without, return at once (``path`` may still be None if the first line is not yet written)."""
        if not self._close_requested:
            self._close_requested = True
            self._writer.submit(self, None, None)
        if wait:
            self._closed.wait(timeout)
        return self.path

    def wait_closed(self, timeout: float = 10.0) -> bool:
        """After :meth:`close`: wait until the file is complete on disk; False if ``timeout`` passed first."""
        return self._closed.wait(timeout)

    # ------------------------------------------------------------------ run by the writer thread only
    def _write_line(self, call_id: str | None, line: bytes) -> None:
        if self._failed:
            return
        try:
            if self._file is None:
                self.directory.mkdir(parents=True, exist_ok=True)
                self.path = log_path(self.directory, call_id)
                self._file = open(self.path, "xb")  # noqa: SIM115 - closed in _finish()
            self._file.write(line)
        except OSError:
            self._failed = True  # a full disk must not end calls: logged once, then silent
            log.exception("call log %s could not be written; this call's log is incomplete", self.path)

    def _finish(self, dropped: int) -> None:
        if dropped:
            self._write_line(None, event_line("log_truncated", time.monotonic(), None, {"dropped_lines": dropped}))
        f, self._file = self._file, None
        if f is not None:
            try:
                f.close()
                log.debug("call log written to %s", self.path)
            except OSError:
                log.exception("call log %s could not be closed", self.path)
        self._closed.set()


class LogFileThread:
    """Every call log's file I/O, on one :class:`~voice_runtime.on_demand_thread.OnDemandThread`.

    Bounded by bytes: when the disk cannot keep up and ``max_pending_bytes`` are waiting, further lines are
    dropped (counted per log, and a ``log_truncated`` line with the count closes that file) rather than
    growing memory without limit. The thread runs only while lines are queued; :meth:`drain` (also run at
    interpreter exit) waits for what is queued.
    """

    def __init__(self, max_pending_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_pending_bytes = max_pending_bytes
        self._lock = threading.Lock()  # held while queueing too, so one log's lines keep their order
        self._pending_bytes = 0
        self._dropped: dict[int, int] = {}  # id(log) -> lines dropped
        self._worker = OnDemandThread("call-log-writer", "call log writes")
        self.dropped_lines = 0

    def submit(self, call_log: JsonlCallLog, call_id: str | None, line: bytes | None) -> None:
        """Queue one line (``line``) or the close of ``call_log`` (``line is None``; never dropped)."""
        with self._lock:
            if line is not None:
                if self._pending_bytes + len(line) > self.max_pending_bytes:
                    self._dropped[id(call_log)] = self._dropped.get(id(call_log), 0) + 1
                    self.dropped_lines += 1
                    return
                self._pending_bytes += len(line)
            self._worker.submit(partial(self._write, call_log, call_id, line))

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is written; False if ``timeout`` passed first."""
        return self._worker.drain(timeout)

    def _write(self, call_log: JsonlCallLog, call_id: str | None, line: bytes | None) -> None:
        if line is not None:
            with self._lock:
                self._pending_bytes -= len(line)
            call_log._write_line(call_id, line)
        else:
            with self._lock:
                dropped = self._dropped.pop(id(call_log), 0)
            call_log._finish(dropped)


#: The process's call-log writer (one thread for every call).
WRITER = LogFileThread()
atexit.register(WRITER.drain, 5.0)


def flush_call_logs(timeout: float = 10.0) -> bool:
    """Wait until every call log line queued so far is on disk (the ``on_call_report`` hook runs on the event
    loop *before* the log file is finished); False if ``timeout`` passed first. Stopping a server does it."""
    return WRITER.drain(timeout)


def read_call_log(path: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """``(events, report)`` from a call log; ``report`` is None if the call did not end cleanly."""
    events: list[dict[str, Any]] = []
    report = None
    with open(path, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            row = orjson.loads(line)
            if row.get("kind") == REPORT_KIND:
                report = row["data"]
            else:
                events.append(row)
    return events, report
