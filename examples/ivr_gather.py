"""An IVR menu with ``gather``: press or say an option, reprompt on silence or nonsense, route the call.

Run offline: ``python -m examples.ivr_gather`` (a simulated caller presses 1, then types an account number).
"""

from __future__ import annotations

from voice_runtime import VoiceSession
from voice_runtime.conversation import GatherKind

MENU = "Welcome to Example Bank. For your balance press 1 or say balance. For an agent press 2 or say agent."
OPTIONS = {"1": "balance", "2": "agent", "balance": "balance", "agent": "agent"}


def choose(value: str) -> str | None:
    """Validator: a key or a spoken word → the option's name (None: no match, so gather reprompts)."""
    value = value.strip().lower()
    return OPTIONS.get(value) or next((name for word, name in OPTIONS.items() if word in value.split()), None)


def ivr(session: VoiceSession) -> str:
    """The flow: returns the route taken (``balance``, ``agent`` or ``goodbye``)."""
    menu = session.gather(
        MENU,
        num_digits=1,
        timeout=5,
        reprompts=["Sorry, I didn't catch that. Press 1 for your balance or 2 for an agent."],
        no_match_prompts=["That is not an option. Press 1 for your balance or 2 for an agent."],
        max_attempts=3,
        validate=choose,
    )
    if not menu.ok:
        session.speak("Sorry we could not help you today. Goodbye.", wait=True)
        return "goodbye"
    if menu.value == "agent":
        session.speak("Connecting you to an agent.", wait=True)  # a real IVR would transfer here
        return "agent"
    account = session.gather(
        "Please enter your account number, then press hash.",
        speech=False,
        timeout=6,
        validate=lambda digits: len(digits) == 6,
        no_match_prompts=["Account numbers have six digits. Please enter it again, then hash."],
    )
    if account.kind is GatherKind.DIGITS:
        session.speak(f"The balance of account {' '.join(account.value)} is 42 dollars.", wait=True)
    else:
        session.speak("Sorry, I could not get your account number. Goodbye.", wait=True)
    return "balance"


def main() -> dict[str, object]:
    from examples._offline import inbound_call, offline_server

    with offline_server() as (server, running):
        run, phone = inbound_call(server, running, ivr)
        phone.wait_for("playback_start", 15)
        phone.press("1")  # interrupts the menu: the agent's audio is cleared at once
        cleared = phone.wait_for("clear", 15)
        phone.wait_for("playback_start", 15, after=cleared.at)  # the account-number prompt has started
        phone.press("123456#")  # keys during a prompt interrupt it too
        route = run.wait(30)
        phone.wait_closed(10)
        print("route:", route)
        for line in run.said:
            print("agent:", line)
        return {"route": route, "said": run.said}


if __name__ == "__main__":
    main()
