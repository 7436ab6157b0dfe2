"""voice_runtime: sequential Python call flows over real-time telephony media streams.

The public face. Everything a call-flow author needs is importable from here; heavier pieces (carrier call
control, vendor providers) load lazily on first use so that ``import voice_runtime`` stays cheap and works
without optional extras.
"""

from __future__ import annotations

import importlib
from typing import Any

from voice_runtime.audio import AudioMixer, CallRecorder, mix_frames
from voice_runtime.call_events import CallEvent, EventKind
from voice_runtime.carriers import Carrier, register_carrier
from voice_runtime.errors import (
    CallError,
    CallHangupError,
    CallNotAnsweredError,
    CallTimeoutError,
    ConcurrencyError,
    ConfigError,
    LocalProtocolError,
    MissingStreamUrlError,
    ProtocolError,
    ProviderError,
    RemoteProtocolError,
    SignatureError,
    VoiceRuntimeError,
)
from voice_runtime.lifecycle import CallState, EndReason
from voice_runtime.marks import Mark, MarkOutcome
from voice_runtime.providers.base import StreamingTts, StreamingTtsBase, SttProvider, TtsProvider
from voice_runtime.server import ConnectionConfig, VoiceServer
from voice_runtime.session import SpeechResult, VoiceSession
from voice_runtime.stats import CallStats
from voice_runtime.stt import create_stt, get_stt_class
from voice_runtime.stt_tee import SttTee
from voice_runtime.transport import create_transport, get_sms_transport
from voice_runtime.transports.twilio_ws import register_voice_websocket
from voice_runtime.tts import create_tts, get_tts_class

__version__ = "0.2.0"

# Loaded on first access: they pull in carrier SDKs.
_LAZY = {
    "initiate_outbound_call": "voice_runtime.transports.twilio_call",
    "build_stream_twiml": "voice_runtime.transports.twilio_call",
    "build_stream_xml": "voice_runtime.transports.twilio_call",
    "hangup_call": "voice_runtime.transports.twilio_call",
    "build_route_stream_xml": "voice_runtime.transports.twilio_call",
    "list_calls": "voice_runtime.transports.twilio_call",
    "TwilioRegion": "voice_runtime.transports.twilio_call",
    "TwilioCallRow": "voice_runtime.transports.twilio_call",
    "TwilioCallNotFoundError": "voice_runtime.transports.twilio_call",
    "LiveMonitor": "voice_runtime.audio.monitor",
    "TwilioCallControl": "voice_runtime.transports.twilio_control",
    "PlivoCallControl": "voice_runtime.transports.plivo_control",
    "CarrierApiError": "voice_runtime.errors",
    "SimulatedPhone": "voice_runtime.testing",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'voice_runtime' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "AudioMixer",
    "CallError",
    "CallEvent",
    "CallState",
    "CallStats",
    "Carrier",
    "ConcurrencyError",
    "EndReason",
    "EventKind",
    "CallHangupError",
    "CallNotAnsweredError",
    "CallRecorder",
    "CallTimeoutError",
    "ConfigError",
    "ConnectionConfig",
    "LocalProtocolError",
    "Mark",
    "MarkOutcome",
    "MissingStreamUrlError",
    "ProtocolError",
    "ProviderError",
    "RemoteProtocolError",
    "SignatureError",
    "SpeechResult",
    "StreamingTts",
    "StreamingTtsBase",
    "SttProvider",
    "SttTee",
    "TtsProvider",
    "VoiceRuntimeError",
    "VoiceServer",
    "VoiceSession",
    "create_stt",
    "create_transport",
    "create_tts",
    "get_sms_transport",
    "get_stt_class",
    "get_tts_class",
    "mix_frames",
    "register_carrier",
    "register_voice_websocket",
    *_LAZY,
]
