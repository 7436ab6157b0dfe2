"""examples/echo.py over a real socket: the caller's audio comes back to the simulated phone, byte for byte."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from voice_runtime.audio.g711 import pcm16_to_ulaw
from voice_runtime.providers.mock import tone_speech

from ..conftest import CallHarness

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "echo.py"


def _load_flow():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("echo_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.flow


def test_the_caller_hears_their_own_audio_back(harness: CallHarness) -> None:
    server, running = harness.serve(_load_flow(), stt_factory=None)
    phone = harness.phone(running)
    speech = tone_speech(1.0, frequency=300.0)
    phone.say(speech).wait_finished(10)
    expected = pcm16_to_ulaw(np.asarray(speech, dtype=np.int16))
    # Everything the phone sends (silence, then the tone) is echoed, so media keeps arriving: wait on those
    # arrivals (up to 10 s) until the tone has come back byte for byte. What arrived, not what played: a loaded
    # machine can delay the flow thread past the playout lead, and the phone then plays silence mid-tone.
    try:
        phone.wait_for("media", timeout=10, predicate=lambda _event: expected in phone.received_ulaw())
    except TimeoutError:
        pytest.fail("the caller's tone did not come back byte for byte")
    phone.hangup()
    assert phone.wait_closed(5)
