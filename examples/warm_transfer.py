"""Warm transfer: tell the caller what happens, make sure they heard it, then hand the call over.

Works with either carrier's call control (``TwilioCallControl`` uses ``<Dial>`` TwiML, ``PlivoCallControl`` the
Transfer API with ``<Dial><Number>`` XML); both end our media stream and leave the call up at its new
destination. Run offline: ``python -m examples.warm_transfer`` (fake Twilio and fake Plivo on loopback).
"""

from __future__ import annotations

from typing import Any

from voice_runtime import VoiceSession


def warm_transfer(session: VoiceSession, control: Any, number: str, *, line: str | None = None, **options: Any) -> bool:
    """Say ``line`` (wait until heard, or barged into), then transfer to ``number``. True once our stream has ended."""
    session.speak(line or "Please hold while I connect you to a colleague.", wait=True, timeout=30)
    return bool(control.transfer(session, number, **options))


def main() -> None:  # pragma: no cover - exercised by tests/examples/test_examples.py
    from examples._offline import run_warm_transfer_demo

    run_warm_transfer_demo()


if __name__ == "__main__":
    main()
