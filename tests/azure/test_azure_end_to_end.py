"""A whole call with the Azure providers: the real VoiceServer, a SimulatedPhone over a loopback WebSocket.

Mocking boundary: only the Azure Speech SDK objects behind ``voice_runtime.providers.azure_sdk.SpeechSdk``
are fakes (``voice_runtime/testing/fake_azure_speech.py``: the SDK is a proprietary native binary with an internal protocol, and the
service needs an account). They produce real μ-law audio and fire their events from real foreign threads;
everything between them and the phone — server, session, flow thread, marks, barge-in, sockets — is real.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("azure.cognitiveservices.speech", reason='the Azure providers need the [azure] extra: pip install "voice-runtime[azure]"')

from voice_runtime.testing.fake_azure_speech import (  # noqa: E402
    FakeSpeechSdk,
    FakeSynthesizer,
    fake_speech_audio,
    fire_from_thread,
    plain_event,
    recognized_event,
)
from voice_runtime import VoiceServer  # noqa: E402
from voice_runtime.providers.azure_stt import AzureStt  # noqa: E402
from voice_runtime.providers.azure_tts import AzureTts  # noqa: E402
from voice_runtime.testing import SimulatedPhone  # noqa: E402


class FlowRun:
    """What the flow thread saw, handed to the test thread (errors re-raised there)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self, body: Callable[[Any], None]) -> Callable[[Any], None]:
        def flow(session: Any) -> None:
            try:
                body(session)
            except BaseException as exc:  # surfaced by wait()
                self.error = exc
            finally:
                self.done.set()

        return flow

    def wait(self, timeout: float) -> None:
        assert self.done.wait(timeout), "flow did not finish in time"
        if self.error is not None:
            raise self.error


@pytest.fixture
def flow_result() -> FlowRun:
    return FlowRun()


def test_the_caller_hears_azure_tts_and_azure_stt_hears_the_caller(flow_result):
    tts_sdk, stt_sdk = FakeSpeechSdk(), FakeSpeechSdk()
    tts_sdk.synth_factory = lambda options: FakeSynthesizer(options, audio=fake_speech_audio(1.0), chunk_interval=0.005)
    values = flow_result.values

    def body(session):
        result = session.speak("Hello, thanks for calling.", wait=True, timeout=15)
        values["heard"], values["error"] = result.heard, result.error
        values["answer"] = session.listen(timeout=15)

    server = VoiceServer(
        stt_factory=lambda: AzureStt(sdk=stt_sdk),
        tts_factory=lambda: AzureTts(sdk=tts_sdk),
        inbound_flow=flow_result.run(body),
    )
    with server.start() as srv:
        phone = SimulatedPhone(srv.ws_url + "/stream").connect()
        try:
            phone.wait_for("mark_echoed", timeout=15)
            reco = stt_sdk.wait_recognizer(0)
            assert stt_sdk.streams[0].wait_bytes(4000)  # the phone's audio reached the push stream
            fire_from_thread(reco.recognized, recognized_event("I'd like to book an appointment."))
            flow_result.wait(20)
        finally:
            phone.close()

    synth = tts_sdk.synthesizers[0]
    assert values["error"] is None and values["heard"] is True
    assert synth.audio in phone.heard_ulaw()  # every byte Azure produced was played, in order
    assert values["answer"] == "I'd like to book an appointment."
    assert phone.violations == []


def test_barge_in_from_azure_speech_start_stops_azure_synthesis(flow_result):
    tts_sdk, stt_sdk = FakeSpeechSdk(), FakeSpeechSdk()
    # Produced at about real time, so the caller can interrupt while the service is still synthesizing.
    tts_sdk.synth_factory = lambda options: FakeSynthesizer(options, audio=fake_speech_audio(8.0), chunk_interval=0.1)
    values = flow_result.values

    def body(session):
        result = session.speak("A very long menu that the caller will not wait for.", wait=True, timeout=20)
        values["interrupted"], values["error"] = result.interrupted, result.error

    server = VoiceServer(
        stt_factory=lambda: AzureStt(sdk=stt_sdk),
        tts_factory=lambda: AzureTts(sdk=tts_sdk),
        inbound_flow=flow_result.run(body),
    )
    with server.start() as srv:
        phone = SimulatedPhone(srv.ws_url + "/stream").connect()
        try:
            phone.wait_for("playback_start", timeout=15)
            reco = stt_sdk.wait_recognizer(0)
            fire_from_thread(reco.speech_start_detected, plain_event())  # the caller starts talking
            phone.wait_for("clear", timeout=10)
            flow_result.wait(20)
        finally:
            phone.close()

    synth = tts_sdk.synthesizers[0]
    assert values["interrupted"] is True and values["error"] is None
    assert synth.stop_calls == 1  # synthesis stopped at the service, not merely muted
    assert synth.chunks_sent < len(synth.audio) // 800
