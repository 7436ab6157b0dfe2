"""A fresh loopback fake ElevenLabs per test (real HTTP + WebSocket listeners)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from voice_runtime.testing.fake_elevenlabs import FakeElevenLabs

API_KEY = "test-key"


@pytest.fixture
def fake(request: pytest.FixtureRequest) -> Iterator[FakeElevenLabs]:
    options = getattr(request, "param", {}) or {}
    with FakeElevenLabs(API_KEY, **options) as server:
        yield server
