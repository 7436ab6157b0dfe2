"""The server refuses to start on configuration that would fail every call, and says what is wrong."""

from __future__ import annotations

import httpx
import pytest

from voice_runtime import ConfigError, VoiceServer, create_stt, create_tts
from voice_runtime.server.ws_native import start_native


def eleven_stt() -> object:
    from voice_runtime.providers.elevenlabs_stt import ElevenLabsRealtimeStt

    return ElevenLabsRealtimeStt()


def test_missing_elevenlabs_key_stops_the_start_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ELEVENLABS_API_KEY", raising=False)
    server = VoiceServer(stt_factory=eleven_stt, tts_factory=lambda: create_tts("mock"), public_url="not a url")
    with pytest.raises(ConfigError) as info:
        server.start()
    message = str(info.value)
    assert "2 problem(s)" in message
    assert "STT provider (stt_factory)" in message and "ELEVENLABS_API_KEY" in message
    assert "public_url 'not a url'" in message
    assert "check_config=False" in message  # the way out is named
    with pytest.raises(ConfigError):
        start_native(server)  # the native runner checks too


def test_bad_base_url_and_missing_sdk_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    from voice_runtime.server import config_check

    monkeypatch.setenv("ELEVENLABS_API_KEY", "k")

    class LocalLooking:
        name = "local"
        base_url = "ftp://example"

    monkeypatch.setitem(config_check._SDKS, ("local", "tts"), ("a_module_that_is_not_installed",))
    server = VoiceServer(stt_factory=lambda: create_stt("mock"), tts_factory=LocalLooking)
    problems = config_check.find_problems(server)
    assert problems == [
        "TTS provider (tts_factory) (local): the SDK module 'a_module_that_is_not_installed' is not installed",
        "TTS provider (tts_factory) base_url 'ftp://example' is not a well-formed http/https/ws/wss URL",
    ]


def test_providers_own_check_config_is_called_and_lazy_setups_can_opt_out(monkeypatch: pytest.MonkeyPatch) -> None:
    class Lazy:
        name = "lazy"

        def check_config(self) -> None:
            raise ConfigError("LAZY_KEY is not set")

    server = VoiceServer(tts_factory=Lazy, check_config=False)
    running = server.start()  # opted out: starts
    running.stop()
    with pytest.raises(ConfigError, match="LAZY_KEY"):
        VoiceServer(tts_factory=Lazy).start()
    monkeypatch.setenv("VOICE_RUNTIME_SKIP_CONFIG_CHECK", "1")
    VoiceServer(tts_factory=Lazy).start().stop()


def test_a_good_configuration_starts() -> None:
    server = VoiceServer(stt_factory=lambda: create_stt("mock"), tts_factory=lambda: create_tts("mock"),
                         public_url="https://voice.example.com")
    from voice_runtime.server.config_check import find_problems

    assert find_problems(server) == []
    running = server.start()
    try:  # started, and really serving
        assert httpx.get(f"{running.http_url}/healthz", timeout=10).status_code == 200
    finally:
        running.stop()
