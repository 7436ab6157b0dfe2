"""``voice-runtime demo``: the offline simulated call (see :mod:`voice_runtime.demo`)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

EXAMPLES = """\
examples:
  voice-runtime demo                       # real speech if [local] is installed, else mock tones
  voice-runtime demo --providers mock      # no models: tones, scripted words, same timing
  voice-runtime demo --out-dir /tmp/calls  # each run writes calls/<time>-<call id>/call.wav
"""


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "demo",
        help="run an offline simulated call with a live transcript",
        description="A complete simulated call over real sockets: a server, a simulated phone, an agent flow.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--providers", choices=["auto", "local", "mock"], default="auto", help="speech providers (auto: local if installed)")
    parser.add_argument("--out-dir", default="calls", metavar="DIR", help="each call gets its own folder here (default: calls)")
    parser.add_argument("--wav", default=None, metavar="PATH", help="write the stereo recording exactly here instead ('' to skip)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show runtime log messages")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from voice_runtime.demo import run_demo

    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    skip = args.wav == ""
    report = run_demo(providers=args.providers, wav_path=args.wav or None, out_dir=None if skip else args.out_dir)
    return 0 if report.ok else 1
