"""``voice-runtime campaign ...`` and ``voice-runtime calls`` through the real entry point, on a real Redis."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from voice_runtime.campaign import Campaign
from voice_runtime.cli import main
from voice_runtime.testing.redis_server import RedisServer


def run(capsys: pytest.CaptureFixture[str], redis_server: RedisServer, *argv: str) -> str:
    capsys.readouterr()
    assert main([*argv[:2], *argv[2:], "--redis", redis_server.url] if argv[0] == "campaign" else [*argv, "--redis", redis_server.url]) == 0
    return capsys.readouterr().out


def test_campaign_commands(redis_server: RedisServer, redis_client: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = run(capsys, redis_server, "campaign", "create", "cli1", "--account", "ACcli", "--cps", "5", "--max-attempts", "2")
    assert "campaign cli1: running" in out
    jobs = tmp_path / "jobs.csv"
    jobs.write_text('number,flow,params,start,end,tz\n+15550001111,greet,"{""name"": ""Ana""}",09:00,20:00,Europe/Berlin\n+15550002222,greet\n')
    assert "added 2 jobs to cli1" in run(capsys, redis_server, "campaign", "add", "cli1", str(jobs))
    status = json.loads(run(capsys, redis_server, "campaign", "status", "cli1", "--json"))
    assert (status["total"], status["queued"], status["state"], status["account"]) == (2, 2, "running", "ACcli")
    assert "[paused]" in run(capsys, redis_server, "campaign", "pause", "cli1")
    assert "[running]" in run(capsys, redis_server, "campaign", "resume", "cli1")
    assert "[cancelled]" in run(capsys, redis_server, "campaign", "cancel", "cli1")
    campaign = Campaign(redis_client, "cli1")
    job_ids = [m.decode().rsplit(":", 1)[1] for m in redis_client.keys(campaign.keys.job("*"))]
    windows = [campaign.job(j)["window"] for j in job_ids]
    assert any("Europe/Berlin" in w for w in windows)
    assert any(campaign.job(j)["params"] == {"name": "Ana"} for j in job_ids)
    assert run(capsys, redis_server, "campaign", "results", "cli1") == ""
    assert json.loads(run(capsys, redis_server, "calls", "--json")) == {"workers": [], "calls": []}
    assert "0 live calls" in run(capsys, redis_server, "calls")


def test_status_of_a_missing_campaign_is_a_clear_error(redis_server: RedisServer, redis_client: Any) -> None:
    with pytest.raises(Exception, match="no campaign 'nope'"):
        main(["campaign", "status", "nope", "--redis", redis_server.url])


def test_create_records_the_carrier(redis_server: RedisServer, redis_client: Any, capsys: pytest.CaptureFixture[str]) -> None:
    out = run(capsys, redis_server, "campaign", "create", "cli2", "--account", "MAcli", "--cps", "2", "--carrier", "plivo")
    assert "campaign cli2: running" in out
    status = json.loads(run(capsys, redis_server, "campaign", "status", "cli2", "--json"))
    assert (status["carrier"], status["account"]) == ("plivo", "MAcli")
    assert "(plivo MAcli)" in run(capsys, redis_server, "campaign", "status", "cli2")
    assert Campaign(redis_client, "cli2").meta()["carrier"] == "plivo"
    with pytest.raises(SystemExit):  # argparse: not a registered carrier
        main(["campaign", "create", "cli3", "--account", "x", "--cps", "1", "--carrier", "sip", "--redis", redis_server.url])
    assert not Campaign(redis_client, "cli3").exists()
