"""The timing model shared by the fake TTS services, so their benchmark paths are comparable.

Both :class:`~voice_runtime.testing.fake_elevenlabs.FakeElevenLabs` and the Azure SDK fake
(:mod:`voice_runtime.testing.fake_azure_speech`) model a TTS service the same way:

* the audio for a text lasts ``max(min_seconds, len(text.strip()) / chars_per_second)`` (14 characters per
  second ≈ a normal speaking rate, at least 0.3 s);
* nothing is produced for ``first_byte_delay`` seconds after the request (the service's time to first audio);
* then audio is generated at ``realtime_factor`` × real time: the byte at offset ``n`` may leave at
  ``t0 + n / bytes_per_second / realtime_factor`` (``None`` = no pacing: as fast as the consumer takes it).

Keeping the formulas in one place is what makes "ElevenLabs, per sentence" and "Azure, per sentence" in
``benchmarks/first_token_bench.py`` differ only by the client code and its transport, not by the model.
"""

from __future__ import annotations

__all__ = ["DEFAULT_CHARS_PER_SECOND", "DEFAULT_MIN_SECONDS", "speech_seconds", "paced_due"]

DEFAULT_CHARS_PER_SECOND = 14.0
DEFAULT_MIN_SECONDS = 0.3


def speech_seconds(
    text: str, *, chars_per_second: float = DEFAULT_CHARS_PER_SECOND, min_seconds: float = DEFAULT_MIN_SECONDS
) -> float:
    """How long the fake service's audio for ``text`` lasts."""
    return max(min_seconds, len(text.strip()) / chars_per_second)


def paced_due(t0: float, sent: int, bytes_per_second: float, realtime_factor: float | None) -> float:
    """The monotonic time at which the byte at offset ``sent`` has been generated (``t0`` if unpaced)."""
    if not realtime_factor:
        return t0
    return t0 + sent / bytes_per_second / realtime_factor
