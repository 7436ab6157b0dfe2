"""``voice-runtime campaign ...`` and ``voice-runtime calls``: campaigns and the fleet's live calls, from a shell.

::

    voice-runtime campaign create reminders --account AC123 --cps 20 --max-attempts 3
    voice-runtime campaign add reminders jobs.csv        # number,flow[,params JSON[,start,end,tz]]
    voice-runtime campaign status reminders              # or --json
    voice-runtime campaign pause|resume|cancel reminders
    voice-runtime campaign results reminders
    voice-runtime calls                                  # every live call of the fleet

Redis: ``--redis URL`` or ``VOICE_RUNTIME_REDIS_URL`` (default ``redis://localhost:6379/0``). Wire it into a
parser with :func:`add_campaign_parser` and :func:`add_calls_parser`; each sets ``args.run(args) -> int``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Iterator
from typing import Any, TextIO

DEFAULT_REDIS = "redis://localhost:6379/0"


def _redis(args: argparse.Namespace) -> Any:
    try:
        import redis
    except ImportError:
        raise SystemExit("campaigns need redis-py: pip install 'voice-runtime[redis]'") from None
    return redis.Redis.from_url(args.redis, socket_timeout=5.0, socket_connect_timeout=3.0)


def _add_redis_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis", default=os.environ.get("VOICE_RUNTIME_REDIS_URL", DEFAULT_REDIS), help="Redis URL")


def add_campaign_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``campaign`` (with its sub-commands) to ``subparsers``."""
    campaign = subparsers.add_parser("campaign", help="outbound call campaigns on Redis")
    campaign.set_defaults(verbose=False)
    sub = campaign.add_subparsers(dest="campaign_command", required=True)

    create = sub.add_parser("create", help="create a campaign (or set its account's CPS)")
    create.add_argument("name")
    create.add_argument("--account", required=True, help="carrier account the campaign dials with (Twilio Account SID, Plivo Auth ID)")
    create.add_argument(
        "--carrier", choices=_carrier_names(), default=None,
        help="only workers dialling with this carrier take the jobs (default: any worker)",
    )
    create.add_argument("--cps", type=float, help="the account's calls-per-second limit, fleet-wide")
    create.add_argument("--headroom", type=float, default=0.1, help="fraction of the CPS kept free for send jitter")
    create.add_argument("--max-attempts", type=int, default=3)
    create.add_argument("--busy-delay", type=float, default=60.0, help="seconds before retrying a busy number")
    create.add_argument("--no-answer-delay", type=float, default=300.0, help="seconds before retrying no-answer")
    create.add_argument("--machine-delay", type=float, default=600.0, help="retry delay when a flow asks to retry machines")
    create.set_defaults(run=_create)

    add = sub.add_parser("add", help="enqueue jobs from a CSV file ('-' = stdin)")
    add.add_argument("name")
    add.add_argument("file", help="CSV rows: number,flow[,params JSON[,window start,window end,time zone]]")
    add.set_defaults(run=_add)

    for command, helptext in (
        ("status", "progress: done/active/queued/failed, current CPS"),
        ("pause", "stop starting new attempts (live calls go on)"),
        ("resume", "start attempts again"),
        ("cancel", "end every queued job as cancelled (live calls go on)"),
        ("results", "each finished job's result, one JSON per line"),
    ):
        parser = sub.add_parser(command, help=helptext)
        parser.add_argument("name")
        if command == "status":
            parser.add_argument("--json", action="store_true")
        parser.set_defaults(run=_control)
    for parser in sub.choices.values():
        _add_redis_option(parser)
    return campaign


def add_calls_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``calls``: the live calls of every worker of a fleet (from their Redis heartbeats)."""
    calls = subparsers.add_parser("calls", help="list the live calls of the whole fleet")
    calls.set_defaults(verbose=False)
    calls.add_argument("--fleet", default="default")
    calls.add_argument("--json", action="store_true")
    _add_redis_option(calls)
    calls.set_defaults(run=_calls)
    return calls


def _carrier_names() -> list[str]:
    from voice_runtime.carriers import CARRIERS

    return sorted(CARRIERS)


def _create(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    from voice_runtime.campaign import Campaign, RetryPolicy

    policy = RetryPolicy(
        max_attempts=args.max_attempts,
        delays={"busy": args.busy_delay, "no-answer": args.no_answer_delay},
        machine_delay=args.machine_delay,
    )
    campaign = Campaign.create(
        _redis(args), args.name, account=args.account, cps=args.cps, headroom=args.headroom, retry=policy, carrier=args.carrier
    )
    print(f"campaign {campaign.name}: {campaign.status().state}", file=out)
    return 0


def read_jobs(stream: TextIO) -> Iterator[Any]:
    """CallJobs from CSV rows ``number,flow[,params JSON[,start,end,tz]]`` (a header row starting 'number' is skipped)."""
    from voice_runtime.campaign import CallJob, TimeWindow

    for line_no, row in enumerate(csv.reader(stream), start=1):
        if not row or row[0].strip().startswith("#") or (line_no == 1 and row[0].strip().lower() == "number"):
            continue
        if len(row) < 2:
            raise SystemExit(f"line {line_no}: need at least number,flow")
        params = json.loads(row[2]) if len(row) > 2 and row[2].strip() else {}
        window = TimeWindow(row[3].strip(), row[4].strip(), (row[5].strip() if len(row) > 5 else "") or "UTC") if len(row) > 4 and row[3].strip() else None
        yield CallJob(row[0].strip(), row[1].strip(), params, window)


def _add(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    from voice_runtime.campaign import Campaign

    campaign = Campaign(_redis(args), args.name)
    if args.file == "-":
        added = campaign.add(read_jobs(sys.stdin))
    else:
        with open(args.file, newline="") as handle:
            added = campaign.add(read_jobs(handle))
    print(f"added {len(added)} jobs to {campaign.name}", file=out)
    return 0


def _control(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    from voice_runtime.campaign import Campaign

    campaign = Campaign(_redis(args), args.name)
    command = args.campaign_command
    if command == "results":
        for result in campaign.results():
            print(json.dumps(result), file=out)
        return 0
    if command != "status":
        getattr(campaign, command)()
    status = campaign.status()
    if getattr(args, "json", False):
        print(json.dumps(status.as_dict()), file=out)
    else:
        print(
            f"{status.name} [{status.state}{', finished' if status.finished else ''}]  total {status.total}  "
            f"done {status.done}  active {status.active}  queued {status.queued}  failed {status.failed}  "
            f"cancelled {status.cancelled}  retries {status.retries}  cps {status.cps:.1f} "
            f"({status.carrier + ' ' if status.carrier else ''}{status.account})",
            file=out,
        )
    return 0


def _calls(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    from voice_runtime.campaign import fleet_live_calls, fleet_workers

    redis = _redis(args)
    calls = fleet_live_calls(redis, args.fleet)
    if args.json:
        print(json.dumps({"workers": fleet_workers(redis, args.fleet), "calls": calls}), file=out)
        return 0
    for worker in fleet_workers(redis, args.fleet):
        print(f"worker {worker['worker_id']} on {worker.get('host')} pid {worker.get('pid')}: load {worker.get('load')}, {worker.get('active')} active", file=out)
    for call in calls:
        print(f"  {call['call_sid']}  {call.get('state', '?'):8}  {call.get('number', '')}  campaign {call.get('campaign', '')} job {call.get('job', '')}  on {call['worker']}", file=out)
    print(f"{len(calls)} live calls", file=out)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (``python -m voice_runtime.campaign.cli``) until the main CLI wires these in."""
    parser = argparse.ArgumentParser(prog="voice-runtime")
    sub = parser.add_subparsers(dest="command", required=True)
    add_campaign_parser(sub)
    add_calls_parser(sub)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
