"""Audio sources for ``session.play``: files, raw bytes and chunk iterators, as μ-law 8 kHz.

Everything the carrier plays is G.711 μ-law at 8 kHz, so every source is converted to that exactly once:

* a **WAV** file at any rate, mono or multi-channel, PCM 8/16/24/32-bit, IEEE float 32/64 or μ-law — parsed
  here from the RIFF chunks (the stdlib ``wave`` module refuses float and μ-law WAVs, which TTS tools and
  telephony prompt libraries commonly write);
* **any other format** (FLAC, OGG, MP3, AIFF, ...) through `soundfile <https://python-soundfile.readthedocs.io>`_
  (libsndfile), installed with the ``audio`` extra; without it a clear :class:`AudioSourceError` says so;
* **raw bytes**: μ-law 8 kHz (the default) or little-endian PCM16 at a given rate, via :class:`RawAudio`;
* an **iterator of chunks** (μ-law bytes, or PCM16 at a rate via :class:`ChunkStream`): converted lazily, chunk
  by chunk, with a streaming resampler so there is no click at chunk edges.

Files are decoded, mixed down, resampled (soxr, see :mod:`.resample`) and encoded once, then kept in a small
LRU cache keyed by ``(path, mtime, size)``: an IVR plays the same prompts thousands of times, and re-decoding a
WAV per call would cost more CPU than the call's whole media path. A file that changes on disk gets a new key.
"""

from __future__ import annotations

import os
import struct
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

from .frames import SAMPLE_RATE
from .g711 import ULAW_DECODE_TABLE, pcm16_to_ulaw
from .resample import StreamResampler, resample

__all__ = [
    "AudioSourceError",
    "RawAudio",
    "ChunkStream",
    "Source",
    "load_file",
    "decode_wav",
    "to_ulaw_source",
    "iter_ulaw",
    "scale_ulaw",
    "SourceCache",
    "default_cache",
]

_WAVE_FORMAT_PCM = 0x0001
_WAVE_FORMAT_FLOAT = 0x0003
_WAVE_FORMAT_MULAW = 0x0007
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE

#: Longest file accepted (seconds at the file's own rate). Prompts and hold music are minutes long; a bigger
#: file is almost certainly a mistake, and decoding it would hold hundreds of MB per entry.
MAX_FILE_SECONDS = 3600.0


class AudioSourceError(ValueError):
    """A source could not be turned into telephony audio (bad file, unsupported format, missing decoder)."""


@dataclass(frozen=True)
class RawAudio:
    """Raw samples with an explicit encoding: ``"ulaw"`` (8 kHz) or ``"pcm16"`` (little-endian, at ``rate``)."""

    data: bytes
    encoding: str = "ulaw"
    rate: int = SAMPLE_RATE
    channels: int = 1


@dataclass(frozen=True)
class ChunkStream:
    """An iterator of raw chunks with an explicit encoding (see :class:`RawAudio`); converted lazily."""

    chunks: Iterable[bytes]
    encoding: str = "ulaw"
    rate: int = SAMPLE_RATE
    channels: int = 1


Source = Union[str, os.PathLike, bytes, bytearray, memoryview, RawAudio, ChunkStream, Iterable[bytes]]


# ------------------------------------------------------------------------------------------------ WAV parsing
def _float_to_int16(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.round(samples.astype(np.float64) * 32767.0), -32768, 32767).astype(np.int16)


def _mixdown(samples: np.ndarray, channels: int) -> np.ndarray:
    """Interleaved int16 → mono int16 (mean of the channels; a phone line is mono)."""
    if channels == 1:
        return samples
    usable = samples[: len(samples) - len(samples) % channels].reshape(-1, channels)
    return np.round(usable.astype(np.int32).mean(axis=1)).astype(np.int16)


def decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Parse a RIFF/WAVE image; return ``(mono int16 samples, sample rate)``.

    Supports PCM 8/16/24/32-bit, IEEE float 32/64, μ-law, and WAVE_FORMAT_EXTENSIBLE wrapping any of them.
    Raises :class:`AudioSourceError` with the reason for anything else.
    """
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RF64") or data[8:12] != b"WAVE":
        raise AudioSourceError("not a RIFF/WAVE file")
    pos = 12
    fmt: tuple[int, int, int, int] | None = None
    payload: bytes | None = None
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        body = data[pos + 8 : pos + 8 + size]
        if chunk_id == b"fmt ":
            if len(body) < 16:
                raise AudioSourceError("WAV fmt chunk too short")
            tag, channels, rate, _byte_rate, _align, bits = struct.unpack_from("<HHIIHH", body, 0)
            if tag == _WAVE_FORMAT_EXTENSIBLE:
                if len(body) < 40:
                    raise AudioSourceError("WAV extensible fmt chunk too short")
                (tag,) = struct.unpack_from("<H", body, 24)  # first two bytes of the sub-format GUID
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            payload = body  # a truncated file gives a short body; decode what is there
            break
        pos += 8 + size + (size & 1)  # chunks are word aligned
    if fmt is None:
        raise AudioSourceError("WAV file has no fmt chunk")
    if payload is None:
        raise AudioSourceError("WAV file has no data chunk")
    tag, channels, rate, bits = fmt
    if channels < 1 or rate <= 0:
        raise AudioSourceError(f"WAV header is invalid (channels={channels}, rate={rate})")
    if tag == _WAVE_FORMAT_PCM:
        if bits == 8:
            samples = ((np.frombuffer(payload, dtype=np.uint8).astype(np.int16) - 128) << 8).astype(np.int16)
        elif bits == 16:
            samples = np.frombuffer(payload[: len(payload) // 2 * 2], dtype="<i2").astype(np.int16)
        elif bits == 24:
            raw = np.frombuffer(payload[: len(payload) // 3 * 3], dtype=np.uint8).reshape(-1, 3)
            samples = (raw[:, 2].astype(np.int8).astype(np.int16) << 8) | raw[:, 1].astype(np.int16)
            samples = samples.astype(np.int16)
        elif bits == 32:
            samples = (np.frombuffer(payload[: len(payload) // 4 * 4], dtype="<i4") >> 16).astype(np.int16)
        else:
            raise AudioSourceError(f"unsupported PCM WAV bit depth {bits}")
    elif tag == _WAVE_FORMAT_FLOAT:
        if bits == 32:
            samples = _float_to_int16(np.frombuffer(payload[: len(payload) // 4 * 4], dtype="<f4"))
        elif bits == 64:
            samples = _float_to_int16(np.frombuffer(payload[: len(payload) // 8 * 8], dtype="<f8"))
        else:
            raise AudioSourceError(f"unsupported float WAV bit depth {bits}")
    elif tag == _WAVE_FORMAT_MULAW:
        samples = ULAW_DECODE_TABLE[np.frombuffer(payload, dtype=np.uint8)]
    else:
        raise AudioSourceError(f"unsupported WAV format tag 0x{tag:04x} (decode it with the 'audio' extra)")
    return _mixdown(samples, channels), rate


def _decode_with_soundfile(path: Path) -> tuple[np.ndarray, int]:
    try:
        import soundfile
    except ImportError as exc:
        raise AudioSourceError(
            f"{path.name}: only WAV is built in; install voice-runtime[audio] (soundfile) for other formats"
        ) from exc
    try:
        samples, rate = soundfile.read(str(path), dtype="int16", always_2d=True)
    except Exception as exc:  # libsndfile's own error says what is wrong with the file
        raise AudioSourceError(f"{path.name}: {exc}") from exc
    return _mixdown(samples.reshape(-1), samples.shape[1]), int(rate)


def _to_telephone(samples: np.ndarray, rate: int) -> bytes:
    if rate != SAMPLE_RATE:
        samples = resample(np.ascontiguousarray(samples), rate, SAMPLE_RATE)
    return pcm16_to_ulaw(samples)


def load_file(path: str | os.PathLike[str], *, cache: SourceCache | None = None) -> bytes:
    """A sound file as μ-law 8 kHz bytes, decoded once and cached (see :class:`SourceCache`)."""
    return (cache or default_cache).get(Path(path))


def _decode_file(path: Path) -> bytes:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise AudioSourceError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with open(path, "rb") as fh:
        head = fh.read(12)
        is_wav = len(head) == 12 and head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE"
        if is_wav:
            if size > MAX_FILE_SECONDS * 48000 * 2 * 8:  # generous: an hour of 48 kHz 8-channel 16-bit
                raise AudioSourceError(f"{path.name} is too large ({size} bytes) to play")
            samples, rate = decode_wav(head + fh.read())
        else:
            samples, rate = _decode_with_soundfile(path)
    if len(samples) > MAX_FILE_SECONDS * rate:
        raise AudioSourceError(f"{path.name} is longer than {MAX_FILE_SECONDS:.0f} s")
    return _to_telephone(samples, rate)


class SourceCache:
    """LRU of converted files, keyed by ``(resolved path, mtime_ns, size)``; thread-safe.

    Bounded by total bytes of μ-law (one byte per 8 kHz sample), not entry count: ten minutes of hold music and
    fifty short prompts cost about the same to hold.
    """

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, path: Path) -> bytes:
        try:
            st = path.stat()
        except OSError as exc:
            raise AudioSourceError(f"cannot read {path}: {exc.strerror or exc}") from exc
        key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return hit
        audio = _decode_file(path)  # outside the lock: decoding a long file must not stall other calls
        with self._lock:
            self.misses += 1
            if key not in self._entries and len(audio) <= self.max_bytes:
                self._entries[key] = audio
                self._bytes += len(audio)
                while self._bytes > self.max_bytes:
                    _, old = self._entries.popitem(last=False)
                    self._bytes -= len(old)
        return audio

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)


default_cache = SourceCache()


# ------------------------------------------------------------------------------------------------ raw / chunks
def _check_encoding(encoding: str, rate: int, channels: int) -> None:
    if encoding not in ("ulaw", "pcm16"):
        raise AudioSourceError(f"unknown raw encoding {encoding!r} (use 'ulaw' or 'pcm16')")
    if encoding == "ulaw" and (rate != SAMPLE_RATE or channels != 1):
        raise AudioSourceError("raw μ-law must be 8 kHz mono; pass PCM16 for other rates")
    if rate <= 0 or channels < 1:
        raise AudioSourceError(f"invalid rate {rate} / channels {channels}")


def _raw_to_ulaw(raw: RawAudio) -> bytes:
    _check_encoding(raw.encoding, raw.rate, raw.channels)
    if raw.encoding == "ulaw":
        return bytes(raw.data)
    pcm = np.frombuffer(bytes(raw.data)[: len(raw.data) // 2 * 2], dtype="<i2").astype(np.int16)
    return _to_telephone(_mixdown(pcm, raw.channels), raw.rate)


def to_ulaw_source(source: Source) -> bytes | Iterator[bytes]:
    """Resolve ``source`` to μ-law 8 kHz: ``bytes`` for files and raw audio, a lazy iterator for chunk streams.

    ``bytes``/``bytearray`` are taken as μ-law 8 kHz; use :class:`RawAudio` for PCM.
    """
    if isinstance(source, (str, os.PathLike)):
        return load_file(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, RawAudio):
        return _raw_to_ulaw(source)
    if isinstance(source, ChunkStream):
        _check_encoding(source.encoding, source.rate, source.channels)
        return _convert_chunks(source)
    if isinstance(source, Iterable):
        return _convert_chunks(ChunkStream(source))
    raise AudioSourceError(f"cannot play a {type(source).__name__}: pass a path, bytes, RawAudio or chunks")


def _convert_chunks(stream: ChunkStream) -> Iterator[bytes]:
    if stream.encoding == "ulaw":
        for chunk in stream.chunks:
            if not isinstance(chunk, (bytes, bytearray, memoryview)):
                raise AudioSourceError(f"audio chunks must be bytes, got {type(chunk).__name__}")
            if chunk:
                yield bytes(chunk)
        return
    resampler = StreamResampler(stream.rate, SAMPLE_RATE)
    carry = b""  # an odd byte (or a partial multi-channel frame) waits for the next chunk
    width = 2 * stream.channels
    for chunk in stream.chunks:
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise AudioSourceError(f"audio chunks must be bytes, got {type(chunk).__name__}")
        data = carry + bytes(chunk)
        usable = len(data) - len(data) % width
        carry = data[usable:]
        if not usable:
            continue
        pcm = _mixdown(np.frombuffer(data[:usable], dtype="<i2").astype(np.int16), stream.channels)
        out = resampler.process(pcm)
        if len(out):
            yield pcm16_to_ulaw(out)
    tail = resampler.flush()
    if len(tail):
        yield pcm16_to_ulaw(tail)


def iter_ulaw(source: Source, chunk_bytes: int = 1600) -> Iterator[bytes]:
    """``source`` as μ-law chunks of about ``chunk_bytes`` (files and raw audio are sliced, streams re-cut)."""
    resolved = to_ulaw_source(source)
    if isinstance(resolved, bytes):
        for start in range(0, len(resolved), chunk_bytes):
            yield resolved[start : start + chunk_bytes]
        return
    yield from resolved


# ------------------------------------------------------------------------------------------------ volume
_VOLUME_TABLES: dict[float, bytes] = {}


def _volume_table(volume: float) -> bytes:
    key = round(volume, 3)
    table = _VOLUME_TABLES.get(key)
    if table is None:
        scaled = np.clip(np.round(ULAW_DECODE_TABLE.astype(np.float64) * key), -32768, 32767).astype(np.int16)
        table = pcm16_to_ulaw(scaled)
        if len(_VOLUME_TABLES) < 1024:
            _VOLUME_TABLES[key] = table
    return table


def scale_ulaw(ulaw: bytes, volume: float) -> bytes:
    """μ-law audio at ``volume`` (linear gain, 0..4; 1.0 returns it unchanged), by a 256-entry translate table."""
    if not 0.0 <= volume <= 4.0:
        raise ValueError(f"volume must be between 0.0 and 4.0, got {volume}")
    if volume == 1.0:
        return ulaw
    return ulaw.translate(_volume_table(volume))
