"""0.1.x class names, kept working without keeping them as the primary names.

We renamed ``ElevenLabsTTS`` → ``ElevenLabsTts``, ``AzureTTS`` → ``AzureTts``, ``AzurePersistentStt`` →
``AzureStt`` and ``PersistentSttSession`` → ``ElevenLabsRealtimeStt`` (one naming style; "persistent" said
nothing). 0.1.x code both *imports* the old names and *checks* them (``type(tts).__name__ == "AzureTTS"``),
so an alias is not enough: each old name is a subclass that adds nothing but the name, the factories
(``create_tts``/``create_stt``) build those, and importing an old name from its module warns once with
``DeprecationWarning`` saying what to use instead. ``isinstance`` against either name holds.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

__all__ = ["prior_art_class", "deprecated_module_names"]


def prior_art_class(cls: type, old_name: str) -> type:
    """A subclass of ``cls`` named ``old_name`` with identical behaviour."""
    doc = f"0.1.x name of :class:`{cls.__module__}.{cls.__name__}` (identical behaviour; prefer the new name)."
    return type(old_name, (cls,), {"__doc__": doc, "__module__": cls.__module__, "__qualname__": old_name})


def deprecated_module_names(module: str, names: dict[str, tuple[type, str]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that serves ``names`` (old name → (class, new name)) with a DeprecationWarning."""

    def __getattr__(name: str) -> Any:
        entry = names.get(name)
        if entry is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        cls, new_name = entry
        warnings.warn(f"{name} is the 0.1.x name; use {new_name} (same class behaviour)", DeprecationWarning, stacklevel=2)
        return cls

    return __getattr__
