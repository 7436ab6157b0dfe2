"""Server side: the WebSocket call loop, admission, the call registry, the ASGI app and its runners."""

from voice_runtime.server.app import VoiceServer, run_flow_thread
from voice_runtime.server.connection import CallConnection, ConnectionConfig, Recorder, WireClosed, WireSocket
from voice_runtime.server.registry import CallRegistry
from voice_runtime.server.runners import RunningServer, running

__all__ = [
    "CallConnection",
    "CallRegistry",
    "ConnectionConfig",
    "Recorder",
    "RunningServer",
    "VoiceServer",
    "WireClosed",
    "WireSocket",
    "run_flow_thread",
    "running",
]
