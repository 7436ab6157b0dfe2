"""Frame constants and framing helpers."""

from __future__ import annotations

import pytest

from voice_runtime.audio import (
    FRAME_BYTES,
    FRAME_INTERVAL,
    SAMPLE_RATE,
    SILENCE_BYTE,
    SILENCE_FRAME,
    split_frames,
    ulaw_decode,
    ulaw_duration,
)


def test_constants_are_consistent() -> None:
    assert SAMPLE_RATE == 8000 and FRAME_BYTES == 160 and FRAME_INTERVAL == 0.020
    assert FRAME_BYTES == round(SAMPLE_RATE * FRAME_INTERVAL)
    assert SILENCE_BYTE == 0xFF
    assert SILENCE_FRAME == b"\xff" * 160
    assert ulaw_decode(SILENCE_FRAME) == b"\x00" * 320  # silence decodes to true zero


def test_ulaw_duration() -> None:
    assert ulaw_duration(160) == pytest.approx(0.020)
    assert ulaw_duration(8000) == pytest.approx(1.0)
    assert ulaw_duration(0) == 0.0
    with pytest.raises(ValueError):
        ulaw_duration(-1)


def test_split_frames_pads_last_frame_with_silence() -> None:
    data = bytes(range(200)) + bytes(range(150))  # 350 bytes
    frames = split_frames(data)
    assert [len(f) for f in frames] == [160, 160, 160]
    assert b"".join(frames)[:350] == data
    assert frames[-1][30:] == b"\xff" * 130


def test_split_frames_without_padding_keeps_short_tail() -> None:
    frames = split_frames(b"\x01" * 330, pad=False)
    assert [len(f) for f in frames] == [160, 160, 10]


def test_split_frames_exact_multiple_and_custom_size() -> None:
    assert split_frames(b"\x02" * 320) == [b"\x02" * 160] * 2
    assert split_frames(b"\x03" * 5, size=2) == [b"\x03\x03", b"\x03\x03", b"\x03\xff"]


def test_split_frames_edge_cases() -> None:
    assert split_frames(b"") == []
    with pytest.raises(ValueError):
        split_frames(b"abc", size=0)
