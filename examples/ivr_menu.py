"""An IVR menu: press a key (or say it), get routed; invalid or no input repeats the menu twice, then ends.

    voice-runtime console examples/ivr_menu.py:flow            # type 1, 2 or 0 (keys), or say "hours"
    voice-runtime serve examples/ivr_menu.py:flow --stt local --tts local --carrier plivo \\
        --public-url https://<your tunnel>
"""

from __future__ import annotations

import threading
import time

from voice_runtime import CallTimeoutError
from voice_runtime import call_events as ev

MENU = "Welcome to Sunny Dental. For opening hours, press 1. For appointments, press 2. To speak to someone, press 0."
CHOICES = {
    "1": ("hours", "We are open Monday to Friday, from eight in the morning to six in the evening."),
    "2": ("appointments", "To book or move an appointment, please call back during opening hours or use our website."),
    "0": ("operator", "Please hold while I connect you to our front desk."),
}
SPOKEN = {"hours": "1", "opening": "1", "appointment": "2", "appointments": "2", "operator": "0", "someone": "0", "person": "0"}


def choice_from_words(text: str) -> str | None:
    """A spoken choice ("opening hours please") mapped to its key, for callers who talk instead of pressing."""
    for word in text.lower().replace(",", " ").replace(".", " ").split():
        if word in SPOKEN:
            return SPOKEN[word]
    return None


def flow(session) -> str | None:
    """Returns the menu item chosen (``hours``, ``appointments``, ``operator``) or None."""
    session.clear_dtmf()  # keys from before the menu are stale; keys pressed during a prompt count
    for _attempt in range(3):
        session.speak(MENU, wait=True, timeout=30)
        key = _wait_for_choice(session, timeout=8)
        if key in CHOICES:
            name, answer = CHOICES[key]
            session.speak(answer, wait=True, timeout=30)
            session.speak("Thank you for calling. Goodbye!", wait=True, timeout=15)
            session.hangup()
            return name
        session.speak("Sorry, that is not an option.", wait=True, timeout=15)
    session.speak("Goodbye!", wait=True, timeout=10)
    session.hangup()
    return None


def _wait_for_choice(session, timeout: float) -> str | None:
    """A key press, or a spoken choice, whichever comes first within ``timeout`` (woken by the call's events)."""
    arrived = threading.Event()
    wake_on = {ev.DTMF_RECEIVED, ev.STT_FINAL, ev.CALL_ENDED}
    remove = session.add_event_listener(lambda event: arrived.set() if event.kind in wake_on else None)
    deadline = time.monotonic() + timeout
    try:
        while True:
            arrived.clear()  # before looking, so nothing that arrives after the look is missed
            try:
                return session.wait_for_dtmf(timeout=0)
            except CallTimeoutError:
                pass
            try:
                key = choice_from_words(session.listen(timeout=0))
            except CallTimeoutError:
                key = None
            if key is not None:
                return key
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            arrived.wait(remaining)
    finally:
        remove()
