"""SMS transports (prior-art import path ``voice_runtime.transport``).

``get_sms_transport(name)`` returns an object with ``send_sms(to, body) -> {"message_sid", "status", "to"}``.
``"mock"`` records messages in memory (demos and tests); carrier transports live in
``voice_runtime.transports.<carrier>_sms`` and are imported lazily.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any



class MockSmsTransport:
    """Keeps sent messages in ``outbox``; the result has the same shape as the carriers'."""

    def __init__(self) -> None:
        self.outbox: list[dict[str, str]] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def send_sms(self, to: str, body: str) -> dict[str, str]:
        if not to or not body:
            raise ValueError("send_sms needs a recipient and a body")
        with self._lock:
            sid = f"SMMOCK{next(self._ids):026d}"
            self.outbox.append({"message_sid": sid, "to": to, "body": body})
        return {"message_sid": sid, "status": "queued", "to": to}


_mock = MockSmsTransport()


def get_sms_transport(provider: str = "twilio") -> Any:
    """The SMS transport named ``provider`` (``twilio``, ``plivo`` or ``mock``)."""
    from voice_runtime.carriers import CARRIERS

    if provider == "mock":
        return _mock
    carrier = CARRIERS.get(provider)
    if carrier is None or carrier.sms is None:
        valid = sorted(name for name, c in CARRIERS.items() if c.sms)
        raise ValueError(f"Unknown SMS transport: {provider!r}; valid: mock, {', '.join(valid)}")
    return carrier.load_sms()


__all__ = ["get_sms_transport", "MockSmsTransport"]
