"""The README's main job as a test: the whole simulated appointment call, over real sockets.

The ``local`` run uses real speech both ways (Piper speaks for the agent and the scripted caller; Whisper
transcribes the caller), so these assertions check words a real recogniser produced.
"""

from __future__ import annotations

import io
import wave

import pytest

from voice_runtime.demo import CALLER_LINES, run_demo, words


def _assert_demo(report, wav_path, out: str) -> None:
    assert report.ok, out
    assert report.branch == "confirmed", out
    assert report.greeting_outcome == "cleared", out  # the caller talked over the greeting
    assert report.barge_in_clear_latency is not None and report.barge_in_stop_latency is not None, out
    assert report.sms is not None and report.sms["to"].startswith("+1555"), out
    assert len(report.heard) == 2, out
    with wave.open(str(wav_path)) as wav:
        assert wav.getnchannels() == 2 and wav.getframerate() == 8000
        seconds = wav.getnframes() / 8000
    assert 8.0 < seconds < 60.0
    assert "HEARD" in out and "BARGE" in out and "SMS" in out


def test_demo_with_mock_providers(tmp_path) -> None:
    out = io.StringIO()
    report = run_demo(providers="mock", wav_path=tmp_path / "call.wav", out=out)
    _assert_demo(report, tmp_path / "call.wav", out.getvalue())
    assert report.heard == CALLER_LINES
    # Next to its WAV the demo leaves the call's log and its timeline picture.
    assert report.log_path == tmp_path / "call.jsonl" and report.log_path.read_text().count("\n") > 20
    if report.timeline_path is not None:  # drawn when the [report] extra (matplotlib) is installed
        assert report.timeline_path == tmp_path / "call.png"
        assert report.timeline_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "pip install 'voice-runtime[report]'" in out.getvalue()


@pytest.mark.slow
def test_demo_with_local_speech(tmp_path) -> None:
    pytest.importorskip("faster_whisper", reason="the [local] extra is part of the test install")
    out = io.StringIO()
    report = run_demo(providers="local", wav_path=tmp_path / "call.wav", out=out)
    _assert_demo(report, tmp_path / "call.wav", out.getvalue())
    interruption, answer = (set(words(text)) for text in report.heard)
    assert {"who", "calling"} <= interruption, report.heard  # "Sorry, who is calling?"
    assert {"yes", "works"} <= answer, report.heard  # "Yes, that works for me."
    assert report.transcript_latencies and report.first_audio_latencies
