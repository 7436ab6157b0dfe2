"""The ``voice-runtime`` command (also ``python -m voice_runtime``).

One module per subcommand; each has ``register(subparsers)`` and a ``run(args) -> exit status``. Errors a
user can fix (bad target, missing credentials, provider not installed) are :class:`CliError`: one line on
stderr, exit status 2, no traceback.
"""

from __future__ import annotations

import argparse
import inspect
import sys

from voice_runtime.cli import call, calls, console, demo, report, serve, sms
from voice_runtime.cli.common import EXIT_USAGE, CliError

SUBCOMMANDS = (serve, call, console, sms, calls, report, demo)

EXAMPLES = """\
examples:
  voice-runtime demo                                    # an offline simulated call, live transcript
  voice-runtime console examples/ivr_menu.py:flow       # be the caller in this terminal
  voice-runtime serve examples/appointment.py:flow --stt local --tts local \\
      --carrier twilio --public-url https://abc.ngrok.app
  voice-runtime call +15551234567 examples/reminder.py:flow --carrier plivo --public-url https://...
  voice-runtime sms +15551234567 "See you at 3" --carrier twilio
  voice-runtime calls --server http://127.0.0.1:8080    # live calls of a running server

'voice-runtime COMMAND --help' explains each command.
"""


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("voice-runtime")
    except PackageNotFoundError:  # running from a source tree that is not installed
        from voice_runtime import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voice-runtime",
        description="Sequential Python call flows over telephony media streams (Twilio, Plivo).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"voice-runtime {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.register(sub)
    from voice_runtime.campaign.cli import add_campaign_parser  # campaign create|add|status|... (Redis)

    add_campaign_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        run = args.run
        if "out" in inspect.signature(run).parameters:  # campaign commands take out=sys.stdout, bound at import
            return int(run(args, sys.stdout) or 0)
        return int(run(args) or 0)
    except CliError as exc:
        print(f"voice-runtime {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


__all__ = ["CliError", "build_parser", "main"]
