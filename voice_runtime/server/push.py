"""The push contract between a wire and the call it serves: ``wire.push_to(deliver, ended)``.

Why a contract of its own: a wire that can push (picows' frame callback, uvicorn's parser callback through the
direct channel) hands every carrier message to the call straight from its protocol callback, 50 times a second
per call. So the call's side is ``deliver``, the connection's ``_dispatch`` run in the call's context
(``functools.partial(context.run, dispatch)``: C calls only, no Python wrapper per message), and what a
wrapper used to do per message (stop after the end, survive a bug) is the wire's, once per call:

* ``deliver(message)`` for each message, in order. ``None`` means go on. Anything else means the call is over
  (an end reason): the wire stops delivering and calls ``ended(result)``.
* If ``deliver`` raises an ``Exception`` (a bug), the wire calls ``ended(exc)`` with it: that ends this call,
  never the socket library's callback, and so never another call.
* When the socket closes first, the wire calls ``ended(None)``.

``ended`` is called once, whichever comes first; later messages are dropped unread.
"""

from __future__ import annotations

from collections.abc import Callable

#: ``deliver(message)``: None to go on, anything else ends the call (see the module docstring).
Deliver = Callable[[str | bytes], object]
#: ``ended(result)``: the end reason ``deliver`` returned, the exception it raised, or None (socket closed).
Ended = Callable[[object], None]


def deliver_one(deliver: Deliver, message: str | bytes) -> object:
    """``deliver(message)``, with a raised exception returned as the result (for a wire's rarer paths; the
    per-frame path inlines the same ``try``)."""
    try:
        return deliver(message)
    except Exception as exc:
        return exc


def discard(_message: str | bytes) -> None:
    """What a wire delivers to once the call is over: nothing more is read."""
    return None


__all__ = ["Deliver", "Ended", "deliver_one", "discard"]
