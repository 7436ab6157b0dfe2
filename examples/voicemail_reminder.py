"""An outbound appointment reminder: talk to a person, or leave a voicemail after the machine's beep.

Twilio dials with ``machine_detection="DetectMessageEnd"``: its async AMD callback says ``human``, or
``machine_end_beep`` / ``machine_end_silence`` once the greeting is over. ``leave_voicemail`` waits for that —
or for the beep on the line itself, the fallback on carriers whose AMD says only "machine".

Run offline: ``python -m examples.voicemail_reminder`` (fake Twilio; the simulated callee is an answering
machine that plays a greeting and a 1 kHz beep, and AMD is slow, so the beep detector decides; with
``--human`` the fake reports ``AnsweredBy=human`` and the callee presses 1).
"""

from __future__ import annotations

from typing import Any

from voice_runtime import VoiceSession
from voice_runtime.conversation import GreetingEnd

REMINDER = "Hello, this is Example Clinic reminding you of your appointment tomorrow at nine. Call us to reschedule."


def remind(session: VoiceSession) -> dict[str, Any]:
    """The flow for one dialled call. Returns what happened (``talked`` or the voicemail's result).

    One wait covers every answer: ``leave_voicemail(if_human="return")`` returns at once on AMD ``human`` and
    otherwise listens for the machine's beep *from the start of the call*. (Waiting for AMD first with
    ``answered_by_or_none`` and only then calling ``leave_voicemail`` can let a short greeting's beep pass
    unheard.)
    """
    result = session.leave_voicemail(REMINDER, if_human="return", timeout=30)
    if result.reason is GreetingEnd.HUMAN:
        session.speak(REMINDER, wait=True)
        answer = session.gather("Press 1 to confirm, or 2 to reschedule.", speech=False, num_digits=1, timeout=5)
        return {"talked": True, "choice": answer.value}
    return {"talked": False, "reason": str(result.reason), "delivered": result.delivered}


def main(human: bool = False) -> dict[str, Any]:
    import threading

    import numpy as np

    from examples._offline import offline_server
    from voice_runtime.audio.g711 import pcm16_to_ulaw
    from voice_runtime.providers.mock import tone_speech
    from voice_runtime.testing.fake_twilio import FakeTwilio
    from voice_runtime.testing.phone import to_ulaw
    from voice_runtime.transports.twilio_control import TwilioCallControl

    t = np.arange(2400) / 8000
    beep = pcm16_to_ulaw((8000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16))
    greeting = to_ulaw(tone_speech(2.0)) + b"\xff" * 2400 + beep  # "leave a message after the tone" + beep

    def callee_answers(fake: FakeTwilio) -> None:
        call = fake.wait_for_call(10)
        phone = fake.answer(call.sid)
        if not human:
            phone.say(greeting)
            return
        fake.send_amd(call.sid, "human", duration_ms=900)
        first = phone.wait_for("mark_echoed", 15)  # the reminder was heard
        phone.wait_for("playback_start", 15, after=first.at + 1e-6)  # the confirm prompt started
        phone.press("1")

    with FakeTwilio() as fake, offline_server() as (server, running):
        control = TwilioCallControl(server, credentials=fake.credentials(), http_client=fake.http_client())
        threading.Thread(target=callee_answers, args=(fake,), daemon=True).start()
        with control.call("+15551234567", answer_timeout=10, machine_detection="DetectMessageEnd") as session:
            outcome = remind(session)
    print("reminder:", outcome)
    return outcome


if __name__ == "__main__":
    import sys

    main(human="--human" in sys.argv)
