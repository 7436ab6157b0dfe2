"""Speech providers behind small protocols (prior-art import path ``voice_runtime.providers``)."""

from voice_runtime.providers.base import StreamingTts, StreamingTtsBase, SttProvider, TtsProvider

__all__ = ["SttProvider", "TtsProvider", "StreamingTts", "StreamingTtsBase"]
