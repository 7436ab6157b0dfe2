"""``voice-runtime report CALL.jsonl``: draw a call's timeline (``voice_runtime.report``, when installed)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from voice_runtime.cli.common import CliError

EXAMPLES = """\
examples:
  voice-runtime report calls/20261201-201502-CA1f.../events.jsonl              # writes events.png next to it
  voice-runtime report events.jsonl --out timeline.svg
"""


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "report",
        help="draw a call's timeline from its event log",
        description="Render the timeline picture of one call from its JSON-lines event log.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("path", metavar="CALL.jsonl")
    parser.add_argument("-o", "--out", metavar="FILE", help="output picture: .png, .svg or .html (default: the log's name with .png)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not path.is_file():
        raise CliError(f"no such file: {path}")
    try:
        from voice_runtime.report import render
    except ImportError as exc:
        raise CliError(f"timeline reports are not available in this install ({exc}); they need voice_runtime.report and its [viz] extra") from None
    out = Path(args.out) if args.out else path.with_suffix(".png")
    try:
        written = render(path, out)
    except (ValueError, OSError) as exc:
        raise CliError(f"cannot render {path}: {exc}") from None
    print(f"timeline: {written or out}")
    return 0
