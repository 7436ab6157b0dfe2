"""Name → provider class, imported lazily so vendor SDKs stay optional extras."""

from __future__ import annotations

import importlib
from typing import Any

STT_PROVIDERS: dict[str, str] = {
    "elevenlabs": "voice_runtime.providers.elevenlabs_stt:_PersistentSttSession",
    "azure": "voice_runtime.providers.azure_stt:_AzurePersistentStt",
    "local": "voice_runtime.providers.local_stt:LocalWhisperStt",
    "mock": "voice_runtime.providers.mock:MockStt",
}

TTS_PROVIDERS: dict[str, str] = {
    "elevenlabs": "voice_runtime.providers.elevenlabs_tts:_ElevenLabsTTS",
    "azure": "voice_runtime.providers.azure_tts:_AzureTTS",
    "local": "voice_runtime.providers.local_tts:PiperTts",
    "mock": "voice_runtime.providers.mock:MockTts",
}

_EXTRA_HINT = {"elevenlabs": "elevenlabs", "azure": "azure", "local": "local"}


def load_provider_class(kind: str, table: dict[str, str], name: str) -> type[Any]:
    """Resolve ``name`` in ``table``; unknown names raise ``ValueError`` listing the valid ones."""
    try:
        target = table[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown {kind} provider: {name!r}; valid: {', '.join(sorted(table))}") from None
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = _EXTRA_HINT.get(name)
        hint = f" (install it with: pip install 'voice-runtime[{extra}]')" if extra else ""
        raise ImportError(f"{kind} provider {name!r} is not available: {exc}{hint}") from exc
    return getattr(module, attr)
