"""A call's event log as JSON lines: one line per event, then one ``call_report`` line.

The schema (stable; ``docs/observability.md`` is its reference, and ``voice-runtime report`` reads it)::

    {"kind": "<event kind>", "at": <time.monotonic() seconds>, "call_id": "<carrier call id>", "data": {...}}
    ...
    {"kind": "call_report", "at": <monotonic>, "call_id": "...", "data": <CallReport.as_dict()>}

``data`` of the report holds ``wall_clock_offset``: ``at + wall_clock_offset`` is Unix time.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path
from typing import IO, Any

import orjson

from voice_runtime.call_events import CallEvent

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
    """Writes one call's events to a file as they happen (buffered; flushed at :meth:`close`)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path: Path | None = None
        self._file: IO[bytes] | None = None
        self._lock = threading.Lock()
        self._failed = False
        self.lines = 0

    def on_event(self, event: CallEvent) -> None:
        self.lines += 1
        if self.lines > MAX_EVENT_LINES:
            if self.lines == MAX_EVENT_LINES + 1:
                self._write("log_truncated", event.at, event.call_id, {"after_lines": MAX_EVENT_LINES})
            return
        self._write(event.kind, event.at, event.call_id, redact(event.data))

    def _write(self, kind: str, at: float, call_id: str | None, data: dict[str, Any]) -> None:
        with self._lock:
            if self._failed:
                return
            try:
                if self._file is None:
                    self.directory.mkdir(parents=True, exist_ok=True)
                    self.path = log_path(self.directory, call_id)
                    self._file = open(self.path, "xb")  # noqa: SIM115 - closed in close()
                self._file.write(event_line(kind, at, call_id, data))
            except OSError:
                self._failed = True  # a full disk must not end calls: logged once, then silent
                log.exception("call log %s could not be written; this call's log is incomplete", self.path)

    def write_report(self, call_id: str | None, report: dict[str, Any]) -> None:
        self._write(REPORT_KIND, time.monotonic(), call_id, {"schema": SCHEMA_VERSION, **report})

    def close(self) -> Path | None:
        with self._lock:
            f, self._file = self._file, None
        if f is not None:
            try:
                f.close()
            except OSError:
                log.exception("call log %s could not be closed", self.path)
        return self.path


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
