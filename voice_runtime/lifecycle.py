"""One call's lifecycle, as a table you can read (in the manner of h11's ``_state.py``).

A call is in exactly one :class:`CallState`. It moves only through :func:`next_state`, driven by a
:class:`Transition`; anything the table does not list is a :class:`~voice_runtime.errors.LocalProtocolError`,
never a silently ignored flag. ``VoiceSession`` applies each transition in one place, and that one place
wakes every waiter, resolves every mark and emits one ``state_changed`` event — so "is the call over?" has
exactly one answer, read from one field.

::

    AWAITING_STREAM ──STREAM_STARTED──▶ LIVE ──HANGUP_REQUESTED──▶ ENDING
          │                               │                          │
          └─────────────END───────────────┴───────────END────────────┴──▶ ENDED ──RESET──▶ AWAITING_STREAM

``END`` from ``ENDED`` is allowed and changes nothing (a hangup reported twice — the carrier's ``stop`` and
the socket closing — is normal). ``RESET`` exists for the prior art's sequential reuse of one session.

Why the reasons are an enum: about twenty end reasons used to be free strings spread over six files. A typed
:class:`EndReason` can be counted in metrics without a cardinality explosion and compared without typos; it
is a ``StrEnum``, so ``session.end_reason == "busy"`` keeps working.
"""

from __future__ import annotations

from enum import Enum, StrEnum

from voice_runtime.errors import LocalProtocolError

__all__ = ["CallState", "Transition", "EndReason", "TRANSITIONS", "next_state"]


class CallState(Enum):
    """Where one call is. Read it from ``session.state``."""

    AWAITING_STREAM = "awaiting_stream"  # created (dialled, or answered by a webhook); no media yet
    LIVE = "live"  # the carrier's ``start`` arrived: audio flows both ways
    ENDING = "ending"  # we asked to hang up; the carrier has not confirmed yet
    ENDED = "ended"  # over, for whatever reason; every waiter has been released

    def __str__(self) -> str:
        return self.value


class Transition(Enum):
    STREAM_STARTED = "stream_started"
    HANGUP_REQUESTED = "hangup_requested"
    END = "end"
    RESET = "reset"


#: The whole lifecycle. ``TRANSITIONS[state][transition]`` is the next state; a missing entry is illegal.
TRANSITIONS: dict[CallState, dict[Transition, CallState]] = {
    CallState.AWAITING_STREAM: {
        Transition.STREAM_STARTED: CallState.LIVE,
        Transition.HANGUP_REQUESTED: CallState.ENDING,  # cancelling a dial that has not been answered
        Transition.END: CallState.ENDED,
        Transition.RESET: CallState.AWAITING_STREAM,
    },
    CallState.LIVE: {
        Transition.HANGUP_REQUESTED: CallState.ENDING,
        Transition.END: CallState.ENDED,
        Transition.RESET: CallState.AWAITING_STREAM,  # reset ends the old call first
    },
    CallState.ENDING: {
        Transition.HANGUP_REQUESTED: CallState.ENDING,  # asking twice is harmless
        Transition.END: CallState.ENDED,
        Transition.RESET: CallState.AWAITING_STREAM,
    },
    CallState.ENDED: {
        Transition.HANGUP_REQUESTED: CallState.ENDED,  # nothing left to hang up
        Transition.END: CallState.ENDED,
        Transition.RESET: CallState.AWAITING_STREAM,
    },
}


def next_state(state: CallState, transition: Transition) -> CallState:
    """The state after ``transition``; raises :class:`LocalProtocolError` for a move the table forbids."""
    try:
        return TRANSITIONS[state][transition]
    except KeyError:
        raise LocalProtocolError(f"illegal call transition {transition.value} in state {state.value}") from None


class EndReason(StrEnum):
    """Why a call ended (``session.end_reason``, the ``call_ended`` event, metrics labels)."""

    # The carrier side
    CARRIER_STOP = "carrier_stop"  # the carrier sent ``stop``: the caller (or the carrier) hung up
    CARRIER_CLOSED = "carrier_closed"  # the carrier socket closed without ``stop``
    SEND_FAILED = "send_failed"  # writing to the carrier socket failed: it is gone
    PROTOCOL_ERRORS = "protocol_errors"  # too many malformed messages: closed 1008
    START_TIMEOUT = "start_timeout"  # connected, but no ``start`` in time
    NO_START = "no_start"  # the opening messages were not a stream start
    CLOSED_BEFORE_START = "closed_before_start"
    REFUSED = "refused"  # the stream matched no session
    STREAM_ERROR = "stream_error"  # the carrier reported the stream failed before it started
    STREAM_NEVER_CONNECTED = "stream_never_connected"  # answered, but the stream never arrived
    # Carrier call statuses (status callbacks) that end a call
    COMPLETED = "completed"
    BUSY = "busy"
    NO_ANSWER = "no-answer"
    FAILED = "failed"
    CANCELED = "canceled"
    REJECTED = "rejected"
    TIMEOUT = "timeout"
    # Our side
    HANGUP = "hangup"  # the flow (or the runtime) hung up
    HANGUP_BEFORE_CONNECT = "hangup_before_connect"
    SERVER_SHUTDOWN = "server_shutdown"  # a drain reached its deadline
    PUMP_FAILED = "pump_failed"  # an internal error in the outbound pump
    PROVIDER_FAILED = "provider_failed"  # a provider factory raised: the call could not be set up
    IDLE = "idle"  # the idle policy said goodbye
    MAX_DURATION = "max_duration"  # the call reached its maximum duration
    RESET = "reset"  # prior-art sequential reuse: the old call was ended to start a new one
    DISCONNECTED = "disconnected"  # a transport reported an end without saying why
    OTHER = "other"  # a free-text reason from user code (kept as the event's ``detail``)

    @classmethod
    def coerce(cls, value: EndReason | str) -> EndReason:
        """A known reason for ``value``; unknown free text becomes :attr:`OTHER`.

        Carrier spellings are normalised (``"hangup"`` from a Plivo callback is a completed call, ``"cancel"``
        is ``canceled``), so every carrier ends calls with the same vocabulary.
        """
        if isinstance(value, cls):
            return value
        text = str(value).strip().lower()
        text = _ALIASES.get(text, text)
        try:
            return cls(text)
        except ValueError:
            return cls.OTHER


_ALIASES = {"cancel": "canceled", "cancelled": "canceled", "no_answer": "no-answer", "noanswer": "no-answer"}

#: Carrier statuses after which no media stream will ever arrive (the call was never answered).
NOT_ANSWERED = frozenset(
    {EndReason.BUSY, EndReason.NO_ANSWER, EndReason.FAILED, EndReason.CANCELED, EndReason.REJECTED, EndReason.TIMEOUT}
)
