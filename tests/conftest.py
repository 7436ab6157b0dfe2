"""Shared fixtures: a real server on a loopback port and simulated phones that call it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from voice_runtime import VoiceServer, create_stt, create_tts
from voice_runtime.server import RunningServer
from voice_runtime.testing import SimulatedPhone

# Folders whose tests take 10-50 s each (real subprocesses, whole calls at the speed of speech). They are
# collected first so that, on pytest-xdist workers (scripts/test.sh), the long tests start early and the short
# ones fill in around them, instead of one long test starting last and holding up the end of the run.
LONG_TESTS_FIRST = ("tests/scripts/", "tests/examples/", "tests/cli/", "tests/demo/", "tests/campaign/", "tests/benchmarks/")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: not item.nodeid.startswith(LONG_TESTS_FIRST))  # stable: file order kept within


class CallHarness:
    """Starts a VoiceServer with mock providers, runs flows, dials simulated phones at it."""

    def __init__(self, start: Callable[[VoiceServer], RunningServer] = VoiceServer.start) -> None:
        self.start = start  # how to run the server: uvicorn (default) or e.g. the websockets-native mode
        self.servers: list[RunningServer] = []
        self.phones: list[SimulatedPhone] = []

    def serve(self, flow: Callable[[Any], Any] | None = None, *, script: list[str] | None = None, **kwargs: Any) -> tuple[VoiceServer, RunningServer]:
        kwargs.setdefault("stt_factory", lambda: create_stt("mock", script=list(script or [])))
        kwargs.setdefault("tts_factory", lambda: create_tts("mock"))
        server = VoiceServer(inbound_flow=flow, **kwargs)
        running = self.start(server)
        self.servers.append(running)
        return server, running

    def phone(self, running: RunningServer, path: str = "/stream", **kwargs: Any) -> SimulatedPhone:
        phone = SimulatedPhone(running.ws_url + path, **kwargs)
        self.phones.append(phone)
        return phone.connect()

    def close(self) -> None:
        for phone in self.phones:
            phone.close()
        for running in self.servers:
            running.stop()


@pytest.fixture
def harness() -> Iterator[CallHarness]:
    h = CallHarness()
    try:
        yield h
    finally:
        h.close()


class FlowResult:
    """Collects what a flow thread saw, so the test thread can wait for it."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self, body: Callable[[Any], Any]) -> Callable[[Any], None]:
        def flow(session: Any) -> None:
            try:
                body(session)
            except BaseException as exc:  # surfaced to the test thread
                self.error = exc
            finally:
                self.done.set()

        return flow

    def wait(self, timeout: float = 20.0) -> dict[str, Any]:
        assert self.done.wait(timeout), "flow did not finish in time"
        if self.error is not None:
            raise self.error
        return self.values


def _start_picows(server: VoiceServer) -> RunningServer:
    pytest.importorskip("picows", reason="the picows mode needs the [fast] extra: pip install 'voice-runtime[fast]'")
    from voice_runtime.server.ws_picows import start_picows

    return start_picows(server)


@pytest.fixture(params=["fastapi", "native", "picows"])
def any_mode(request: pytest.FixtureRequest) -> Iterator[CallHarness]:
    """The call harness in every server mode (FastAPI, websockets-native, picows)."""
    from voice_runtime.server.ws_native import start_native

    start = {"fastapi": VoiceServer.start, "native": start_native, "picows": _start_picows}[request.param]
    h = CallHarness(start=start)
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def flow_result() -> FlowResult:
    return FlowResult()


@pytest.fixture(autouse=True)
def _restore_root_logging() -> Iterator[None]:
    """CLI commands run in-process configure root logging on the stderr pytest captured for *that* test; a
    later test's log line would then be written to a closed stream ("--- Logging error ---"). Put the root
    logger's handlers and level back after every test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
