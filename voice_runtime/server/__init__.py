"""Server side: the WebSocket call loop, the call registry and the ASGI app."""

from voice_runtime.server.app import RunningServer, VoiceServer, run_flow_thread, running
from voice_runtime.server.connection import CallConnection, ConnectionConfig, WireClosed, WireSocket
from voice_runtime.server.registry import CallRegistry

__all__ = [
    "CallConnection",
    "CallRegistry",
    "ConnectionConfig",
    "RunningServer",
    "VoiceServer",
    "WireClosed",
    "WireSocket",
    "run_flow_thread",
    "running",
]
