"""Prior-art import path: ``from voice_runtime.mock.stt import MockStt``."""

from voice_runtime.providers.mock import MockStt

__all__ = ["MockStt"]
