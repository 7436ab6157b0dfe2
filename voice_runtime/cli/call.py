"""``voice-runtime call NUMBER MODULE:FLOW``: dial one call, run the flow on it, exit with how it ended."""

from __future__ import annotations

import argparse
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

#: How a :class:`~voice_runtime.server.dialer.CallOutcome` result becomes the exit status.
EXIT_CODES = {"completed": EXIT_COMPLETED, "flow-error": EXIT_FLOW_ERROR, "busy": EXIT_BUSY, "no-answer": EXIT_NO_ANSWER, "failed": EXIT_FAILED, "machine": EXIT_MACHINE}

EXAMPLES = """\
examples:
  voice-runtime call +15551234567 examples/reminder.py:flow --carrier twilio \\
      --public-url https://abc.ngrok.app --port 8080 --stt local --tts local --amd
  voice-runtime call +14155550100 examples/appointment.py:flow --carrier plivo \\
      --public-url https://voice.example.com --stt elevenlabs --tts elevenlabs
  # through a running 'voice-runtime serve' (its flow, its providers; VOICE_ADMIN_TOKEN on both sides)
  voice-runtime call +15551234567 --server http://127.0.0.1:8080 --carrier twilio --amd

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
    parser.add_argument("flow", metavar="MODULE:FLOW", nargs="?", help="the flow to run, e.g. examples/reminder.py:flow (with --server: optional, must be what the server runs)")
    parser.add_argument("--server", metavar="URL", help="attach to a running 'voice-runtime serve' at URL: it dials and runs its flow; this prints the transcript")
    parser.add_argument("--token", metavar="TOKEN", help="with --server: admin bearer token (default env VOICE_ADMIN_TOKEN)")
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


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, json_lines=args.log_json)
    if args.server:
        return _run_attached(args)
    if not args.flow:
        raise CliError("give the flow to run (MODULE:FLOW), or --server URL to use a running server's")
    return _run_here(args)


def _run_here(args: argparse.Namespace) -> int:
    """Serve this call's stream endpoint and callbacks in this process, dial, run the flow here."""
    from voice_runtime.errors import CallError, CarrierApiError
    from voice_runtime.server import VoiceServer
    from voice_runtime.server.dialer import dial_options, run_dialled_call

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
        printer.line("CALL", f"dialling {args.number} via {args.carrier}")
        try:
            outbound = control.dial(args.number, session=session, **dial_options(args.carrier, args.amd))
        except (CarrierApiError, CallError) as exc:
            printer.line("CALL", f"dial failed: {exc}")
            return EXIT_FAILED
        outcome = run_dialled_call(outbound, control, flow, answer_timeout=args.answer_timeout)
    return _report(printer, outcome.result, outcome.detail)


def _report(printer: TranscriptPrinter, result: str, detail: str) -> int:
    if result in ("busy", "no-answer", "failed"):
        printer.line("CALL", f"not answered ({detail or result})")
    elif result == "machine":
        printer.line("CALL", f"answered by {detail}")
    elif result == "flow-error":
        printer.line("ERROR", f"flow failed: {detail}")
    printer.line("RESULT", result)
    return EXIT_CODES.get(result, EXIT_FAILED)


def _run_attached(args: argparse.Namespace) -> int:
    """Ask a running server to dial (``POST /admin/calls``) and follow the call's events until it ends."""
    import os

    import httpx

    from voice_runtime.call_events import CallEvent

    token = args.token or os.environ.get("VOICE_ADMIN_TOKEN")
    if not token:
        raise CliError("--server needs the admin token: pass --token or set VOICE_ADMIN_TOKEN")
    base = args.server.rstrip("/") + "/admin/calls"
    headers = {"Authorization": f"Bearer {token}"}
    printer = TranscriptPrinter()
    printer.line("CALL", f"dialling {args.number} via {args.carrier} through {args.server}")
    request = {"to": args.number, "carrier": args.carrier, "amd": args.amd, "flow": args.flow, "answer_timeout": args.answer_timeout}
    with httpx.Client(headers=headers, timeout=30.0) as client:
        try:
            response = client.post(base, json=request)
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach {base}: {exc}") from None
        if response.status_code == 502:
            printer.line("CALL", response.json().get("error", "dial failed"))
            return EXIT_FAILED
        if response.status_code != 201:
            raise CliError(f"{base} answered {response.status_code}: {_error_of(response)}")
        call_id = response.json()["id"]
        after = 0
        while True:
            try:
                response = client.get(f"{base}/{call_id}/events", params={"after": after, "wait": 10})
            except httpx.HTTPError as exc:
                raise CliError(f"lost the server while following call {call_id}: {exc}") from None
            if response.status_code != 200:
                raise CliError(f"{base}/{call_id}/events answered {response.status_code}: {_error_of(response)}")
            page = response.json()
            for item in page["events"]:
                printer(CallEvent(item["kind"], printer.t0 + float(item["t"]), item.get("call_id"), item.get("data") or {}))
            after = page["next"]
            if page["outcome"] is not None:
                outcome = page["outcome"]
                return _report(printer, outcome["result"], outcome.get("detail", ""))


def _error_of(response: Any) -> str:
    try:
        return str(response.json().get("error", ""))
    except ValueError:
        return response.text[:200]
