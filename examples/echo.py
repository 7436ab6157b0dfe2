"""Echo: the caller hears themselves. The smallest raw-audio flow (``session.audio_in`` / ``session.send_audio``).

Serve it with ``voice-runtime serve examples/echo.py:flow`` or run the test in ``tests/examples/``. The same two
calls carry any speech-to-speech model: read the caller's μ-law from ``audio_in()``, write the model's audio
with ``send_audio()``.
"""

from __future__ import annotations

from voice_runtime import VoiceSession


def flow(session: VoiceSession) -> None:
    with session.audio_in(timeout=60) as caller:
        for chunk in caller:  # everything since the last read; ends when the call ends
            session.send_audio(chunk)
