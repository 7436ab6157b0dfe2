"""Fixtures for the Plivo tests: a real VoiceServer on loopback, the fake Plivo, and Plivo call control."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from voice_runtime import ConnectionConfig, VoiceServer, create_stt, create_tts
from voice_runtime.server import RunningServer
from voice_runtime.testing.fake_plivo import FakePlivo


class PlivoRig:
    """Owns everything a test starts, and stops it all at the end."""

    def __init__(self) -> None:
        self.running: list[RunningServer] = []
        self.fakes: list[FakePlivo] = []
        self.phones: list[Any] = []

    def server(self, flow: Any = None, *, script: list[str] | None = None, **kwargs: Any) -> tuple[VoiceServer, RunningServer]:
        kwargs.setdefault("stt_factory", lambda: create_stt("mock", script=list(script or [])))
        kwargs.setdefault("tts_factory", lambda: create_tts("mock"))
        server = VoiceServer(inbound_flow=flow, **kwargs)
        running = server.start()
        server.public_url = running.http_url
        self.running.append(running)
        return server, running

    def fake(self, **kwargs: Any) -> FakePlivo:
        fake = FakePlivo(**kwargs).start()
        self.fakes.append(fake)
        return fake

    def control(self, server: VoiceServer, fake: FakePlivo, **kwargs: Any) -> Any:
        from voice_runtime.transports.plivo_control import PlivoCallControl

        kwargs.setdefault("from_number", "+14155550000")
        return PlivoCallControl(
            server, auth_id=fake.auth_id, auth_token=fake.auth_token, api_base_url=fake.base_url, **kwargs
        )

    def close(self) -> None:
        for phone in self.phones:
            phone.close()
        for fake in self.fakes:
            fake.stop()
        for running in self.running:
            running.stop()


@pytest.fixture
def rig() -> Iterator[PlivoRig]:
    r = PlivoRig()
    try:
        yield r
    finally:
        r.close()


#: Keep the whole utterance at the carrier so a clear finds checkpoints pending there (the Plivo no-ack path).
DEEP_BUFFER = ConnectionConfig(playout_lead=30.0)
