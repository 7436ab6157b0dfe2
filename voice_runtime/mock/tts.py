"""Prior-art import path: ``from voice_runtime.mock.tts import MockTts``."""

from voice_runtime.providers.mock import MockTts

__all__ = ["MockTts"]
