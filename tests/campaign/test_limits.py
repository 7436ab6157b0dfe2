"""The Lua CPS limiter and the global concurrency leases, against a real Redis, from racing threads."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from voice_runtime.campaign import current_cps, set_account_cps
from voice_runtime.campaign.keys import CpsKeys, FleetKeys
from voice_runtime.campaign.scripts import Scripts
from voice_runtime.testing.campaign_fleet import max_in_window


def test_cps_reservations_from_racing_workers_never_exceed_the_rate(redis_client: Any) -> None:
    set_account_cps(redis_client, "ACtest", 50, headroom=0.0)
    keys = CpsKeys("ACtest")
    scripts = Scripts(redis_client)

    def reserve(n: int) -> None:
        for _ in range(n):
            granted, wait_us, _ = scripts.cps_reserve(keys=[keys.bucket, keys.grants], args=[10_000_000])
            assert granted == 1 and 0 <= wait_us <= 10_000_000  # granted within the max wait asked for

    threads = [threading.Thread(target=reserve, args=(25,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    grants = sorted(score / 1e6 for _, score in redis_client.zrange(keys.grants, 0, -1, withscores=True))
    assert len(grants) == 200
    gaps = [b - a for a, b in zip(grants, grants[1:], strict=False)]
    assert min(gaps) >= 0.02 - 1e-6  # 1/50 s apart, whoever asked
    assert max_in_window(grants) <= 50
    assert current_cps(redis_client, "ACtest", seconds=60) > 0


def test_reservation_beyond_the_max_wait_is_not_taken(redis_client: Any) -> None:
    set_account_cps(redis_client, "ACslow", 1, headroom=0.0)
    keys = CpsKeys("ACslow")
    scripts = Scripts(redis_client)
    assert scripts.cps_reserve(keys=[keys.bucket, keys.grants], args=[100_000])[0] == 1
    granted, wait_us, interval = scripts.cps_reserve(keys=[keys.bucket, keys.grants], args=[100_000])
    assert granted == 0 and 900_000 < wait_us <= 1_000_000 and interval == 1_000_000
    assert redis_client.zcard(keys.grants) == 1


def test_unconfigured_account_is_a_clear_error(redis_client: Any) -> None:
    import redis

    keys = CpsKeys("ACnone")
    with pytest.raises(redis.ResponseError, match="no CPS configured"):
        Scripts(redis_client).cps_reserve(keys=[keys.bucket, keys.grants], args=[1000])


def test_global_call_slots_cap_expire_and_refresh(redis_client: Any) -> None:
    keys = FleetKeys("f1")
    scripts = Scripts(redis_client)
    assert [scripts.acquire_slot(keys=[keys.slots], args=[f"l{i}", 60_000, 3]) for i in range(4)] == [1, 1, 1, 0]
    redis_client.zrem(keys.slots, "l0")
    assert scripts.acquire_slot(keys=[keys.slots], args=["l4", 60_000, 3]) == 1
    # a dead worker's lease lapses: its score is in the past
    redis_client.zadd(keys.slots, {"l1": 1})
    assert scripts.acquire_slot(keys=[keys.slots], args=["l5", 60_000, 3]) == 1
    assert set(m.decode() for m in redis_client.zrange(keys.slots, 0, -1)) == {"l2", "l4", "l5"}
    before = redis_client.zscore(keys.slots, "l2")
    assert scripts.refresh_slots(keys=[keys.slots], args=[120_000, "l2", "gone"]) == 2
    assert redis_client.zscore(keys.slots, "l2") > before
    assert redis_client.zscore(keys.slots, "gone") is None  # XX: a released lease is not resurrected
