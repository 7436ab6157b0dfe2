"""A real redis-server per test module, on a free loopback port (skips with one line where none is installed)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from voice_runtime.testing.redis_server import RedisServer


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    if not RedisServer.available():
        pytest.skip("redis-server not installed: apt-get install redis-server (scripts/test.sh does it as root)")
    pytest.importorskip("redis", reason="redis-py not installed: pip install voice-runtime[redis]")
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[Any]:
    client = redis_server.client()
    client.flushall()
    try:
        yield client
    finally:
        client.close()
