"""An outbound reminder that leaves a voicemail when a machine answers.

    voice-runtime call +15551234567 examples/reminder.py:flow --amd --carrier twilio \\
        --public-url https://<your tunnel> --stt local --tts local
    # exit status 0: a person heard it; 6: a machine answered (the voicemail was left); 3/4/5: busy/no answer/failed

With ``--amd`` the carrier's answering-machine detection reports ``human`` or ``machine_*``
(``session.wait_for_answered_by``). A machine gets the message after the greeting's beep; a person gets it
live and can ask for it again.
"""

from __future__ import annotations

from voice_runtime import CallHangupError, CallTimeoutError

MESSAGE = "This is Sunny Dental with a reminder: your appointment is tomorrow at three in the afternoon."
VOICEMAIL_TAIL = "If you need to change it, please call us back. Goodbye!"
REPEAT_WORDS = {"repeat", "again", "what", "sorry", "pardon"}


def answered_by(session, timeout: float = 8.0) -> str:
    """``human`` or ``machine_*`` from AMD; ``unknown`` when detection is off or undecided in time."""
    try:
        return session.wait_for_answered_by(timeout=timeout)
    except CallTimeoutError:
        return "unknown"


def leave_message(session, text: str) -> None:
    """Leave ``text`` on a voicemail: the runtime's ``leave_voicemail`` when available, else speak it."""
    try:
        from voice_runtime import leave_voicemail  # being added to the runtime (waits for the beep)
    except ImportError:
        leave_voicemail = None
    if leave_voicemail is not None:
        leave_voicemail(session, text)
        return
    session.speak(text, wait=True, timeout=60)


def flow(session) -> str:
    """Returns ``voicemail`` or ``human`` (what the call turned out to be)."""
    who = answered_by(session)
    if who.startswith(("machine", "fax")):
        leave_message(session, f"{MESSAGE} {VOICEMAIL_TAIL}")
        session.hangup()
        return "voicemail"
    session.speak(MESSAGE, wait=True, timeout=60)
    try:
        reply = session.listen(timeout=6)
        if set(reply.lower().replace("?", " ").split()) & REPEAT_WORDS:
            session.speak(MESSAGE, wait=True, timeout=60)
    except (CallTimeoutError, CallHangupError):
        pass
    if not session.is_disconnected:
        session.speak("See you tomorrow. Goodbye!", wait=True, timeout=20)
        session.hangup()
    return "human"
