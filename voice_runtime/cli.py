"""The ``voice-runtime`` command."""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="voice-runtime", description="Sequential Python call flows over telephony media streams.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run an offline simulated call with a live transcript")
    demo.add_argument("--providers", choices=["auto", "local", "mock"], default="auto", help="speech providers (auto: local if installed)")
    demo.add_argument("--wav", default="demo-call.wav", help="where to write the stereo recording ('' to skip)")
    demo.add_argument("-v", "--verbose", action="store_true", help="show runtime log messages")
    from voice_runtime.campaign.cli import add_calls_parser, add_campaign_parser  # campaign|calls (Redis)

    add_campaign_parser(sub)
    add_calls_parser(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "demo":
        from voice_runtime.demo import run_demo

        report = run_demo(providers=args.providers, wav_path=args.wav or None)
        return 0 if report.ok else 1
    if callable(getattr(args, "run", None)):
        return int(args.run(args))
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
