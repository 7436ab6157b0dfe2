"""``voice-runtime calls``: live calls of one running server (its ``/admin/calls``) or of a fleet (Redis).

Two sources, one command: ``--server URL`` asks one server's authenticated admin endpoint
(:mod:`voice_runtime.server.admin`); ``--redis URL`` reads a campaign fleet's worker heartbeats
(:mod:`voice_runtime.campaign`), which is what ``voice_runtime.campaign.cli`` prints.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from voice_runtime.cli.common import CliError

EXAMPLES = """\
examples:
  VOICE_ADMIN_TOKEN=s3cret voice-runtime calls --server http://127.0.0.1:8080
  voice-runtime calls --server https://voice.example.com --token s3cret --json

  voice-runtime calls --redis redis://localhost:6379/0 --fleet default   # every worker of a campaign fleet

The server must run with the same VOICE_ADMIN_TOKEN in its environment (the endpoint is off without one).
"""


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "calls",
        help="list a running server's live calls",
        description="Read GET {server}/admin/calls with a bearer token and print one row per live call.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--server", default=os.environ.get("VOICE_SERVER_URL", "http://127.0.0.1:8080"), metavar="URL", help="the server's base URL including any path prefix (env VOICE_SERVER_URL; default http://127.0.0.1:8080)")
    parser.add_argument("--token", metavar="TOKEN", help="admin bearer token (default: env VOICE_ADMIN_TOKEN)")
    parser.add_argument("--json", action="store_true", help="print the endpoint's JSON")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS")
    parser.add_argument("--redis", metavar="URL", help="read a campaign fleet's live calls from Redis instead of one server")
    parser.add_argument("--fleet", default="default", help="with --redis: the fleet's name (default 'default')")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.redis:
        from voice_runtime.campaign.cli import _calls as fleet_calls  # the fleet's listing lives with campaigns

        return fleet_calls(args, sys.stdout)
    import httpx

    token = args.token or os.environ.get("VOICE_ADMIN_TOKEN")
    if not token:
        raise CliError("no admin token: pass --token or set VOICE_ADMIN_TOKEN")
    url = args.server.rstrip("/") + "/admin/calls"
    try:
        response = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=args.timeout)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach {url}: {exc}") from None
    if response.status_code != 200:
        try:
            reason = response.json().get("error", "")
        except ValueError:
            reason = response.text[:200]
        raise CliError(f"{url} answered {response.status_code}: {reason}")
    listing = response.json()
    if args.json:
        print(json.dumps(listing, indent=1))
        return 0
    print(format_table(listing.get("calls", [])))
    return 0


COLUMNS = (("id", "ID"), ("carrier", "CARRIER"), ("from", "FROM"), ("to", "TO"), ("state", "STATE"), ("duration_s", "DURATION"), ("last_turn_latency_ms", "LAST TURN"))


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "duration_s":
        return f"{value:.0f}s"
    if key == "last_turn_latency_ms":
        return f"{value} ms"
    return str(value)


def format_table(calls: list[dict[str, Any]]) -> str:
    if not calls:
        return "no live calls"
    rows = [[title for _, title in COLUMNS]] + [[_cell(key, call.get(key)) for key, _ in COLUMNS] for call in calls]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
