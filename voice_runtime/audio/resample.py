"""Sample-rate conversion for int16 PCM, streaming and one-shot.

Telephony is 8 kHz while TTS/STT engines and Plivo's L16 stream often run at
16–48 kHz. Resampling each 20 ms frame independently restarts the filter at
every frame edge and produces an audible click 50 times a second, so live
audio must go through :class:`StreamResampler`, which keeps the polyphase
filter history between calls. :func:`resample` is for whole buffers only.

Both wrap `soxr <https://github.com/dofuuz/python-soxr>`_.

soxr dithers int16 output, so results are reproducible only to about
±2 LSB (inaudible; compare with a tolerance, not byte equality). Converting
through float32 instead would make output bit-stable but costs ~30% more
per frame, which is the wrong trade for a per-frame hot path.

Important for callers: a streaming resampler has latency and emits output in
bursts (with ``quality="HQ"`` nothing comes out for the first ~100 ms, then
roughly 100 ms blocks). :meth:`StreamResampler.process` therefore often
returns an **empty array**. Callers that turn output into media messages
must skip empty outputs instead of sending empty payloads.
"""

from __future__ import annotations

import numpy as np
import soxr

__all__ = ["StreamResampler", "resample", "SUPPORTED_RATES"]

#: Rates exercised by the test-suite. Any positive integer rate is accepted;
#: this is documentation of what is known to work, not a whitelist.
SUPPORTED_RATES: frozenset[int] = frozenset(
    {8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000}
)

_QUALITIES = frozenset({"QQ", "LQ", "MQ", "HQ", "VHQ"})


def _check_rate(name: str, rate: int) -> int:
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise ValueError(f"{name} must be a positive integer sample rate, got {rate!r}")
    return int(rate)


def _as_int16(samples: np.ndarray) -> np.ndarray:
    """Return ``samples`` as a C-contiguous int16 array without copying when possible.

    Silent float→int16 casting would wrap or truncate, so non-int16 input is
    rejected rather than guessed at.
    """
    arr = np.asarray(samples)
    if arr.dtype != np.int16:
        raise TypeError(f"expected int16 samples, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr)


class StreamResampler:
    """Stateful int16 → int16 resampler for one continuous audio stream.

    Use one instance per stream direction per call; it is not thread-safe
    (a stream is processed in order by one consumer anyway).

    When ``in_rate == out_rate`` it is a zero-copy pass-through, so code can
    use it unconditionally without paying for the 8 kHz → 8 kHz case.

    ``channels`` > 1 expects interleaved input shaped ``(n, channels)``.
    """

    __slots__ = ("in_rate", "out_rate", "channels", "quality", "_stream", "_empty")

    def __init__(
        self,
        in_rate: int,
        out_rate: int,
        *,
        channels: int = 1,
        quality: str = "HQ",
    ) -> None:
        self.in_rate = _check_rate("in_rate", in_rate)
        self.out_rate = _check_rate("out_rate", out_rate)
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if quality not in _QUALITIES:
            raise ValueError(f"quality must be one of {sorted(_QUALITIES)}, got {quality!r}")
        self.channels = channels
        self.quality = quality
        shape: tuple[int, ...] = (0,) if channels == 1 else (0, channels)
        self._empty = np.zeros(shape, dtype=np.int16)
        self._stream: soxr.ResampleStream | None = None
        if self.in_rate != self.out_rate:
            self._stream = self._new_stream()

    def _new_stream(self) -> soxr.ResampleStream:
        return soxr.ResampleStream(
            self.in_rate, self.out_rate, self.channels, dtype="int16", quality=self.quality
        )

    @property
    def passthrough(self) -> bool:
        """True when no conversion happens (equal rates)."""
        return self._stream is None

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Feed the next chunk; return whatever output is ready (may be empty).

        The output length varies chunk to chunk (soxr works in blocks), so do
        not assume ``len(out) == len(in) * ratio`` per call; only the running
        total converges to that. Skip empty results.
        """
        arr = _as_int16(samples)
        if self._stream is None:
            return arr
        if arr.size == 0:
            return self._empty
        return self._stream.resample_chunk(arr)

    def flush(self) -> np.ndarray:
        """Drain the filter tail at end of stream (may be empty).

        After ``flush`` the resampler starts a fresh stream.
        """
        if self._stream is None:
            return self._empty
        out = self._stream.resample_chunk(self._empty, last=True)
        self._stream.clear()
        return out

    def reset(self) -> None:
        """Drop buffered history without emitting it.

        Call this on barge-in / ``clear``: the tail of interrupted speech must
        not leak into the start of the next utterance.
        """
        if self._stream is not None:
            self._stream.clear()


def resample(samples: np.ndarray, in_rate: int, out_rate: int, *, quality: str = "HQ") -> np.ndarray:
    """Resample a complete int16 buffer in one call.

    Only for whole buffers (a file, a full TTS clip). For live frames use
    :class:`StreamResampler`: calling this per frame clicks at every edge.
    """
    in_rate = _check_rate("in_rate", in_rate)
    out_rate = _check_rate("out_rate", out_rate)
    arr = _as_int16(samples)
    if in_rate == out_rate or arr.shape[0] == 0:
        return arr
    if quality not in _QUALITIES:
        raise ValueError(f"quality must be one of {sorted(_QUALITIES)}, got {quality!r}")
    return soxr.resample(arr, in_rate, out_rate, quality=quality)
