"""Sources for play(): WAV variants built here byte by byte, raw bytes, chunk streams, the cache."""

from __future__ import annotations

import os
import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from voice_runtime.audio.g711 import pcm16_to_ulaw, ulaw_to_pcm16
from voice_runtime.audio.sources import (
    AudioSourceError,
    ChunkStream,
    RawAudio,
    SourceCache,
    decode_wav,
    iter_ulaw,
    scale_ulaw,
    to_ulaw_source,
)


def sine(seconds: float, rate: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return amp * np.sin(2 * np.pi * freq * t)


def riff(tag: int, channels: int, rate: int, bits: int, payload: bytes, *, extensible: bool = False) -> bytes:
    align = channels * bits // 8
    if extensible:
        guid = struct.pack("<H", tag) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt = struct.pack("<HHIIHHHHI", 0xFFFE, channels, rate, rate * align, align, bits, 22, bits, 0) + guid
    else:
        fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * align, align, bits)
    junk = b"LIST" + struct.pack("<I", 3) + b"abc\x00"  # odd-sized chunk before data: word alignment matters
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + junk + b"data" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


def dominant_freq(ulaw: bytes) -> float:
    x = ulaw_to_pcm16(ulaw).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * 8000 / len(x))


_RATES = [8000, 16000, 22050, 44100, 48000]
_LINEAR_KINDS = ["pcm16", "float32", "pcm24", "pcm8", "float64_ext"]


# Every linear format at every rate; μ-law WAVs exist only at 8 kHz, so that is the one rate they are tried at.
@pytest.mark.parametrize(
    ("rate", "kind"), [(rate, kind) for kind in _LINEAR_KINDS for rate in _RATES] + [(8000, "ulaw")]
)
def test_wav_variants_decode_to_the_same_tone_at_8k(tmp_path: Path, rate: int, kind: str) -> None:
    signal = sine(0.5, rate)
    if kind == "pcm16":
        data = riff(1, 1, rate, 16, (signal * 32767).astype("<i2").tobytes())
    elif kind == "float32":
        data = riff(3, 1, rate, 32, signal.astype("<f4").tobytes())
    elif kind == "float64_ext":
        data = riff(3, 1, rate, 64, signal.astype("<f8").tobytes(), extensible=True)
    elif kind == "pcm24":
        ints = (signal * 8388607).astype("<i4").tobytes()
        data = riff(1, 1, rate, 24, b"".join(ints[i : i + 3] for i in range(0, len(ints), 4)))
    elif kind == "pcm8":
        data = riff(1, 1, rate, 8, (signal * 127 + 128).astype(np.uint8).tobytes())
    else:
        data = riff(7, 1, rate, 8, pcm16_to_ulaw((signal * 32767).astype(np.int16)))
    path = tmp_path / "prompt.wav"
    path.write_bytes(data)
    out = to_ulaw_source(str(path))
    assert isinstance(out, bytes)
    assert abs(len(out) - 4000) <= 2  # 0.5 s at 8 kHz whatever the file's rate
    assert abs(dominant_freq(out) - 440) < 10
    level = np.abs(ulaw_to_pcm16(out[400:-400]).astype(np.float64)).mean()
    assert 0.25 * 32767 < level < 0.4 * 32767  # mean |0.5 sin| = 0.318 full scale: the level survived


def test_stereo_is_mixed_down_to_mono(tmp_path: Path) -> None:
    left, right = sine(0.2, 16000, 440), sine(0.2, 16000, 1000)
    interleaved = np.empty(2 * len(left))
    interleaved[0::2], interleaved[1::2] = left, right
    path = tmp_path / "stereo.wav"
    path.write_bytes(riff(1, 2, 16000, 16, (interleaved * 32767).astype("<i2").tobytes()))
    out = ulaw_to_pcm16(to_ulaw_source(path)).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    bins = {f: spectrum[int(f * len(out) / 8000)] for f in (440, 1000, 2000)}
    assert bins[440] > 10 * bins[2000] and bins[1000] > 10 * bins[2000]  # both channels are in the mix


def test_stdlib_wave_files_work_and_unknown_tags_are_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "std.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(24000)
        w.writeframes((sine(0.1, 24000) * 32767).astype("<i2").tobytes())
    assert abs(len(to_ulaw_source(path)) - 800) <= 2
    with pytest.raises(AudioSourceError, match="format tag 0x0002"):
        decode_wav(riff(2, 1, 8000, 4, b"\x00" * 100))  # ADPCM
    with pytest.raises(AudioSourceError, match="not a RIFF"):
        decode_wav(b"hello world, not audio")
    with pytest.raises(AudioSourceError, match="cannot read"):
        to_ulaw_source(tmp_path / "missing.wav")


def test_other_formats_go_through_soundfile(tmp_path: Path) -> None:
    soundfile = pytest.importorskip("soundfile", reason="install voice-runtime[audio] for non-WAV formats")
    path = tmp_path / "prompt.flac"
    soundfile.write(str(path), (sine(0.5, 16000, 600) * 32767).astype(np.int16), 16000, format="FLAC")
    out = to_ulaw_source(path)
    assert abs(len(out) - 4000) <= 2 and abs(dominant_freq(out) - 600) < 10
    (tmp_path / "junk.ogg").write_bytes(b"not an ogg file at all")
    with pytest.raises(AudioSourceError, match="junk.ogg"):
        to_ulaw_source(tmp_path / "junk.ogg")


def test_files_are_converted_once_and_reconverted_when_they_change(tmp_path: Path) -> None:
    path = tmp_path / "p.wav"
    path.write_bytes(riff(1, 1, 16000, 16, (sine(0.2, 16000) * 32767).astype("<i2").tobytes()))
    cache = SourceCache()
    first = cache.get(path)
    assert cache.get(path) is first and (cache.hits, cache.misses) == (1, 1)
    path.write_bytes(riff(1, 1, 16000, 16, (sine(0.3, 16000) * 32767).astype("<i2").tobytes()))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    second = cache.get(path)
    assert len(second) > len(first) and cache.misses == 2


def test_cache_is_bounded_by_bytes(tmp_path: Path) -> None:
    cache = SourceCache(max_bytes=5000)
    for i in range(4):
        p = tmp_path / f"{i}.wav"
        p.write_bytes(riff(1, 1, 8000, 16, (sine(0.25, 8000) * 32767).astype("<i2").tobytes()))  # 2000 bytes μ-law
        cache.get(p)
    assert len(cache) == 2


def test_raw_bytes_pcm_and_chunk_streams() -> None:
    ulaw = pcm16_to_ulaw((sine(0.2, 8000) * 20000).astype(np.int16))
    assert to_ulaw_source(ulaw) == ulaw
    pcm16 = (sine(0.2, 16000) * 20000).astype("<i2").tobytes()
    out = to_ulaw_source(RawAudio(pcm16, "pcm16", 16000))
    assert abs(len(out) - 1600) <= 2 and abs(dominant_freq(out) - 440) < 15
    # chunks of odd sizes: the streaming converter carries half samples across chunk edges
    chunks = [pcm16[i : i + 333] for i in range(0, len(pcm16), 333)]
    streamed = b"".join(to_ulaw_source(ChunkStream(iter(chunks), "pcm16", 16000)))
    assert abs(len(streamed) - 1600) <= 40 and abs(dominant_freq(streamed) - 440) < 15
    assert b"".join(iter_ulaw(iter([ulaw[:100], b"", ulaw[100:]]))) == ulaw
    with pytest.raises(AudioSourceError):
        to_ulaw_source(RawAudio(b"\x00" * 10, "ulaw", 16000))
    with pytest.raises(AudioSourceError, match="must be bytes"):
        list(to_ulaw_source(iter(["text"])))  # type: ignore[list-item]
    with pytest.raises(AudioSourceError, match="cannot play"):
        to_ulaw_source(42)  # type: ignore[arg-type]


def test_volume_scaling() -> None:
    ulaw = pcm16_to_ulaw((sine(0.2, 8000) * 20000).astype(np.int16))
    quiet = scale_ulaw(ulaw, 0.1)
    ratio = np.abs(ulaw_to_pcm16(quiet).astype(float)).mean() / np.abs(ulaw_to_pcm16(ulaw).astype(float)).mean()
    assert 0.09 < ratio < 0.11
    assert scale_ulaw(ulaw, 1.0) is ulaw
    with pytest.raises(ValueError):
        scale_ulaw(ulaw, -1)
