"""``voice-runtime sms NUMBER TEXT``: send one SMS through a carrier; print its id and status."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from voice_runtime.cli.common import CARRIERS, CliError

EXAMPLES = """\
examples:
  voice-runtime sms +15551234567 "See you tomorrow at 3." --carrier twilio   # TWILIO_* env
  voice-runtime sms +14155550100 "Your code is 1234" --carrier plivo --json   # PLIVO_* env
"""


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "sms",
        help="send one SMS and print its id and status",
        description="Send TEXT to NUMBER from the carrier's number (TWILIO_PHONE_NUMBER / PLIVO_PHONE_NUMBER).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("number", metavar="NUMBER")
    parser.add_argument("text", metavar="TEXT")
    parser.add_argument("--carrier", choices=CARRIERS, required=True)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from voice_runtime.errors import CarrierApiError, ConfigError
    from voice_runtime.transport import get_sms_transport

    if not args.text.strip():
        raise CliError("the message text is empty")
    try:
        transport = get_sms_transport(args.carrier)
        result = transport.send_sms(args.number, args.text)
    except (ConfigError, ImportError, ValueError) as exc:
        raise CliError(f"{args.carrier}: {exc}") from None
    except CarrierApiError as exc:
        print(f"voice-runtime sms: {args.carrier} refused the message: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # the SDK's own errors (e.g. PlivoRestError): the carrier said no
        print(f"voice-runtime sms: {args.carrier} refused the message: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result))
    else:
        print(f"id: {result.get('message_sid')}")
        print(f"status: {result.get('status')}")
        print(f"to: {result.get('to')}")
    return 0
