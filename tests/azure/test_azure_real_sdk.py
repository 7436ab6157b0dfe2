"""The providers on the real Azure Speech SDK, without network or account.

Part 1 constructs the real SDK objects offline and checks the configuration the SDK accepted (audio format
arguments, segmentation silence, language, synthesis output format, voice, no local speaker).

Part 2 runs the real SDK in a subprocess (``_real_sdk_probe.py``) against loopback endpoints that only
involve the HTTP handshake — a server answering the WebSocket upgrade with 401, and a closed port — and checks
the providers' classification: auth failure → ``on_error`` once and no restart; connection refused →
restarts with backoff, then one error; synthesis canceled → ``ProviderError`` with the right ``retryable``.
No fake of the SDK's internal (undocumented) USP protocol is used: a contract test against one would break on
any SDK release and prove little beyond what these tests and the seam tests already do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

speechsdk = pytest.importorskip("azure.cognitiveservices.speech", reason='the Azure providers need the [azure] extra: pip install "voice-runtime[azure]"')

from voice_runtime.errors import ConfigError  # noqa: E402
from voice_runtime.providers.azure_sdk import (  # noqa: E402
    AzureSpeechSdk,
    AzureSpeechSettings,
    RecognizerOptions,
    SynthesizerOptions,
    cancel_info,
)
from voice_runtime.providers.azure_stt import AzureStt  # noqa: E402
from voice_runtime.providers.azure_tts import AzureTts  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def real_sdk() -> AzureSpeechSdk:
    return AzureSpeechSdk(AzureSpeechSettings(key="dummy-key", region="eastus"))


def test_push_stream_declares_mulaw_8khz_8bit_mono(real_sdk, monkeypatch):
    seen: list[dict[str, Any]] = []
    real_format = speechsdk.audio.AudioStreamFormat

    class RecordingFormat(real_format):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            seen.append(dict(kwargs, _args=args))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(speechsdk.audio, "AudioStreamFormat", RecordingFormat)
    stream = real_sdk.create_push_stream()
    assert isinstance(stream, speechsdk.audio.PushAudioInputStream)
    assert seen == [{
        "_args": (),
        "samples_per_second": 8000,
        "bits_per_sample": 8,  # the SDK default (16) yields a 16-bit μ-law WAV header
        "channels": 1,
        "wave_stream_format": speechsdk.audio.AudioStreamWaveFormat.MULAW,
    }]
    stream.write(b"\xff" * 160)  # the real stream accepts headerless μ-law
    stream.close()


def test_recognizer_configuration_is_accepted_by_the_real_sdk(real_sdk):
    stream = real_sdk.create_push_stream()
    options = RecognizerOptions(language="fi-FI", segmentation_silence_timeout_ms=500, initial_silence_timeout_ms=4000,
                                properties={"SpeechServiceResponse_StablePartialResultThreshold": "3"})
    recognizer = real_sdk.create_recognizer(stream, options)
    props = recognizer.properties
    assert isinstance(recognizer, speechsdk.SpeechRecognizer)
    assert props.get_property(speechsdk.PropertyId.Speech_SegmentationSilenceTimeoutMs) == "500"
    assert props.get_property(speechsdk.PropertyId.SpeechServiceConnection_InitialSilenceTimeoutMs) == "4000"
    assert props.get_property(speechsdk.PropertyId.SpeechServiceConnection_RecoLanguage) == "fi-FI"
    for name in ("recognizing", "recognized", "canceled", "speech_start_detected", "session_stopped"):
        assert hasattr(getattr(recognizer, name), "connect")
    stream.close()
    del recognizer


def test_synthesizer_is_raw_mulaw_8khz_with_no_local_speaker(real_sdk, monkeypatch):
    seen: list[dict[str, Any]] = []
    real_cls = speechsdk.SpeechSynthesizer

    class RecordingSynth(real_cls):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            seen.append(kwargs)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(speechsdk, "SpeechSynthesizer", RecordingSynth)
    synth = real_sdk.create_synthesizer(SynthesizerOptions(voice="en-GB-SoniaNeural"))
    props = synth.properties
    assert props.get_property(speechsdk.PropertyId.SpeechServiceConnection_SynthOutputFormat) == "raw-8khz-8bit-mono-mulaw"
    assert props.get_property(speechsdk.PropertyId.SpeechServiceConnection_SynthVoice) == "en-GB-SoniaNeural"
    assert len(seen) == 1 and "audio_config" in seen[0] and seen[0]["audio_config"] is None
    del synth


def test_host_and_endpoint_configs_build_without_a_region():
    for settings in (AzureSpeechSettings(key=None, host="ws://127.0.0.1:5000"),
                     AzureSpeechSettings(key="k", endpoint="wss://example.invalid/speech")):
        config = AzureSpeechSdk(settings).speech_config()
        assert isinstance(config, speechsdk.SpeechConfig)


def test_settings_from_env_never_show_the_key(monkeypatch):
    monkeypatch.setenv("AZURE_SPEECH_KEY", "super-secret-key")
    monkeypatch.setenv("AZURE_SPEECH_REGION", "northeurope")
    monkeypatch.delenv("AZURE_SPEECH_ENDPOINT", raising=False)
    monkeypatch.delenv("AZURE_SPEECH_HOST", raising=False)
    settings = AzureSpeechSettings.from_env()
    assert settings.key == "super-secret-key" and settings.region == "northeurope"
    stt, tts = AzureStt(), AzureTts()
    for text in (repr(settings), settings.describe(), repr(stt), repr(tts)):
        assert "super-secret-key" not in text
    assert AzureSpeechSettings.from_env(host="ws://127.0.0.1:1").region is None  # host replaces the region
    monkeypatch.delenv("AZURE_SPEECH_KEY")
    keyless = AzureStt()  # 0.1.x: constructs without credentials, fails at first use
    with pytest.raises(ConfigError, match="AZURE_SPEECH_KEY"):
        keyless.check_credentials()
    with pytest.raises(ConfigError, match="AZURE_SPEECH_KEY"):
        keyless.sdk.speech_config()
    with pytest.raises(ConfigError, match="100-5000"):
        AzureStt(subscription_key="k", silence_timeout_ms=50)


def test_cancellation_details_of_both_sdk_spellings_are_read():
    class Reco:  # recognition: .code
        reason = speechsdk.CancellationReason.Error
        code = speechsdk.CancellationErrorCode.AuthenticationFailure
        error_details = "401"

    class Synth:  # synthesis: .error_code
        reason = speechsdk.CancellationReason.Error
        error_code = speechsdk.CancellationErrorCode.ServiceTimeout
        error_details = ""

    assert cancel_info(Reco()).fatal and cancel_info(Reco()).code == "AuthenticationFailure"
    info = cancel_info(Synth())
    assert info.code == "ServiceTimeout" and not info.fatal


def test_importing_the_package_does_not_load_the_sdk():
    code = (
        "import sys, voice_runtime\n"
        "from voice_runtime import create_stt, create_tts\n"
        "import voice_runtime.providers.azure_stt, voice_runtime.providers.azure_tts\n"
        "assert 'azure.cognitiveservices.speech' not in sys.modules, 'SDK imported eagerly'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=REPO)


@pytest.fixture(scope="module")
def findings() -> dict[str, Any]:
    env = dict(os.environ)
    for name in ("AZURE_SPEECH_KEY", "AZURE_SPEECH_REGION", "AZURE_SPEECH_ENDPOINT", "AZURE_SPEECH_HOST"):
        env.pop(name, None)
    proc = subprocess.run(
        [sys.executable, "-m", "tests.azure._real_sdk_probe"],
        capture_output=True, text=True, timeout=90, cwd=REPO, env=env,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("FINDINGS ")]
    assert lines, f"probe failed (rc={proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(lines[-1][len("FINDINGS "):])


def test_real_sdk_auth_failure_is_reported_once_without_restart(findings):
    stt = findings["stt_401"]
    assert not stt["timed_out"]
    assert len(stt["errors"]) == 1 and "AuthenticationFailure" in stt["errors"][0]
    assert stt["restart_delays"] == [] and stt["stats"]["recognizers_started"] == 1
    assert "dummy-key" not in stt["errors"][0]


def test_real_sdk_connection_failure_restarts_with_backoff_then_reports_once(findings):
    stt = findings["stt_refused"]
    assert not stt["timed_out"]
    assert len(stt["errors"]) == 1 and "restart_exhausted" in stt["errors"][0] and "ConnectionFailure" in stt["errors"][0]
    assert stt["restart_delays"] == [pytest.approx(0.05), pytest.approx(0.1)]
    assert stt["stats"]["recognizers_started"] == 3


def test_real_sdk_canceled_synthesis_raises_provider_error(findings):
    assert findings["tts_401"]["provider"] == "azure" and findings["tts_401"]["retryable"] is False
    assert "AuthenticationFailure" in findings["tts_401"]["error"]
    assert findings["tts_refused"]["retryable"] is True and "ConnectionFailure" in findings["tts_refused"]["error"]
