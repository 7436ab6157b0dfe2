"""The prior art's public names and import paths keep working (voice-runtime 0.1.x README)."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib

import pytest
from fastapi import FastAPI

from voice_runtime import MarkOutcome, VoiceSession, create_stt, create_tts
from voice_runtime.server import running
from voice_runtime.server.app import VoiceServer


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("voice_runtime", ["VoiceSession", "MissingStreamUrlError", "CallNotAnsweredError", "CallHangupError", "create_stt", "get_stt_class", "create_tts", "get_sms_transport", "AudioMixer", "mix_frames", "SttProvider", "TtsProvider", "SttTee", "register_voice_websocket"]),
        ("voice_runtime.session", ["VoiceSession", "CallNotAnsweredError", "CallHangupError", "MissingStreamUrlError", "FRAME_BYTES"]),
        ("voice_runtime.transports.twilio_ws", ["register_voice_websocket"]),
        ("voice_runtime.stt", ["create_stt", "get_stt_class"]),
        ("voice_runtime.tts", ["create_tts"]),
        ("voice_runtime.stt_tee", ["SttTee"]),
        ("voice_runtime.audio", ["AudioMixer", "mix_frames", "FRAME_BYTES", "FRAME_INTERVAL", "SILENCE_FRAME"]),
        ("voice_runtime.transport", ["get_sms_transport"]),
        ("voice_runtime.providers", ["SttProvider", "TtsProvider"]),
        ("voice_runtime.mock.stt", ["MockStt"]),
        ("voice_runtime.mock.tts", ["MockTts"]),
    ],
)
def test_prior_art_import_paths(module: str, names: list[str]) -> None:
    mod = importlib.import_module(module)
    for name in names:
        assert hasattr(mod, name), f"{module}.{name} missing"


def test_session_is_a_hashable_dataclass_with_prior_art_fields() -> None:
    fields = VoiceSession.__dataclass_fields__
    for name in ("call_sid", "stream_sid", "caller_number", "stt", "stt_factory", "stt_secondary_factory", "on_stt_ready", "on_disconnected"):
        assert name in fields
    assert dataclasses.is_dataclass(VoiceSession)
    a, b = VoiceSession(), VoiceSession()
    assert a != b and len({a, b}) == 2  # identity semantics: sessions can key dicts and sets
    for method in ("wait_for_ws_connect", "put_outbound_sync", "send_mark_and_wait", "request_clear_buffer", "request_disconnect", "clear_inbound", "reset", "set_mixer", "tap_caller", "tap_agent", "signal_mark_received", "signal_ws_connected", "signal_disconnected", "put_inbound"):
        assert callable(getattr(a, method))
    assert isinstance(a.is_disconnected, bool)


def test_factories_reject_unknown_names_listing_valid_ones() -> None:
    for factory in (create_stt, create_tts):
        with pytest.raises(ValueError) as info:
            factory("nope")
        assert "mock" in str(info.value) and "elevenlabs" in str(info.value)


def test_provider_protocol_annotations() -> None:
    from voice_runtime.providers import SttProvider, TtsProvider

    for name in ("on_committed", "on_recognizing", "on_error"):
        assert name in SttProvider.__annotations__
    assert "on_error" in TtsProvider.__annotations__


def test_register_voice_websocket_single_session_style_with_reuse() -> None:
    """The prior art's style: one session on /voice, reused call after call (auto reset)."""
    from voice_runtime.testing import SimulatedPhone

    app = FastAPI()
    session = VoiceSession(stt_factory=lambda: create_stt("mock"), tts=create_tts("mock"))
    ready: list[object] = []
    session.on_stt_ready = ready.append
    from voice_runtime import register_voice_websocket

    register_voice_websocket(app, session)
    server = VoiceServer(app=app)
    with running(server) as srv:
        for call in range(2):
            phone = SimulatedPhone(srv.ws_url + "/voice", call_id=f"CA{call:032d}").connect()
            session.wait_for_ws_connect(5)
            assert session.call_sid == f"CA{call:032d}"
            result = create_tts("mock").speak("compat speak", session)
            assert result == {"last_spoken": "compat speak", "interrupted": False}
            assert session.send_mark_and_wait("done", timeout=5) is MarkOutcome.PLAYED
            phone.hangup()
            assert session.wait_until_disconnected(5)
            phone.close()
            session.reset()  # the prior art's sequential reuse: reset between calls
    assert len(ready) == 2  # on_stt_ready ran for each call, before start()


def test_single_session_route_serves_the_next_call_while_the_last_one_still_tears_down() -> None:
    """A call placed right after the previous one ended is not 'concurrent': while the old connection still stops
    its STT (slowly here), the new upgrade waits for that instead of being refused."""
    import threading

    from voice_runtime.providers.mock import MockStt
    from voice_runtime.testing import SimulatedPhone

    stopping = threading.Event()

    class SlowStopStt(MockStt):
        async def stop(self) -> None:
            stopping.set()
            await asyncio.sleep(0.5)  # a provider whose close takes a while (a network round trip)
            await super().stop()

    app = FastAPI()
    session = VoiceSession(stt_factory=SlowStopStt, tts=create_tts("mock"))
    from voice_runtime import register_voice_websocket

    register_voice_websocket(app, session)
    with running(VoiceServer(app=app)) as srv:
        first = SimulatedPhone(srv.ws_url + "/voice", call_id="CA" + "1" * 32).connect()
        session.wait_for_ws_connect(5)
        first.hangup()
        assert session.wait_until_disconnected(5)
        assert stopping.wait(5)  # the old connection is inside its teardown now
        second = SimulatedPhone(srv.ws_url + "/voice", call_id="CA" + "2" * 32).connect()
        try:
            session.wait_for_ws_connect(5)
            assert session.call_sid == "CA" + "2" * 32
            assert session.send_mark_and_wait("second", timeout=5) is MarkOutcome.PLAYED
        finally:
            first.close()
            second.close()
