"""Conversation helpers over the session core: IVR ``gather``, voicemail, beep detection, async flows.

Everything here uses the session's public methods only (caller audio through add_audio_listener), so it works the same on
every carrier and server mode. Names load lazily: ``import voice_runtime.session`` needs only the mixin.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "gather": "voice_runtime.conversation.gather",
    "GatherKind": "voice_runtime.conversation.gather",
    "GatherResult": "voice_runtime.conversation.gather",
    "GatherAttempt": "voice_runtime.conversation.gather",
    "leave_voicemail": "voice_runtime.conversation.voicemail",
    "GreetingEnd": "voice_runtime.conversation.voicemail",
    "VoicemailResult": "voice_runtime.conversation.voicemail",
    "Beep": "voice_runtime.conversation.beep",
    "BeepDetector": "voice_runtime.conversation.beep",
    "GreetingEndDetector": "voice_runtime.conversation.beep",
    "AsyncVoiceSession": "voice_runtime.conversation.async_session",
    "as_flow": "voice_runtime.conversation.flows",
    "flow_kind": "voice_runtime.conversation.flows",
    "ConversationHelpers": "voice_runtime.conversation.helpers",
    "CallLimits": "voice_runtime.conversation.limits",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'voice_runtime.conversation' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = list(_LAZY)
