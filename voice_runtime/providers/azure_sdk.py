"""The one seam between the Azure providers and the Azure Speech SDK (``azure-cognitiveservices-speech``).

Why a seam: the SDK is a proprietary native library with an internal wire protocol. Everything the providers
need from it goes through :class:`SpeechSdk` (build a push stream, a recognizer, a synthesizer, open a
connection), so tests can substitute objects that fire SDK-shaped events from a real foreign thread, and so
the SDK is imported only here, only when a real provider first needs it (``import voice_runtime`` never
loads it). :class:`AzureSpeechSdk` is the real implementation.

What the providers rely on from the objects the seam returns (the SDK's own shapes, 1.53):

* recognizer: event signals ``recognizing``, ``recognized``, ``canceled``, ``speech_start_detected``,
  ``speech_end_detected``, ``session_started``, ``session_stopped`` (each ``.connect(cb)`` /
  ``.disconnect_all()``); ``start_continuous_recognition_async()`` / ``stop_continuous_recognition_async()``
  returning futures whose ``.get()`` blocks.
* push stream: ``write(bytes)`` (copies; no header), ``close()`` (end of audio).
* synthesizer: signals ``synthesizing``, ``synthesis_completed``, ``synthesis_canceled``;
  ``speak_text_async(text)`` and ``stop_speaking_async()`` returning futures.

Also here, because both providers need them: settings from the environment (with the key never shown in a
repr or log), the classification of cancellation codes, and :func:`run_blocking` /
:func:`call_with_timeout`, which run a blocking SDK call on a *daemon* thread with a deadline (the runtime's
:func:`voice_runtime.offloop.run_off_loop` / :func:`~voice_runtime.offloop.call_off_thread`, named for the
SDK). Why not ``asyncio.to_thread``: the default executor's threads are joined at loop shutdown and
interpreter exit, so one SDK ``stop`` hung for 10 s (a known SDK behaviour) would hang shutdown too; a daemon
thread is abandoned.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from voice_runtime.errors import ConfigError, ProviderError
from voice_runtime.offloop import OffLoopTimeout, call_off_thread, run_off_loop

__all__ = [
    "PROVIDER",
    "MULAW_8K_INPUT",
    "TTS_OUTPUT_FORMAT",
    "AzureSpeechSettings",
    "RecognizerOptions",
    "SynthesizerOptions",
    "SpeechSdk",
    "AzureSpeechSdk",
    "CancelInfo",
    "FATAL_ERROR_CODES",
    "cancel_info",
    "is_fatal",
    "import_speechsdk",
    "run_blocking",
    "call_with_timeout",
    "BlockingCallTimeout",
]

log = logging.getLogger(__name__)

PROVIDER = "azure"

#: The inbound audio declaration. ``bits_per_sample`` must be 8: the SDK's default 16 is accepted for MULAW
#: but produces a WAV header claiming 16-bit μ-law (byterate 16000, block align 2).
MULAW_8K_INPUT: Mapping[str, int] = {"samples_per_second": 8000, "bits_per_sample": 8, "channels": 1}

#: ``SpeechSynthesisOutputFormat`` member name: headerless μ-law 8 kHz, exactly what the carriers want.
TTS_OUTPUT_FORMAT = "Raw8Khz8BitMonoMULaw"

#: ``CancellationErrorCode`` names after which retrying cannot help (bad key, no permission, quota or
#: concurrency limit, invalid request such as an unknown language). Everything else (ConnectionFailure,
#: ServiceTimeout, ServiceError, ServiceUnavailable, RuntimeError, ServiceRedirectTemporary, unknown) is
#: treated as transient.
FATAL_ERROR_CODES = frozenset({"AuthenticationFailure", "Forbidden", "TooManyRequests", "BadRequest"})

T = TypeVar("T")


def import_speechsdk() -> Any:
    """Import the SDK, or raise a non-retryable :class:`ProviderError` that names the extra to install."""
    try:
        import azure.cognitiveservices.speech as speechsdk
    except ImportError as exc:  # pragma: no cover - the test environment has the SDK
        raise ProviderError(
            f"the Azure Speech SDK is not installed ({exc}); pip install 'voice-runtime[azure]'",
            provider=PROVIDER,
            retryable=False,
        ) from exc
    return speechsdk


# ================================================================================================ settings
@dataclass(frozen=True)
class AzureSpeechSettings:
    """Where and how to reach the service. Read from the environment at provider construction.

    ``endpoint`` (env ``AZURE_SPEECH_ENDPOINT``) or ``host`` (env ``AZURE_SPEECH_HOST``, "ws://host:port", the
    container pattern) replace the region; the key is then optional. The key never appears in ``repr``.
    """

    key: str | None = field(default=None, repr=False)
    region: str | None = None
    endpoint: str | None = None
    host: str | None = None
    missing: str | None = None  # why the service cannot be reached yet (no key); raised at first use

    def require(self) -> None:
        """Raise :class:`ConfigError` if there is nothing to authenticate with (called at first use)."""
        if self.missing:
            raise ConfigError(self.missing)

    @classmethod
    def from_env(
        cls,
        key: str | None = None,
        region: str | None = None,
        *,
        endpoint: str | None = None,
        host: str | None = None,
        default_region: str = "westeurope",
    ) -> AzureSpeechSettings:
        """Explicit arguments win over ``AZURE_SPEECH_KEY`` / ``_REGION`` / ``_ENDPOINT`` / ``_HOST``.

        Neither a key nor an endpoint/host is not an error *here* (0.1.x constructed providers without
        credentials): it is recorded in ``missing`` and :meth:`require` raises :class:`ConfigError` at first use.
        """
        key = key or os.environ.get("AZURE_SPEECH_KEY") or None
        endpoint = endpoint or os.environ.get("AZURE_SPEECH_ENDPOINT") or None
        host = host or os.environ.get("AZURE_SPEECH_HOST") or None
        if endpoint and host:
            raise ConfigError("set either an Azure Speech endpoint or a host, not both")
        if endpoint or host:
            region = None  # the SDK refuses a region together with an endpoint/host
        else:
            region = region or os.environ.get("AZURE_SPEECH_REGION") or default_region
            if not key:
                missing = (
                    "no Azure Speech key: pass subscription_key= or set AZURE_SPEECH_KEY "
                    "(or AZURE_SPEECH_ENDPOINT / AZURE_SPEECH_HOST for a keyless container)"
                )
                return cls(key=None, region=region, missing=missing)
        return cls(key=key, region=region, endpoint=endpoint, host=host)

    def describe(self) -> str:
        """Where we connect, for logs (never the key)."""
        return self.endpoint or self.host or f"region {self.region}"


@dataclass(frozen=True)
class RecognizerOptions:
    language: str
    segmentation_silence_timeout_ms: int | None = None
    initial_silence_timeout_ms: int | None = None
    properties: Mapping[str, str] = field(default_factory=dict)  # extra SDK properties by name


@dataclass(frozen=True)
class SynthesizerOptions:
    voice: str
    properties: Mapping[str, str] = field(default_factory=dict)


class SpeechSdk(Protocol):
    """What the providers need from the SDK. Every method may block briefly; none is called on the loop."""

    def create_push_stream(self) -> Any:
        """A push stream declared as μ-law 8 kHz, 8-bit, mono."""

    def create_recognizer(self, push_stream: Any, options: RecognizerOptions) -> Any:
        """A continuous-recognition recognizer reading ``push_stream`` (not started)."""

    def create_synthesizer(self, options: SynthesizerOptions) -> Any:
        """A synthesizer producing headerless μ-law 8 kHz to no local device."""

    def open_connection(self, synthesizer: Any) -> Any:
        """Pre-connect ``synthesizer``'s WebSocket; returns the connection handle (keep it alive)."""


class AzureSpeechSdk:
    """The real :class:`SpeechSdk`, on ``azure-cognitiveservices-speech``."""

    def __init__(self, settings: AzureSpeechSettings) -> None:
        self.settings = settings

    def speech_config(self) -> Any:
        self.settings.require()
        sdk = import_speechsdk()
        s = self.settings
        try:
            if s.endpoint:
                return sdk.SpeechConfig(endpoint=s.endpoint, subscription=s.key)
            if s.host:
                return sdk.SpeechConfig(host=s.host, subscription=s.key)
            return sdk.SpeechConfig(subscription=s.key, region=s.region)
        except (ValueError, RuntimeError) as exc:
            raise ProviderError(f"invalid Azure Speech configuration for {s.describe()}: {exc}",
                                provider=PROVIDER, retryable=False) from exc

    def input_format(self) -> Any:
        sdk = import_speechsdk()
        return sdk.audio.AudioStreamFormat(wave_stream_format=sdk.audio.AudioStreamWaveFormat.MULAW, **MULAW_8K_INPUT)

    def create_push_stream(self) -> Any:
        sdk = import_speechsdk()
        return sdk.audio.PushAudioInputStream(stream_format=self.input_format())

    def create_recognizer(self, push_stream: Any, options: RecognizerOptions) -> Any:
        sdk = import_speechsdk()
        config = self.speech_config()
        config.speech_recognition_language = options.language
        if options.segmentation_silence_timeout_ms is not None:
            config.set_property(sdk.PropertyId.Speech_SegmentationSilenceTimeoutMs,
                                str(int(options.segmentation_silence_timeout_ms)))
        if options.initial_silence_timeout_ms is not None:
            config.set_property(sdk.PropertyId.SpeechServiceConnection_InitialSilenceTimeoutMs,
                                str(int(options.initial_silence_timeout_ms)))
        for name, value in options.properties.items():
            config.set_property_by_name(name, str(value))
        audio_config = sdk.audio.AudioConfig(stream=push_stream)
        return sdk.SpeechRecognizer(speech_config=config, audio_config=audio_config)

    def create_synthesizer(self, options: SynthesizerOptions) -> Any:
        sdk = import_speechsdk()
        config = self.speech_config()
        config.set_speech_synthesis_output_format(getattr(sdk.SpeechSynthesisOutputFormat, TTS_OUTPUT_FORMAT))
        config.speech_synthesis_voice_name = options.voice
        for name, value in options.properties.items():
            config.set_property_by_name(name, str(value))
        # audio_config=None: no local speaker. The SDK's default is the default speaker device.
        return sdk.SpeechSynthesizer(speech_config=config, audio_config=None)

    def open_connection(self, synthesizer: Any) -> Any:
        sdk = import_speechsdk()
        connection = sdk.Connection.from_speech_synthesizer(synthesizer)
        connection.open(True)
        return connection


# ================================================================================================ cancellations
@dataclass(frozen=True)
class CancelInfo:
    """A cancellation, copied out of the SDK's event on its own thread (the native handle dies with it)."""

    reason: str  # CancellationReason name: Error | EndOfStream | CancelledByUser
    code: str  # CancellationErrorCode name (NoError when reason is not Error)
    details: str

    @property
    def fatal(self) -> bool:
        return is_fatal(self.code)

    def message(self, what: str) -> str:
        detail = f": {self.details}" if self.details else ""
        return f"{what} canceled ({self.reason}/{self.code}){detail}"


def _name(value: Any) -> str:
    return str(getattr(value, "name", value))


def cancel_info(details: Any) -> CancelInfo:
    """Read a recognition ``CancellationDetails`` (``.code``) or a synthesis one (``.error_code``).

    The two SDK classes spell the error-code attribute differently; reading the wrong one raises
    ``AttributeError`` inside a callback, which the SDK would swallow silently.
    """
    code = getattr(details, "code", None)
    if code is None:
        code = getattr(details, "error_code", None)
    return CancelInfo(
        reason=_name(getattr(details, "reason", "Error")),
        code=_name(code) if code is not None else "NoError",
        details=str(getattr(details, "error_details", "") or ""),
    )


def is_fatal(code_name: str) -> bool:
    return code_name in FATAL_ERROR_CODES


# ================================================================================================ blocking calls
#: A blocking SDK call did not return within its deadline (it keeps running on its daemon thread).
BlockingCallTimeout = OffLoopTimeout


async def run_blocking(fn: Callable[..., T], *args: Any, timeout: float, name: str = "azure-sdk") -> T:
    """Run ``fn(*args)`` on a daemon thread; await its result for at most ``timeout`` seconds.

    On timeout raises :class:`BlockingCallTimeout`; the thread is abandoned (it finishes on its own and its
    result is discarded). Cancelling the awaiting task likewise abandons it.
    """
    return await run_off_loop(fn, *args, name=name, timeout=timeout)


def call_with_timeout(fn: Callable[..., T], *args: Any, timeout: float, name: str = "azure-sdk") -> T:
    """The thread-side twin of :func:`run_blocking`: block the *calling* thread at most ``timeout`` seconds."""
    return call_off_thread(fn, *args, timeout=timeout, name=name)
