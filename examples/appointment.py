"""Appointment confirmation: ask one question, branch on the answer, confirm or hand over, hang up.

    voice-runtime console examples/appointment.py:flow                    # you are the patient
    voice-runtime serve examples/appointment.py:flow --stt local --tts local \\
        --carrier twilio --public-url https://<your tunnel>             # real inbound calls
    voice-runtime call +15551234567 examples/appointment.py:flow --carrier twilio --public-url https://...
"""

from __future__ import annotations

import re

from voice_runtime import CallTimeoutError

QUESTION = "Hello, this is Sunny Dental. Can you make your appointment tomorrow at three?"
CONFIRMED = "Great, you are all set for tomorrow at three. Goodbye!"
RESCHEDULE = "No problem. Our front desk will call you to find a better time. Goodbye!"
NO_ANSWER = "Sorry, I could not hear you. We will call back later. Goodbye!"

YES = {"yes", "yeah", "yep", "sure", "works", "fine", "okay", "ok", "correct", "confirm"}
NO = {"no", "not", "cannot", "can't", "busy", "reschedule", "later"}


def classify(answer: str) -> str:
    """``confirmed``, ``reschedule`` or ``unclear`` from the words of one answer."""
    said = set(re.findall(r"[a-z']+", answer.lower()))
    if said & NO and "works" not in said:
        return "reschedule"
    if said & YES:
        return "confirmed"
    return "unclear"


def flow(session) -> str:
    """Ask twice at most; returns the branch taken (handy in tests)."""
    branch = "unclear"
    prompt = QUESTION
    for _attempt in range(2):
        try:
            answer = session.say_and_listen(prompt, timeout=10)
        except CallTimeoutError:
            break
        branch = classify(answer)
        if branch != "unclear":
            break
        prompt = "Sorry, I did not catch that. Is tomorrow at three okay? Please say yes or no."
    closing = {"confirmed": CONFIRMED, "reschedule": RESCHEDULE}.get(branch, NO_ANSWER)
    session.speak(closing, wait=True, timeout=30)
    session.hangup()
    return branch
