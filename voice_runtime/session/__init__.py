"""``voice_runtime.session``: one call, seen from a plain sequential Python thread.

The package splits the session by responsibility (see :mod:`voice_runtime.session.core` for the map); this
module keeps the prior art's import path: ``from voice_runtime.session import VoiceSession``.
"""

from voice_runtime.audio.frames import FRAME_BYTES
from voice_runtime.errors import CallHangupError, CallNotAnsweredError, MissingStreamUrlError
from voice_runtime.lifecycle import CallState, EndReason
from voice_runtime.marks import Mark, MarkOutcome
from voice_runtime.session.core import VoiceSession
from voice_runtime.session.link import SessionLink, TransportSide
from voice_runtime.session.speech import SpeechResult

__all__ = [
    "VoiceSession",
    "SpeechResult",
    "SessionLink",
    "TransportSide",
    "CallState",
    "EndReason",
    "Mark",
    "MarkOutcome",
    "CallNotAnsweredError",
    "CallHangupError",
    "MissingStreamUrlError",
    "FRAME_BYTES",
]
