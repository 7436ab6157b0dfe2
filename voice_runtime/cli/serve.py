"""``voice-runtime serve MODULE:OBJ``: run a server for a flow (or a ready-made ``VoiceServer``)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import threading
import time
from typing import Any

from voice_runtime.cli.common import (
    CARRIERS,
    CliError,
    add_provider_flags,
    attach_carrier,
    load_target,
    provider_factories,
    public_url_from,
    webhook_urls,
)
from voice_runtime.cli.logs import LEVELS, configure_logging

EXAMPLES = """\
examples:
  # a flow function; providers from flags, Twilio webhooks on the public URL of a tunnel
  voice-runtime serve examples/appointment.py:flow --stt local --tts local \\
      --carrier twilio --public-url https://abc.ngrok.app --port 8080
  # both carriers at once (credentials from TWILIO_* / PLIVO_* environment variables)
  voice-runtime serve examples/ivr_menu.py:flow --stt elevenlabs --tts elevenlabs \\
      --carrier twilio --carrier plivo --public-url https://voice.example.com
  # a VoiceServer your module builds (its providers and call controls are used as they are)
  voice-runtime serve myapp.voice:server --port 8080 --log-json
  # the websockets-native media server, two processes on one port (streams only)
  voice-runtime serve myapp.voice:server --mode native --workers 2 --port 8081

SIGTERM or Ctrl-C drains: new calls are refused, live calls get --drain-deadline seconds to finish.
"""

#: Environment variable carrying the serve arguments to uvicorn's worker / reloader processes.
ARGV_ENV = "VOICE_RUNTIME_SERVE_ARGV"


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "serve",
        help="serve a flow or a VoiceServer (carrier webhooks + media streams)",
        description="Serve MODULE:OBJ, where OBJ is a VoiceServer or a flow function (def flow(session): ...). "
        "MODULE is a dotted module name or a path to a .py file.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_serve_arguments(parser)
    parser.set_defaults(run=run)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="MODULE:OBJ", help="e.g. examples/ivr_menu.py:flow or myapp.voice:server")
    parser.add_argument("--carrier", action="append", choices=CARRIERS, default=[], help="attach a carrier's call control (repeatable)")
    add_provider_flags(parser)
    parser.add_argument("--public-url", metavar="URL", help="public https:// base the carrier reaches (env VOICE_PUBLIC_URL)")
    parser.add_argument("--host", default="0.0.0.0", help="interface to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    parser.add_argument("--mode", choices=("fastapi", "native"), default="fastapi", help="fastapi: webhooks + streams on one port (default); native: media streams only, websockets library")
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="processes sharing the port (dialled calls need care: docs/server-modes.md)")
    parser.add_argument("--reload", action="store_true", help="restart when the flow's files change (development; no drain)")
    parser.add_argument("--log-level", choices=LEVELS, default="info", help="default info")
    parser.add_argument("--log-json", action="store_true", help="one JSON object per log line")
    parser.add_argument("--drain-deadline", type=float, default=30.0, metavar="SECONDS", help="how long live calls may finish after SIGTERM (default 30)")


def build_server(args: argparse.Namespace) -> tuple[Any, dict[str, dict[str, str]]]:
    """The VoiceServer for ``args`` and, per carrier, the URLs its console must point at."""
    from voice_runtime.server import VoiceServer

    target = load_target(args.target)
    public_url = public_url_from(args)
    if isinstance(target, VoiceServer):
        server = target
        if args.stt or args.tts:
            stt_factory, tts_factory = provider_factories(args)
            server.stt_factory, server.tts_factory = stt_factory, tts_factory
        if public_url:
            server.public_url = public_url
    elif callable(target) and not isinstance(target, type):
        stt_factory, tts_factory = provider_factories(args)
        server = VoiceServer(stt_factory=stt_factory, tts_factory=tts_factory, inbound_flow=target, public_url=public_url)
    else:
        raise CliError(f"{args.target} is neither a VoiceServer nor a flow function")
    for carrier in args.carrier:
        if carrier not in server.call_controls:
            attach_carrier(server, carrier, public_url)
    if server.inbound_flow is None and not any(getattr(c, "inbound_flow", None) for c in server.call_controls.values()):
        logging.getLogger(__name__).warning("no inbound flow: inbound calls will be rejected")
    live_calls = getattr(server, "live_calls", None)
    if live_calls is not None:
        live_calls.flow_target = args.target  # what POST /admin/calls may ask this server to run
    urls = {}
    base = server.public_url or public_url
    for carrier, control in server.call_controls.items():
        urls[carrier] = webhook_urls(server, carrier, getattr(control, "public_url", None) or base or "")
    return server, urls


def _print_urls(args: argparse.Namespace, server: Any, urls: dict[str, dict[str, str]]) -> None:
    local = f"{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}"
    print(f"voice-runtime serve {args.target} ({args.mode}, {args.workers} worker{'s' if args.workers != 1 else ''})")
    print(f"  media streams:   ws://{local}{server.path_prefix}/stream")
    for carrier, table in urls.items():
        print(f"  {carrier}:")
        for name, url in table.items():
            print(f"    {name + ':':<30} {url}")
    if not urls:
        print("  no carrier attached (--carrier twilio|plivo): streams only, e.g. for the simulated phone")
    sys.stdout.flush()


#: Log lines that mean "listening now": uvicorn's own (one process), the native server's.
LISTENING_MARKERS = ("Uvicorn running on", "serving media streams on")
#: With uvicorn workers the parent binds the socket (without listening) before forking, and a worker logs
#: "Application startup complete" *before* it calls listen() on that shared socket; no line follows the listen.
#: So that marker only starts a short probe of the address (:func:`_print_when_accepting`).
WORKER_READY_MARKERS = ("Application startup complete",)


class _ReadyLine(logging.Handler):
    """Prints ``ready: ...`` once the web server says it listens (an event, so callers need not poll).

    ``probe``: an address to connect to first, for a marker that comes just before the listen (workers).
    """

    def __init__(self, markers: tuple[str, ...], probe: tuple[str, int] | None = None) -> None:
        super().__init__(logging.INFO)
        self.markers = markers
        self.probe = probe
        self.done = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.done and record.getMessage().startswith(self.markers):
            self.done = True
            line = f"ready: {record.getMessage()} (pid {os.getpid()})"
            if self.probe is None:
                print(line, flush=True)
            else:
                threading.Thread(target=_print_when_accepting, args=(self.probe, line), name="ready-probe", daemon=True).start()


def _print_when_accepting(address: tuple[str, int], line: str, deadline: float = 30.0) -> None:
    """Print ``line`` once ``address`` accepts a TCP connection: the worker's listen() follows its startup line
    within a loop turn, so this takes one or two tries; after ``deadline`` seconds it prints anyway (the
    server's own errors then say why)."""
    host, port = address
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    give_up = time.monotonic() + deadline
    delay = 0.005
    while time.monotonic() < give_up:
        try:
            socket.create_connection((host, port), timeout=1.0).close()
            break
        except OSError:
            time.sleep(delay)  # nothing to wait on: the listen() happens in uvicorn's worker code
            delay = min(delay * 2, 0.2)
    print(line, flush=True)


def _watch_ready(markers: tuple[str, ...] = LISTENING_MARKERS, probe: tuple[str, int] | None = None) -> None:
    # The whole voice_runtime.server hierarchy, not one module: the native runner's module has moved before.
    for name in ("uvicorn.error", "voice_runtime.server"):
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)  # the record must exist; the root handler still filters by level
        logger.addHandler(_ReadyLine(markers, probe))


def run(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise CliError("--workers must be at least 1")
    if args.reload and args.workers > 1:
        raise CliError("--reload runs one process; drop --workers")
    configure_logging(args.log_level, json_lines=args.log_json)
    server, urls = build_server(args)
    _print_urls(args, server, urls)
    if args.mode == "native" or not (args.reload or args.workers > 1):
        _watch_ready()
    if args.mode == "native":
        if args.reload:
            raise CliError("--reload needs --mode fastapi")
        from voice_runtime.server.ws_native import serve_native

        serve_native(server, host=args.host, port=args.port, workers=args.workers, drain_deadline=args.drain_deadline)
        return 0
    if args.reload or args.workers > 1:
        return _run_uvicorn_processes(args)
    server.serve(host=args.host, port=args.port, drain_deadline=args.drain_deadline, log_config=None)
    return 0


def _run_uvicorn_processes(args: argparse.Namespace) -> int:
    """uvicorn's reloader / worker processes need an import string: each builds the server from our args."""
    import uvicorn

    os.environ[ARGV_ENV] = json.dumps(sys.argv[sys.argv.index("serve") + 1 :] if "serve" in sys.argv else [args.target])
    reload_dirs = None
    if args.reload:
        module_part = args.target.rpartition(":")[0]
        reload_dirs = [os.path.dirname(os.path.abspath(module_part)) if module_part.endswith(".py") else os.getcwd()]
    uvicorn.run(
        "voice_runtime.cli.serve:app_from_environment",
        factory=True,
        host=args.host,
        port=args.port,
        workers=None if args.reload else args.workers,
        reload=args.reload,
        reload_dirs=reload_dirs,
        log_config=None,
        timeout_graceful_shutdown=args.drain_deadline,
    )
    return 0


def app_from_environment() -> Any:
    """uvicorn factory for worker/reload processes: rebuild the same server from the serve arguments."""
    parser = argparse.ArgumentParser(prog="voice-runtime serve")
    add_serve_arguments(parser)
    args = parser.parse_args(json.loads(os.environ.get(ARGV_ENV, "[]")))
    configure_logging(args.log_level, json_lines=args.log_json)
    _watch_ready(WORKER_READY_MARKERS, probe=(args.host, args.port))
    server, _ = build_server(args)
    return server.app
