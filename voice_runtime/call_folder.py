"""Where a call's artefacts go: one folder per call, named for when it started and its call id.

Why: the demo used to write ``demo-call.wav`` in the working directory, so every run silently replaced the
previous recording. A folder per call (``calls/20261201-201502-CA1f…/``) keeps every run, sorts by time, and
gives the call's other artefacts (its timeline, its event log) a place next to the recording.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def call_folder_name(call_id: str | None, started: datetime) -> str:
    """``YYYYmmdd-HHMMSS-<call id>``; the id is reduced to filename-safe characters (ids come from the wire)."""
    safe_id = _UNSAFE.sub("-", call_id or "").strip("-.")[:64] or "call"
    return f"{started:%Y%m%d-%H%M%S}-{safe_id}"


def new_call_folder(root: str | Path, call_id: str | None, started: datetime | None = None) -> Path:
    """Create and return a fresh folder under ``root`` for one call; never reuses an existing one."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    base = call_folder_name(call_id, started or datetime.now())
    for attempt in range(1, 1000):
        folder = root / (base if attempt == 1 else f"{base}-{attempt}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise FileExistsError(f"could not create a new folder for call {call_id!r} under {root}")
