"""The simulated campaign at full size: 2,000 short calls, 4 worker processes, global CPS 20, a kill -9.

    .venv/bin/python benchmarks/campaign_bench.py                    # 2,000 calls, kill -9 w1 at 40 % of dials
    .venv/bin/python benchmarks/campaign_bench.py --calls 400 --no-kill --json out.json

Everything is real except the callees: a real redis-server on a loopback port, 4 worker processes (each an
addressable ``VoiceServer`` + ``TwilioCallControl`` + ``CampaignWorker``), the fake Twilio in this process
taking real REST dials and answering with real signed callbacks and real media WebSockets
(``voice_runtime.testing.carrier_plan``: 10 % busy — half of them on every attempt —, 5 % no-answer on every
attempt, 5 % machine, the rest human; the flow says one word and hangs up).

Reported: wall time (first dial to last job final), achieved CPS (dials over that span), the most dials in any
1-s window from the fake carrier's own log (kernel arrival times), double dials and lost jobs, retries,
reclaims, CPS slot forfeits, Redis round trips per dial (client-side, one per request or pipeline, from the
workers that exited normally), worker CPU per dial, redis-server CPU and commands per dial.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from voice_runtime.campaign import CallJob, Campaign, Outcome, RetryPolicy  # noqa: E402
from voice_runtime.campaign.keys import GROUP  # noqa: E402
from voice_runtime.testing.campaign_fleet import (  # noqa: E402
    CampaignFleet,
    max_in_window,
    mix_decide,
    mix_expected_dials,
    mix_number,
)
from voice_runtime.testing.redis_server import RedisServer  # noqa: E402


def _redis_cpu(client: Any) -> tuple[float, int]:
    info = client.info()
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"]), int(info["total_commands_processed"])


def run(args: argparse.Namespace) -> dict[str, Any]:
    policy = RetryPolicy(
        max_attempts=args.max_attempts,
        delays={Outcome.BUSY: args.retry_delay, Outcome.NO_ANSWER: args.retry_delay, Outcome.CANCELED: args.retry_delay},
    )
    with RedisServer() as redis_server, tempfile.TemporaryDirectory() as stats_dir:
        client = redis_server.client()
        fleet = CampaignFleet(redis_server.url, mix_decide, workers=args.workers, stats_dir=stats_dir, max_calls=args.max_calls).start()
        killed: str | None = None
        cpu_at_kill = 0.0
        try:
            campaign = Campaign.create(client, "bench", account=fleet.account, cps=args.cps, headroom=args.headroom, retry=policy)
            redis_cpu0, commands0 = _redis_cpu(client)
            expected = sum(mix_expected_dials(i, args.max_attempts) for i in range(args.calls))
            campaign.add([CallJob(mix_number(i), "greet", {"word": "hi"}, job_id=f"job{i}") for i in range(args.calls)])
            if args.kill:
                fleet.wait_for_dials(int(expected * args.kill_at), timeout=args.timeout)
                killed = "w1"
                cpu_at_kill = fleet.cpu_seconds(killed)
                fleet.kill(killed)
            status = campaign.wait_finished(args.timeout)
            redis_cpu1, commands1 = _redis_cpu(client)
        finally:
            stats = fleet.stop()
        assert fleet.plan is not None
        dial_times = fleet.dial_times()
        counts = fleet.plan.dial_counts()
        results = list(campaign.results())
        attempts = {r["number"]: r["attempts"] for r in results}
        # a double dial: the carrier saw more dials of a number than the job made attempts
        over = sum(1 for i in range(args.calls) if counts[mix_number(i)] > attempts.get(mix_number(i), 0))
        under = sum(1 for i in range(args.calls) if counts[mix_number(i)] < mix_expected_dials(i, args.max_attempts))
        outcomes: dict[str, int] = {}
        for result in results:
            outcomes[result["outcome"]] = outcomes.get(result["outcome"], 0) + 1
        span = dial_times[-1] - dial_times[0]
        finished = [s for s in stats.values()]
        per_worker_cpu = [s["cpu_seconds"] / max(1, s["dials"]) * 1000 for s in finished]
        report = {
            "calls": args.calls,
            "workers": args.workers,
            "cps_limit": args.cps,
            "headroom": args.headroom,
            "killed_worker": killed,
            "dials": len(dial_times),
            "dials_expected": expected,
            "wall_seconds": round(span, 2),
            "achieved_cps": round((len(dial_times) - 1) / span, 2),
            "max_dials_in_any_1s_window": max_in_window(dial_times, 1.0),
            "numbers_dialled_more_than_their_attempts": over,
            "numbers_dialled_fewer_than_planned": under,  # a call answered by w1 as it died is not retried
            "jobs_final": status.done + status.failed + status.cancelled,
            "lost_jobs": args.calls - len({r["job_id"] for r in results}),
            "pending_entries_left": client.xpending(campaign.keys.jobs, GROUP)["pending"],
            "outcomes": outcomes,
            "retries": status.retries,
            "reclaimed": sum(s["reclaimed"] for s in finished),
            "reconciled_dialled": sum(s["reconciled_dialled"] for s in finished),
            "reconciled_not_dialled": sum(s["reconciled_not_dialled"] for s in finished),
            "cps_forfeits": sum(s["cps_forfeits"] for s in finished),
            "redis_round_trips_per_dial": round(sum(s["redis_round_trips"] for s in finished) / max(1, sum(s["dials"] for s in finished)), 1),
            "worker_cpu_ms_per_dial_median": round(statistics.median(per_worker_cpu), 1),
            "worker_cpu_ms_per_dial_min_max": [round(min(per_worker_cpu), 1), round(max(per_worker_cpu), 1)],
            "killed_worker_cpu_s_at_kill": round(cpu_at_kill, 2),
            "redis_server_cpu_ms_per_dial": round((redis_cpu1 - redis_cpu0) * 1000 / len(dial_times), 3),
            "redis_commands_per_dial": round((commands1 - commands0) / len(dial_times), 1),
            "carrier_plan_errors": len(fleet.plan.errors),
        }
        client.close()
        return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--cps", type=float, default=20)
    parser.add_argument("--headroom", type=float, default=0.1)
    parser.add_argument("--max-calls", type=int, default=10, help="per worker")
    parser.add_argument("--max-attempts", type=int, default=3)
    parser.add_argument("--retry-delay", type=float, default=2.0)
    parser.add_argument("--kill-at", type=float, default=0.4, help="kill -9 w1 after this fraction of the dials")
    parser.add_argument("--no-kill", dest="kill", action="store_false")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args()
    report = run(args)
    text = json.dumps(report)
    print(text)  # one JSON object on the last line, as every benchmark here
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    ok = report["numbers_dialled_more_than_their_attempts"] == 0 and report["lost_jobs"] == 0 and report["max_dials_in_any_1s_window"] <= args.cps
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
