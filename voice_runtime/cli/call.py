"""``voice-runtime call NUMBER MODULE:FLOW``: dial one call, run the flow on it, exit with how it ended."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from voice_runtime.cli.common import CARRIERS, CliError, add_provider_flags, attach_carrier, load_flow, provider_factories, public_url_from
from voice_runtime.cli.logs import LEVELS, configure_logging
from voice_runtime.cli.transcript import TranscriptPrinter

#: Exit statuses: how the call ended (2 stays "usage / configuration error", as everywhere in the CLI).
EXIT_COMPLETED = 0
EXIT_FLOW_ERROR = 1
EXIT_BUSY = 3
EXIT_NO_ANSWER = 4
EXIT_FAILED = 5
EXIT_MACHINE = 6

_NOT_ANSWERED_CODES = {"busy": EXIT_BUSY, "no-answer": EXIT_NO_ANSWER, "timeout": EXIT_NO_ANSWER}

EXAMPLES = """\
examples:
  voice-runtime call +15551234567 examples/reminder.py:flow --carrier twilio \\
      --public-url https://abc.ngrok.app --port 8080 --stt local --tts local --amd
  voice-runtime call +14155550100 examples/appointment.py:flow --carrier plivo \\
      --public-url https://voice.example.com --stt elevenlabs --tts elevenlabs

exit status: 0 completed, 1 the flow failed, 2 usage/configuration error,
             3 busy, 4 no answer, 5 failed/canceled, 6 answered by a machine
"""


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "call",
        help="dial one call and run a flow on it, with a live transcript",
        description="Dial NUMBER with the chosen carrier, serve the call's media stream here, run FLOW on it and "
        "exit with a status that says how the call ended.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("number", metavar="NUMBER", help="E.164 number to dial, e.g. +15551234567")
    parser.add_argument("flow", metavar="MODULE:FLOW", help="the flow to run, e.g. examples/reminder.py:flow")
    parser.add_argument("--carrier", choices=CARRIERS, default="twilio", help="default twilio")
    add_provider_flags(parser)
    parser.add_argument("--amd", action="store_true", help="answering-machine detection (session.wait_for_answered_by)")
    parser.add_argument("--public-url", metavar="URL", help="public https:// base the carrier reaches this process on (env VOICE_PUBLIC_URL)")
    parser.add_argument("--host", default="0.0.0.0", help="interface for this call's stream endpoint (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=8080, help="port for this call's stream endpoint and callbacks (default 8080)")
    parser.add_argument("--answer-timeout", type=float, default=60.0, metavar="SECONDS", help="give up if not answered (default 60)")
    parser.add_argument("--log-level", choices=LEVELS, default="warning")
    parser.add_argument("--log-json", action="store_true")
    parser.set_defaults(run=run)


def exit_code_for_status(status: str | None) -> int:
    return _NOT_ANSWERED_CODES.get((status or "").lower(), EXIT_FAILED)


def run(args: argparse.Namespace) -> int:
    from voice_runtime.errors import CallError, CallNotAnsweredError, CarrierApiError
    from voice_runtime.server import VoiceServer

    configure_logging(args.log_level, json_lines=args.log_json)
    flow = load_flow(args.flow)
    stt_factory, tts_factory = provider_factories(args)
    public_url = public_url_from(args)
    server = VoiceServer(stt_factory=stt_factory, tts_factory=tts_factory, public_url=public_url)
    control = attach_carrier(server, args.carrier, public_url)
    printer = TranscriptPrinter()
    try:
        running = server.start(host=args.host, port=args.port)
    except RuntimeError as exc:
        raise CliError(f"cannot listen on {args.host}:{args.port}: {exc}") from None
    with running:
        session = server.new_session()
        session.add_event_listener(printer)
        options: dict[str, Any] = {}
        if args.amd:
            options["machine_detection"] = "Enable" if args.carrier == "twilio" else True
        printer.line("CALL", f"dialling {args.number} via {args.carrier}")
        try:
            outbound = control.dial(args.number, session=session, **options)
        except (CarrierApiError, CallError) as exc:
            printer.line("CALL", f"dial failed: {exc}")
            return EXIT_FAILED
        try:
            outbound.wait_answered(args.answer_timeout)
        except CallNotAnsweredError as exc:
            status = exc.status or ("no-answer" if getattr(exc, "timeout", None) else None)
            printer.line("CALL", f"not answered ({status or exc})")
            _cancel(control, outbound.call_id)
            return exit_code_for_status(status)
        code = _run_flow(flow, session, printer)
        if not session.is_disconnected:
            session.hangup(10.0)
        control.forget(outbound.call_id)
        answered_by = (session.answered_by or "").lower()
        if answered_by.startswith(("machine", "fax")):
            printer.line("CALL", f"answered by {answered_by}")
            return EXIT_MACHINE if code == EXIT_COMPLETED else code
        return code


def _run_flow(flow: Any, session: Any, printer: TranscriptPrinter) -> int:
    """Run the flow in this thread: a caller hanging up is a normal ending, anything else is a failure."""
    from voice_runtime.errors import CallHangupError

    try:
        flow(session)
    except CallHangupError:
        return EXIT_COMPLETED
    except Exception as exc:
        printer.line("ERROR", f"flow failed: {type(exc).__name__}: {exc}")
        return EXIT_FLOW_ERROR
    return EXIT_COMPLETED


def _cancel(control: Any, call_id: str) -> None:
    try:
        control.hangup_call(call_id)
    except Exception as exc:  # already ended is the usual case
        print(f"(cancelling {call_id}: {exc})", file=sys.stderr)
