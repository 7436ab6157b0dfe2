"""Every log line of a simulated call carries its call id, from the flow thread and the event loop alike."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tests.conftest import CallHarness, FlowResult
from voice_runtime.audio.g711 import pcm16_to_ulaw
from voice_runtime.logs import JsonFormatter


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self.guard:
            self.records.append(record)


@pytest.fixture
def collected() -> Iterator[Collect]:
    handler = Collect()
    root = logging.getLogger()
    logger = logging.getLogger("voice_runtime")
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    root.addHandler(handler)
    user = logging.getLogger("my_app.flow")
    user.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        logger.setLevel(previous)


def speech(seconds: float) -> bytes:
    n = int(round(seconds * 50)) * 160
    return pcm16_to_ulaw((np.sin(2 * np.pi * 300 * np.arange(n) / 8000) * 8000).astype(np.int16))


def test_every_log_line_of_a_call_carries_its_call_id(any_mode: CallHarness, flow_result: FlowResult, collected: Collect) -> None:
    """In every server mode: the push wires (picows, FastAPI's direct channel) hand messages over on the socket
    library's callback, whose context is not the call's, so the connection runs each in the call's context."""
    harness = any_mode
    user_log = logging.getLogger("my_app.flow")
    reported = threading.Event()

    def body(session: Any) -> None:
        user_log.info("greeting the caller")  # a user's own logger, on the flow thread
        session.speak("Hello, this is a fairly long greeting so that you can talk over it.", wait=True)
        user_log.info("heard %s", session.listen(timeout=10))
        session.speak("Bye.", wait=True)

    _, running = harness.serve(flow_result.run(body), script=["over you"], on_call_report=lambda s, r: reported.set())
    phone = harness.phone(running)
    phone.wait_for("playback_start", timeout=10)
    phone.say(speech(0.6))  # barge-in: clears and cleared marks are logged at DEBUG
    flow_result.wait(20)
    assert phone.wait_closed(10) and reported.wait(10)
    call_id = phone.codec.call_id  # type: ignore[attr-defined]

    with collected.guard:
        records = [r for r in collected.records if not r.name.startswith("voice_runtime.testing")]  # the phone's side
    messages = [r.getMessage() for r in records]
    start = next(i for i, m in enumerate(messages) if m.startswith(f"call {call_id} started"))
    end = next(i for i, m in enumerate(messages) if m.startswith(f"call {call_id} ended"))
    during = records[start : end + 1]
    threads = {r.threadName for r in during}
    assert any(t.startswith("flow-") for t in threads) and len(threads) >= 2  # flow thread and the loop
    missing = [(r.threadName, r.name, r.getMessage()) for r in during if getattr(r, "call_id", None) != call_id]
    assert missing == []
    # INFO lifecycle with carrier, stream, reason and duration; DEBUG for marks and clears; nothing per frame.
    assert "carrier=twilio" in messages[start] and "stream=" in messages[start]
    assert "reason=hangup" in messages[end] and "duration=" in messages[end]
    kinds = " ".join(m for r, m in zip(records, messages) if r.levelno == logging.DEBUG)
    assert "mark_played" in kinds and "clear_sent" in kinds and "barge_in" in kinds
    assert len(during) < 60, "a few lines per call, never one per frame"
    # The JSON formatter carries the id too.
    line = JsonFormatter().format(next(r for r in during if r.name == "my_app.flow"))
    assert f'"call_id": "{call_id}"' in line and '"message": "greeting the caller"' in line
