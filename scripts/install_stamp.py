"""Decide whether ``scripts/bootstrap.sh`` must (re)install the package, and record what it installed.

Why: reinstalling on every run needs a package index (pip rebuilds the editable install with the build
backend), so a second ``bash scripts/demo.sh`` without network used to fail. The stamp holds the SHA-256 of
``pyproject.toml`` (dependencies, extras, entry points) and the extras installed; when both still cover what
is asked for, nothing is installed and the run works offline.

Standard library only: it runs before the project (or anything else) is installed.

    python scripts/install_stamp.py check VENV PYPROJECT "local,dev"   # exit 0: up to date, 1: install
    python scripts/install_stamp.py extras VENV "local"                # extras to install (requested + recorded)
    python scripts/install_stamp.py record VENV PYPROJECT "local,dev"  # after a successful install
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

STAMP_NAME = ".voice-runtime-install.json"


def parse_extras(text: str) -> list[str]:
    """``"local, dev,,local"`` → ``["dev", "local"]``: sorted, unique, blanks dropped."""
    return sorted({part.strip() for part in text.split(",") if part.strip()})


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stamp_path(venv: Path) -> Path:
    return venv / STAMP_NAME


def read_stamp(venv: Path) -> dict[str, object] | None:
    """The recorded stamp, or None when absent or unreadable (treated as "not installed")."""
    try:
        data = json.loads(stamp_path(venv).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_up_to_date(venv: Path, pyproject: Path, extras: list[str]) -> bool:
    """True when the venv's install matches this ``pyproject.toml`` and includes every requested extra."""
    if not (venv / "bin" / "python").exists() or not (venv / "bin" / "voice-runtime").exists():
        return False
    stamp = read_stamp(venv)
    if stamp is None or stamp.get("pyproject_sha256") != file_sha256(pyproject):
        return False
    recorded = stamp.get("extras")
    return isinstance(recorded, list) and set(extras) <= set(recorded)


def extras_to_install(venv: Path, extras: list[str]) -> list[str]:
    """The requested extras plus those installed before: a reinstall keeps every extra up to date."""
    stamp = read_stamp(venv) or {}
    recorded = stamp.get("extras")
    previous = [e for e in recorded if isinstance(e, str)] if isinstance(recorded, list) else []
    return sorted(set(extras) | set(previous))


def record(venv: Path, pyproject: Path, extras: list[str]) -> None:
    stamp = {"pyproject_sha256": file_sha256(pyproject), "extras": sorted(set(extras))}
    tmp = stamp_path(venv).with_suffix(".tmp")
    tmp.write_text(json.dumps(stamp, indent=1) + "\n")
    tmp.replace(stamp_path(venv))  # atomic: an interrupted install never leaves a stamp that claims success


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[0] not in ("check", "extras", "record"):
        print(__doc__, file=sys.stderr)
        return 2
    command, venv = argv[0], Path(argv[1])
    if command == "extras":
        print(",".join(extras_to_install(venv, parse_extras(argv[2]))))
        return 0
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    pyproject, extras = Path(argv[2]), parse_extras(argv[3])
    if command == "check":
        return 0 if is_up_to_date(venv, pyproject, extras) else 1
    record(venv, pyproject, extras)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
