"""Fixtures: a fake Twilio on loopback and a real VoiceServer with TwilioCallControl pointed at it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from voice_runtime import VoiceServer, create_stt, create_tts
from voice_runtime.server import RunningServer
from voice_runtime.testing.fake_twilio import FakeTwilio
from voice_runtime.transports.twilio_control import TwilioCallControl


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio() as twilio:
        yield twilio


@dataclass
class Stack:
    """Server + call control + fake carrier, all on loopback sockets."""

    server: VoiceServer
    control: TwilioCallControl
    running: RunningServer
    fake: FakeTwilio

    def url(self, path: str) -> str:
        return self.running.http_url + path

    def ws_url(self, path: str) -> str:
        return self.running.ws_url + path


@pytest.fixture
def make_stack(fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.delenv("TWILIO_SKIP_SIGNATURE_VALIDATION", raising=False)
    monkeypatch.delenv("VOICE_STREAM_URL", raising=False)
    stacks: list[Stack] = []

    def make(*, script: list[str] | None = None, server_kwargs: dict[str, Any] | None = None, **control_kwargs: Any) -> Stack:
        server = VoiceServer(
            stt_factory=lambda: create_stt("mock", script=list(script or [])),
            tts_factory=lambda: create_tts("mock"),
            **(server_kwargs or {}),
        )
        control_kwargs.setdefault("credentials", fake.credentials())
        control_kwargs.setdefault("http_client", fake.http_client())
        control = TwilioCallControl(server, **control_kwargs)
        running = server.start()
        server.public_url = running.http_url  # what a tunnel/proxy would be in production
        stack = Stack(server, control, running, fake)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.running.stop()


@pytest.fixture
def stack(make_stack: Any) -> Stack:
    return make_stack()
