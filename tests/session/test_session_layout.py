"""The session's hot attributes are slots (``VoiceSession.__slots__``): what users do with sessions still works.

Users subclass the session (FSM tool nodes), give it class-level defaults and attributes of their own, keep weak
references to it and read ``vars(session)``; none of that may change because the per-frame attributes moved out
of the instance dict.
"""

from __future__ import annotations

import time
import weakref

from voice_runtime import VoiceSession
from voice_runtime.protocols.twilio import TwilioDialect
from voice_runtime.session.outbound import OutboundQueue


class ToolNode(VoiceSession):
    background_mixer = None  # a subclass default that shadows one of the base's slots
    greeting = "hello"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.visits = 0


def test_a_subclass_keeps_its_defaults_and_its_own_attributes() -> None:
    node = ToolNode(call_sid="CA1")
    node.visits += 1
    node.extra = {"k": 1}  # type: ignore[attr-defined]  # an attribute nobody declared
    assert (node.visits, node.greeting, node.extra, node.background_mixer) == (1, "hello", {"k": 1}, None)
    node.background_mixer = "bed"
    assert node.background_mixer == "bed" and ToolNode.background_mixer is None
    assert vars(node)["visits"] == 1  # the instance dict is still there for everything not slotted


def test_sessions_and_dialects_can_be_weakly_referenced() -> None:
    session, dialect = VoiceSession(), TwilioDialect()
    refs = weakref.ref(session), weakref.ref(dialect)
    assert refs[0]() is session and refs[1]() is dialect
    dialect.custom = 1  # type: ignore[attr-defined]  # dialect subclasses keep their own attributes
    assert vars(dialect)["custom"] == 1


def test_playout_estimate_drives_agent_speaking() -> None:
    """``set_playout_until`` (per frame, from the transport) is what ``agent_speaking`` reads."""
    session = VoiceSession()
    assert session.agent_speaking is False
    session.set_playout_until(time.monotonic() + 60)
    assert session.agent_speaking is True
    session.set_playout_until(0.0)
    assert session.agent_speaking is False


def test_the_outbound_queue_exposes_its_items_read_only() -> None:
    queue = OutboundQueue(1.0)
    assert not queue.items and queue.pump_idle
    assert queue.push_audio(b"\xff" * 160) is True  # the idle transport must be woken
    assert len(queue.items) == 1 and queue.pending and not queue.pump_idle
