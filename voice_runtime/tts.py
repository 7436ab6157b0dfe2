"""TTS factories (prior-art import path ``voice_runtime.tts``)."""

from __future__ import annotations

from typing import Any

from voice_runtime.providers.registry import TTS_PROVIDERS, load_provider_class

__all__ = ["create_tts", "get_tts_class", "TTS_PROVIDERS"]


def get_tts_class(provider: str = "elevenlabs") -> type[Any]:
    """The TTS class registered as ``provider`` (``elevenlabs``, ``azure``, ``local``, ``mock``)."""
    return load_provider_class("TTS", TTS_PROVIDERS, provider)


def create_tts(provider: str = "elevenlabs", **kwargs: Any) -> Any:
    """Build a TTS provider."""
    return get_tts_class(provider)(**kwargs)
