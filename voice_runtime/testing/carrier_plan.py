"""The callees of a simulated campaign: the fake carrier decides how each dialled call ends.

``CarrierPlan(fake, decide)`` hooks a :class:`~voice_runtime.testing.fake_twilio.FakeTwilio`: for every call
created over REST, ``decide(number, nth_dial_of_that_number)`` returns ``"human"``, ``"machine"``, ``"busy"``,
``"no-answer"`` or ``"failed"``, and the fake acts it out like Twilio would:

* busy / no-answer / failed: a signed status callback with that ``CallStatus`` after a short ring;
* human / machine: answered (status callbacks), the media stream connects from a real
  :class:`SimulatedPhone`, and the async AMD result is posted when the dial asked for detection. The call
  lasts until the worker hangs up over REST; if the stream drops first (the worker died), the call completes
  as Twilio's does when ``<Connect><Stream>`` ends with no more TwiML.

The REST path and every callback are real HTTP; only the callee is scripted. ``dials`` logs
``(monotonic time, number, sid)`` of each dial as the fake received it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from voice_runtime.testing.fake_twilio import ENDED, FakeCall, FakeTwilio

log = logging.getLogger(__name__)

__all__ = ["CarrierPlan", "PlivoCarrierPlan"]


class CarrierPlan:
    def __init__(
        self,
        fake: FakeTwilio,
        decide: Callable[[str, int], str],
        *,
        ring_seconds: float = 0.1,
        no_answer_seconds: float = 0.5,
        call_timeout: float = 60.0,
    ) -> None:
        self.fake = fake
        self.decide = decide
        self.ring_seconds = ring_seconds
        self.no_answer_seconds = no_answer_seconds
        self.call_timeout = call_timeout
        self.dials: list[tuple[float, str, str]] = []
        self.outcomes: Counter[str] = Counter()
        self.errors: list[str] = []
        self._per_number: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._release = threading.Event()
        fake.on_dial = self._on_dial

    def close(self) -> None:
        self._release.set()

    def dial_counts(self) -> Counter[str]:
        with self._lock:
            return Counter(self._per_number)

    def _on_dial(self, call: FakeCall) -> None:
        with self._lock:
            self._per_number[call.to] += 1
            nth = self._per_number[call.to]
            self.dials.append((time.monotonic(), call.to, call.sid))
        outcome = self.decide(call.to, nth)
        with self._lock:
            self.outcomes[outcome] += 1
        try:
            self._act(call, outcome)
        except Exception as exc:  # a callback to a dead worker fails: that is the scenario, not a bug
            with self._lock:
                self.errors.append(f"{call.sid} {outcome}: {type(exc).__name__}: {exc}")

    def _act(self, call: FakeCall, outcome: str) -> None:
        if outcome in ("busy", "no-answer", "failed"):
            self._release.wait(self.no_answer_seconds if outcome == "no-answer" else self.ring_seconds)
            if call.status not in ENDED:
                self.fake.send_status(call.sid, outcome)
            return
        if outcome not in ("human", "machine"):
            raise ValueError(f"unknown planned outcome {outcome!r}")
        self._release.wait(self.ring_seconds)
        if call.status in ENDED:  # cancelled while ringing
            return
        phone = self.fake.answer(call.sid)
        if call.amd_callback:
            self.fake.send_amd(call.sid, "human" if outcome == "human" else "machine_start")
        phone.wait_closed(self.call_timeout)
        if call.status not in ENDED:  # the stream ended without a REST hangup: the worker is gone
            if call.status_callback:
                self.fake.send_status(call.sid, "completed")
            else:
                call.status = "completed"


class PlivoCarrierPlan:
    """:class:`CarrierPlan` for a :class:`~voice_runtime.testing.fake_plivo.FakePlivo`: the same outcomes,
    acted out the way Plivo does.

    * busy / no-answer / failed: the ring callback, then the hangup callback with that ``CallStatus``;
    * human / machine: ring, the answer webhook (its XML's ``<Stream>`` is connected by a real
      :class:`SimulatedPhone`), and the async machine-detection callback when the dial asked for it. The call
      lasts until the worker hangs up over REST; if the stream drops first (the worker died), Plivo reaches the
      end of the answer XML and the call completes.

    ``dials`` logs ``(monotonic time, number, request_uuid)`` of each ``POST /Call/`` as the fake received it.
    """

    def __init__(
        self,
        fake: Any,
        decide: Callable[[str, int], str],
        *,
        ring_seconds: float = 0.1,
        no_answer_seconds: float = 0.5,
        call_timeout: float = 60.0,
    ) -> None:
        self.fake = fake
        self.decide = decide
        self.ring_seconds = ring_seconds
        self.no_answer_seconds = no_answer_seconds
        self.call_timeout = call_timeout
        self.dials: list[tuple[float, str, str]] = []
        self.outcomes: Counter[str] = Counter()
        self.errors: list[str] = []
        self._per_number: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._release = threading.Event()
        fake.on_dial = self._on_dial

    def close(self) -> None:
        self._release.set()

    def dial_counts(self) -> Counter[str]:
        with self._lock:
            return Counter(self._per_number)

    def _on_dial(self, call: Any) -> None:
        with self._lock:
            self._per_number[call.to] += 1
            nth = self._per_number[call.to]
            self.dials.append((time.monotonic(), call.to, call.request_uuid))
        outcome = self.decide(call.to, nth)
        with self._lock:
            self.outcomes[outcome] += 1
        try:
            self._act(call, outcome)
        except Exception as exc:  # a webhook to a dead worker fails: that is the scenario, not a bug
            with self._lock:
                self.errors.append(f"{call.request_uuid} {outcome}: {type(exc).__name__}: {exc}")
            if not call.ended.is_set():  # end it at the carrier too, as Plivo would (no call is left hanging)
                call.end("completed" if call.answered_at else "failed", "NORMAL_CLEARING" if call.answered_at else "ANSWER_URL_ERROR")

    def _act(self, call: Any, outcome: str) -> None:
        if outcome not in ("busy", "no-answer", "failed", "human", "machine"):
            raise ValueError(f"unknown planned outcome {outcome!r}")
        self._release.wait(self.ring_seconds)
        if call.ended.is_set():  # cancelled before it rang
            return
        call.ring()
        if outcome in ("busy", "no-answer", "failed"):
            if outcome == "no-answer":
                self._release.wait(self.no_answer_seconds)
            cause = {"busy": "USER_BUSY", "no-answer": "NO_ANSWER", "failed": "UNALLOCATED_NUMBER"}[outcome]
            call.end(outcome, cause)
            return
        self._release.wait(self.ring_seconds)
        if call.ended.is_set():  # cancelled while ringing
            return
        # The answer webhook may have been fetched already (a carrier whose answer beats its REST response).
        phone = call.connect_stream() if call.stream_url else call.answer()
        if call.request.get("machine_detection_url"):
            call.detect_machine(outcome == "machine")
        phone.wait_closed(self.call_timeout)
        call.end("completed")  # no-op after a REST hangup; else the stream ended with the answer XML
