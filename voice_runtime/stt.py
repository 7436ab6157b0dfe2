"""STT factories (prior-art import path ``voice_runtime.stt``)."""

from __future__ import annotations

from typing import Any

from voice_runtime.providers.registry import STT_PROVIDERS, load_provider_class

__all__ = ["create_stt", "get_stt_class", "STT_PROVIDERS"]


def get_stt_class(provider: str = "elevenlabs") -> type[Any]:
    """The STT class registered as ``provider`` (``elevenlabs``, ``azure``, ``local``, ``mock``)."""
    return load_provider_class("STT", STT_PROVIDERS, provider)


def create_stt(provider: str = "elevenlabs", **kwargs: Any) -> Any:
    """Build an STT provider. Each call returns a new instance: give every call its own."""
    return get_stt_class(provider)(**kwargs)
