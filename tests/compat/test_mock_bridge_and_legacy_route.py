"""The 0.1.x local-testing style end to end on loopback: /incoming webhook, mock bridge, single-session route,
MockTts -> text relay -> MockStt, REST-first hangup through the replaceable twilio_ws.hangup_call, monitor."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from fastapi import FastAPI, Request, Response

from voice_runtime import MarkOutcome, VoiceServer, VoiceSession, create_stt, create_tts
from voice_runtime.server import running
from voice_runtime.transports import mock_bridge, twilio_ws
from voice_runtime.transports.twilio_call import build_stream_twiml


def make_app(session: VoiceSession, inbox: list[str]) -> FastAPI:
    app = FastAPI()

    @app.post("/incoming")
    async def incoming(request: Request) -> Response:
        base = str(request.base_url).rstrip("/")
        return Response(build_stream_twiml(base), media_type="application/xml")

    @app.post("/test/inject")
    async def inject(request: Request) -> dict[str, bool]:
        if not mock_bridge.is_mock_transport():
            return Response(status_code=404)  # type: ignore[return-value]
        text = (await request.json())["text"]
        inbox.append(text)
        session.stt.inject(text)  # type: ignore[union-attr]
        return {"ok": True}

    twilio_ws.register_voice_websocket(app, session)
    return app


def test_mock_call_text_relay_marks_and_rest_first_hangup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSPORT", "mock")
    monkeypatch.setenv("TWILIO_SKIP_SIGNATURE_VALIDATION", "1")
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC" + "0" * 32)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "token")
    monkeypatch.delenv("VOICE_STREAM_URL", raising=False)
    session = VoiceSession(stt_factory=lambda: create_stt("mock"))
    heard: list[str] = []
    committed = threading.Event()
    session.on_stt_ready = lambda stt: setattr(stt, "on_committed", lambda t: (heard.append(t), committed.set()))
    inbox: list[str] = []
    rest_calls: list[str] = []

    def fake_rest_hangup(call_sid: str) -> None:  # Twilio's REST is the boundary we cannot run: record it
        rest_calls.append(call_sid)
        for bridge in list(mock_bridge._active_bridges):
            bridge.stop()  # ... and, like Twilio after a REST hangup, end the stream from the carrier side

    monkeypatch.setattr(twilio_ws, "hangup_call", fake_rest_hangup)
    with running(VoiceServer(app=make_app(session, inbox))) as srv:
        try:
            call_sid = mock_bridge.initiate_mock_call(srv.http_url)
            session.wait_for_ws_connect(5)
            assert session.call_sid == call_sid and call_sid.startswith("CAMOCK_")
            relay = mock_bridge.create_text_relay(srv.http_url)
            tts = create_tts("mock", on_spoken=relay)
            result = tts.speak("hello from the other side", session)
            assert result == {"last_spoken": "hello from the other side", "interrupted": False}
            assert committed.wait(5) and heard == ["hello from the other side"] == inbox
            assert session.send_mark_and_wait("done", timeout=5) is MarkOutcome.PLAYED
            session.request_disconnect()
            assert session.wait_until_disconnected(10)
            assert rest_calls == [call_sid]
            assert session.end_reason == "carrier_stop"  # the carrier ended the stream; the server did not close it
        finally:
            mock_bridge.cleanup_bridges()


def test_no_credentials_means_a_plain_close(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_SKIP_SIGNATURE_VALIDATION", "1")
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "VOICE_STREAM_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(twilio_ws, "hangup_call", lambda sid: pytest.fail("no REST without credentials"))
    session = VoiceSession()
    with running(VoiceServer(app=make_app(session, []))) as srv:
        try:
            mock_bridge.initiate_mock_call(srv.http_url)
            session.wait_for_ws_connect(5)
            session.request_disconnect()
            assert session.wait_until_disconnected(5)
            (bridge,) = mock_bridge._active_bridges
            assert bridge.phone.wait_closed(5) and bridge.phone.close_code == 1000
        finally:
            mock_bridge.cleanup_bridges()


def test_voice_monitor_plays_the_mixed_call(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    out = tmp_path / "heard.ulaw"
    player = tmp_path / "player.sh"
    player.write_text(f"#!/bin/sh\nexec cat > {out}\n")
    player.chmod(player.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("VOICE_MONITOR", "1")
    monkeypatch.setenv("VOICE_MONITOR_PLAYER", str(player))
    monkeypatch.setenv("TWILIO_SKIP_SIGNATURE_VALIDATION", "1")
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "VOICE_STREAM_URL"):
        monkeypatch.delenv(name, raising=False)
    session = VoiceSession()
    with running(VoiceServer(app=make_app(session, []))) as srv:
        try:
            mock_bridge.initiate_mock_call(srv.http_url)
            session.wait_for_ws_connect(5)
            assert create_tts("mock").speak("monitor me", session)["interrupted"] is False
            session.request_disconnect()
            assert session.wait_until_disconnected(5)
        finally:
            mock_bridge.cleanup_bridges()
    # the monitor is closed when the call ends; the player got whole 20 ms frames, including the agent's tone
    data = out.read_bytes()
    assert len(data) >= 160 * 10 and len(data) % 160 == 0
    assert set(data) - {0xFF, 0x7F}, "the agent's audio was mixed in"
    assert os.path.getsize(out) == len(data)


def test_audio_mixer_without_a_path_is_the_0_1_live_monitor(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from voice_runtime.audio import SILENCE_FRAME, AudioMixer

    out = tmp_path / "heard.ulaw"
    player = tmp_path / "player.sh"
    player.write_text(f"#!/bin/sh\nexec cat > {out}\n")
    player.chmod(player.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("VOICE_MONITOR_PLAYER", str(player))
    session = VoiceSession()
    mixer = AudioMixer()
    mixer.start()
    session.set_mixer(mixer)
    session.tap_agent(b"\x10" * 1600)  # 0.2 s of agent audio through the session's tap
    assert mixer._monitor.wait_for_frames(20, timeout=5)  # played in real time: ~0.4 s
    mixer.shutdown()
    data = out.read_bytes()
    frames = [data[i : i + 160] for i in range(0, len(data), 160)]
    assert len(frames) >= 20 and frames.count(SILENCE_FRAME) < len(frames) - 5  # the agent's 10 frames were heard
