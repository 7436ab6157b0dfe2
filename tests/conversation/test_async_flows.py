"""Async flows: refused at registration when they cannot run; otherwise identical to sync flows.

The parity test runs the *same* scenario (greet, listen, key press, mark, events, hang up) once with a plain
flow and once with an ``async def`` flow, on one server whose inbound flow routes by a stream parameter —
so both go through the same server, session core and socket, and must produce the same observations.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import pytest

from voice_runtime import CallHangupError, ConfigError, MarkOutcome, VoiceServer, VoiceSession
from voice_runtime.conversation import AsyncVoiceSession, as_flow, flow_kind
from voice_runtime.providers.mock import tone_speech

from ..conftest import CallHarness


def sync_flow(session: VoiceSession, out: dict[str, Any]) -> None:
    out["face"] = type(session).__name__
    out["greeting"] = session.speak("Hello, say something.", wait=True).heard
    out["heard"] = session.listen(timeout=10)
    out["key"] = session.wait_for_dtmf(timeout=10)
    out["mark"] = session.send_mark_and_wait("done", timeout=10)
    try:
        session.listen(timeout=0.3)
    except Exception as exc:
        out["timeout_error"] = type(exc).__name__
    out["kinds"] = sorted({e.kind for e in session.events} & {"stt_final", "dtmf_received", "mark_played"})
    out["hung_up"] = session.hangup(10)
    try:
        session.listen(timeout=1)
    except CallHangupError as exc:
        out["after_hangup"] = type(exc).__name__


async def async_flow(session: AsyncVoiceSession, out: dict[str, Any]) -> None:
    out["face"] = type(session).__name__
    seen: set[str] = set()

    async def watch() -> None:
        async for event in session.events():
            seen.add(event.kind)

    import asyncio

    watcher = asyncio.create_task(watch())
    out["greeting"] = (await session.speak("Hello, say something.", wait=True)).heard
    out["heard"] = await session.listen(timeout=10)
    out["key"] = await session.wait_for_dtmf(timeout=10)
    out["mark"] = await session.send_mark_and_wait("done", timeout=10)
    try:
        await session.listen(timeout=0.3)
    except Exception as exc:
        out["timeout_error"] = type(exc).__name__
    out["hung_up"] = await session.hangup(10)
    await asyncio.wait_for(watcher, 5)  # events() ends by itself after call_ended
    out["kinds"] = sorted(seen & {"stt_final", "dtmf_received", "mark_played"})
    out["saw_call_ended"] = "call_ended" in seen
    try:
        await session.listen(timeout=1)
    except CallHangupError as exc:
        out["after_hangup"] = type(exc).__name__


@pytest.fixture(scope="module")
def shared() -> Any:
    """One server for both kinds: the inbound flow picks by the stream's ``kind`` parameter."""
    harness = CallHarness()
    results: dict[str, dict[str, Any]] = {}
    done: dict[str, threading.Event] = {"sync": threading.Event(), "async": threading.Event()}
    runners = {
        "sync": as_flow(lambda s: sync_flow(s, results.setdefault("sync", {}))),
        "async": as_flow(functools.partial(async_flow, out=results.setdefault("async", {}))),
    }

    def router(session: VoiceSession) -> None:
        kind = session.custom_parameters["kind"]
        try:
            runners[kind](session)  # type: ignore[misc]
        finally:
            done[kind].set()

    _, running = harness.serve(router, script=["hello there", "hello there"])
    yield harness, running, results, done
    harness.close()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_sync_and_async_flows_behave_identically(shared: Any, kind: str) -> None:
    harness, running, results, done = shared
    phone = harness.phone(running, custom_parameters={"kind": kind})
    phone.wait_for("mark_echoed", 10)
    phone.say(tone_speech(0.6))
    phone.wait_for("caller_speech_end", 10)
    phone.press("7")
    assert done[kind].wait(20)
    out = results[kind]
    assert out.pop("face") == ("VoiceSession" if kind == "sync" else "AsyncVoiceSession")
    out.pop("saw_call_ended", True) or pytest.fail("async events() did not deliver call_ended")
    assert out == {
        "greeting": True,
        "heard": "hello there",
        "key": "7",
        "mark": MarkOutcome.PLAYED,
        "timeout_error": "CallTimeoutError",
        "kinds": ["dtmf_received", "mark_played", "stt_final"],
        "hung_up": True,
        "after_hangup": "CallHangupError",
    }
    assert phone.wait_closed(10) and phone.violations == []


def test_async_flow_registered_on_the_server_runs(harness: CallHarness) -> None:
    ran = threading.Event()

    async def flow(session: AsyncVoiceSession) -> None:
        await session.speak("Hi.", wait=True)
        ran.set()

    server, running = harness.serve(flow)
    assert flow_kind(flow) == "async"
    phone = harness.phone(running)
    assert ran.wait(10)  # before: "coroutine 'flow' was never awaited" and the call closed at once
    assert phone.wait_closed(10)


class AsyncCallable:
    async def __call__(self, session: Any) -> None:
        return None


def not_a_flow_generator(session: Any):  # noqa: ANN201
    yield session


async def not_a_flow_async_generator(session: Any):  # noqa: ANN201
    yield session


@pytest.mark.parametrize(
    "flow, message",
    [
        (not_a_flow_generator, "generator function"),
        (not_a_flow_async_generator, "async generator"),
        ("flow", "must be a function"),
        (lambda: None, "exactly one positional argument"),
        (lambda a, b: None, "exactly one positional argument"),
    ],
)
def test_unsupported_flows_are_refused_at_registration(flow: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        VoiceServer(inbound_flow=flow)
    server = VoiceServer()
    with pytest.raises(ConfigError, match=message):
        server.on_inbound_call(flow)
    assert server.inbound_flow is None


def test_flow_kinds() -> None:
    assert flow_kind(AsyncCallable()) == "async"
    assert flow_kind(functools.partial(async_flow, out={})) == "async"
    assert flow_kind(lambda s: None) == "sync"
    assert flow_kind(print) == "sync"  # builtins without a signature are trusted
    adapted = as_flow(AsyncCallable())
    assert as_flow(adapted) is adapted  # adapting twice is a no-op


def test_blocking_names_are_not_passed_through(harness: CallHarness) -> None:
    import asyncio

    async def probe() -> None:
        face = AsyncVoiceSession(VoiceSession())
        with pytest.raises(AttributeError, match="await session.put_outbound"):
            face.put_outbound_sync(b"x")
        assert face.is_disconnected is False  # non-blocking attributes pass through
        with pytest.raises(Exception, match="nothing heard"):
            await face.listen(timeout=0.05)
        face.close()

    asyncio.run(probe())
