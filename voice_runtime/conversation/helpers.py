"""The conversation helpers as methods of :class:`~voice_runtime.session.VoiceSession`.

``VoiceSession`` inherits :class:`ConversationHelpers`, so flows write ``session.gather(...)``,
``session.leave_voicemail(...)``, ``session.answered_by_or_none(...)`` and ``session.apply_limits(...)``. The
methods are thin: the work lives in the modules of :mod:`voice_runtime.conversation`, which use only the
session's public methods (the beep detector hears the line through ``add_audio_listener``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from voice_runtime.errors import CallHangupError, CallTimeoutError

if TYPE_CHECKING:
    from voice_runtime.conversation.gather import GatherResult
    from voice_runtime.conversation.voicemail import VoicemailResult

log = logging.getLogger(__name__)


class ConversationHelpers:
    """Mixed into ``VoiceSession``; holds no state of its own."""

    # ------------------------------------------------------------------ answering-machine detection
    def answered_by_or_none(self, timeout: float = 30.0) -> str | None:
        """Like ``wait_for_answered_by`` but never raises: None when no AMD result came in time or the call ended.

        ``wait_for_answered_by`` raises ``CallTimeoutError`` at its deadline (and ``CallHangupError`` when the
        call ends), so README-style ``if session.wait_for_answered_by(5) == "human":`` crashes when detection
        is slow; ``if session.answered_by_or_none(5) == "human":`` does not.
        """
        try:
            return self.wait_for_answered_by(timeout)  # type: ignore[attr-defined, no-any-return]
        except (CallTimeoutError, CallHangupError):
            return self.answered_by  # type: ignore[attr-defined, no-any-return]

    # ------------------------------------------------------------------ idle and limits
    def apply_limits(self, limits: Any = None, **options: Any) -> Any:
        """Enforce idle reminders/goodbye and a maximum duration on this call; returns the watcher (``.stop()``).

        Pass a :class:`~voice_runtime.conversation.limits.CallLimits` or its fields (``idle_timeout=8,
        idle_prompts=[...], idle_goodbye=..., max_duration=...``). See :mod:`voice_runtime.conversation.limits`.
        """
        from voice_runtime.conversation.limits import CallLimits, LimitsWatcher

        if limits is None:
            limits = CallLimits(**options)
        elif options:
            raise TypeError("pass either a CallLimits or its fields, not both")
        return LimitsWatcher(self, limits)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ IVR and voicemail
    def gather(self, prompt: str, **options: Any) -> GatherResult:
        """Prompt and collect digits and/or speech with reprompts; see :func:`voice_runtime.conversation.gather.gather`."""
        from voice_runtime.conversation.gather import gather

        return gather(self, prompt, **options)  # type: ignore[arg-type]

    def leave_voicemail(self, message: str | bytes, **options: Any) -> VoicemailResult:
        """Wait for the greeting's end, play ``message``, hang up; see :func:`voice_runtime.conversation.voicemail.leave_voicemail`."""
        from voice_runtime.conversation.voicemail import leave_voicemail

        return leave_voicemail(self, message, **options)  # type: ignore[arg-type]


__all__ = ["ConversationHelpers"]
