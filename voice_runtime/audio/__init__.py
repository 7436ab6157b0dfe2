"""Audio layer: G.711 μ-law, Plivo L16, resampling, framing, mixing, recording.

Everything here runs per 20 ms frame for many concurrent calls, so the codec
and mixer are numpy table lookups and resampling is streaming (soxr). The
package never imports the deprecated ``audioop``.

``from voice_runtime.audio import AudioMixer, mix_frames, FRAME_BYTES,
FRAME_INTERVAL, SILENCE_FRAME`` is kept working for prior-art call flows.
"""

from __future__ import annotations

from .frames import (
    FRAME_BYTES,
    FRAME_INTERVAL,
    SAMPLE_RATE,
    SILENCE_BYTE,
    SILENCE_FRAME,
    split_frames,
    ulaw_duration,
)
from .g711 import (
    L16_RATES,
    ULAW_DECODE_TABLE,
    ULAW_ENCODE_TABLE,
    L16Decoder,
    L16Encoder,
    l16_to_ulaw,
    pcm16_to_ulaw,
    ulaw_decode,
    ulaw_encode,
    ulaw_to_l16,
    ulaw_to_pcm16,
)
from .mixer import MIX_TABLE, AudioMixer, mix_frames
from .recorder import CallRecorder
from .resample import SUPPORTED_RATES, StreamResampler, resample

__all__ = [
    "SAMPLE_RATE",
    "FRAME_BYTES",
    "FRAME_INTERVAL",
    "SILENCE_BYTE",
    "SILENCE_FRAME",
    "ulaw_duration",
    "split_frames",
    "ULAW_DECODE_TABLE",
    "ULAW_ENCODE_TABLE",
    "ulaw_to_pcm16",
    "pcm16_to_ulaw",
    "ulaw_decode",
    "ulaw_encode",
    "L16_RATES",
    "ulaw_to_l16",
    "l16_to_ulaw",
    "L16Encoder",
    "L16Decoder",
    "SUPPORTED_RATES",
    "StreamResampler",
    "resample",
    "MIX_TABLE",
    "mix_frames",
    "AudioMixer",
    "CallRecorder",
]
