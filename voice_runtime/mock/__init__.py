"""Prior-art import path for the mock providers."""

from voice_runtime.providers.mock import MockStt, MockTts

__all__ = ["MockStt", "MockTts"]
