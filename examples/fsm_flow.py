"""A finite-state call flow: each state is a method of a ``VoiceSession`` subclass that returns the next state.

The pattern for FSM (and graph) "tool nodes": put the call's domain actions on your own session class, give
it to the server with ``VoiceServer(session_class=BookingSession)`` — inbound and dialled calls then get it —
and keep the control flow a plain table. Every state is ordinary sequential code over blocking intents, so a
state can be unit-tested with the SimulatedPhone like any flow, and the machine is bounded (``max_steps``).

Run offline: ``python -m examples.fsm_flow`` (a simulated caller books a table for four, says yes).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from voice_runtime import CallTimeoutError, VoiceServer, VoiceSession
from voice_runtime.conversation import GatherKind


class State(StrEnum):
    GREET = "greet"
    PARTY_SIZE = "party_size"
    CONFIRM = "confirm"
    BOOKED = "booked"
    GIVE_UP = "give_up"
    DONE = "done"


class BookingSession(VoiceSession):
    """The call, with the booking's data and one method per state (the FSM's nodes)."""

    party: int | None = None
    trail: list[str]

    def __post_init__(self) -> None:
        super().__post_init__()
        self.trail = []

    def greet(self) -> State:
        self.speak("Hello, this is Example Bistro.", wait=True)
        return State.PARTY_SIZE

    def party_size(self) -> State:
        answer = self.gather(
            "For how many people? Press or say a number.",
            num_digits=1,
            timeout=5,
            validate=_number,
            reprompts=["How many people will be dining?"],
        )
        if not answer.ok:
            return State.GIVE_UP
        self.party = int(answer.value)
        return State.CONFIRM

    def confirm(self) -> State:
        try:
            reply = self.say_and_listen(f"A table for {self.party}, is that right?", timeout=6)
        except CallTimeoutError:
            return State.GIVE_UP
        return State.BOOKED if "yes" in reply.lower().split() else State.PARTY_SIZE

    def booked(self) -> State:
        self.speak(f"Done: a table for {self.party} tonight. Goodbye!", wait=True)
        return State.DONE

    def give_up(self) -> State:
        self.speak("Sorry, let's try another time. Goodbye.", wait=True)
        return State.DONE


WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9}


def _number(value: str) -> str | None:
    value = value.strip().lower()
    if value.isdigit() and 0 < int(value) < 10:
        return value
    return next((str(n) for word, n in WORDS.items() if word in value.split()), None)


def run_fsm(session: BookingSession, start: State = State.GREET, *, max_steps: int = 20) -> list[str]:
    """Drive the machine from ``start`` until DONE; returns the states visited. Raises on an unknown state."""
    handlers: dict[State, Callable[[], State]] = {
        State.GREET: session.greet,
        State.PARTY_SIZE: session.party_size,
        State.CONFIRM: session.confirm,
        State.BOOKED: session.booked,
        State.GIVE_UP: session.give_up,
    }
    state = start
    for _ in range(max_steps):
        session.trail.append(str(state))
        if state is State.DONE:
            return session.trail
        state = handlers[state]()
    raise RuntimeError(f"the booking FSM did not finish within {max_steps} steps: {session.trail}")


def make_server(**kwargs: object) -> VoiceServer:
    """The production wiring: every call of this server is a BookingSession running the FSM."""
    server = VoiceServer(session_class=BookingSession, **kwargs)  # type: ignore[arg-type]
    server.on_inbound_call(run_fsm)
    return server


def main() -> dict[str, object]:
    from examples._offline import inbound_call, next_mark, offline_server
    from voice_runtime.providers.mock import tone_speech

    with offline_server(script=["four please", "yes"], session_class=BookingSession) as (server, running):
        run, phone = inbound_call(server, running, run_fsm)
        greeting = next_mark(phone)
        question = next_mark(phone, greeting)  # "for how many people?" heard
        phone.say(tone_speech(0.6))  # "four please"
        next_mark(phone, question)  # "a table for 4, is that right?" heard
        phone.say(tone_speech(0.4))  # "yes"
        trail = run.wait(30)
        phone.wait_closed(10)
        session = run.session
        assert isinstance(session, BookingSession)
        print("states:", " -> ".join(trail), "| party:", session.party)
        return {"trail": trail, "party": session.party, "said": run.said, "class": type(session).__name__}


if __name__ == "__main__":
    main()
