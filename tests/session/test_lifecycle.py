"""The call lifecycle table and the session rules built on it (one transition function, typed reasons)."""

from __future__ import annotations

import threading

import pytest

from voice_runtime import call_events as ev
from voice_runtime.errors import CallHangupError, CallTimeoutError, ConcurrencyError, LocalProtocolError
from voice_runtime.lifecycle import TRANSITIONS, CallState, EndReason, Transition, next_state
from voice_runtime.marks import MarkOutcome
from voice_runtime.session import VoiceSession


class NullLink:
    supports_dtmf_out = False

    def wake(self) -> None: ...

    def clear(self) -> None: ...

    def disconnect(self) -> None: ...

    def send_dtmf(self, digits: str) -> None: ...


def test_the_table_lists_every_state_and_every_move_out_of_it() -> None:
    assert set(TRANSITIONS) == set(CallState)
    assert next_state(CallState.AWAITING_STREAM, Transition.STREAM_STARTED) is CallState.LIVE
    assert next_state(CallState.LIVE, Transition.HANGUP_REQUESTED) is CallState.ENDING
    assert next_state(CallState.ENDING, Transition.END) is CallState.ENDED
    assert next_state(CallState.ENDED, Transition.END) is CallState.ENDED  # a second report changes nothing
    for state in (CallState.LIVE, CallState.ENDING, CallState.ENDED):
        with pytest.raises(LocalProtocolError, match="illegal call transition stream_started"):
            next_state(state, Transition.STREAM_STARTED)


def test_end_reasons_are_typed_and_normalise_carrier_spellings() -> None:
    assert EndReason.coerce("busy") is EndReason.BUSY and EndReason.BUSY == "busy"
    assert EndReason.coerce("cancel") is EndReason.CANCELED
    assert EndReason.coerce("No-Answer") is EndReason.NO_ANSWER
    assert EndReason.coerce("the caller sneezed") is EndReason.OTHER


async def test_a_second_stream_start_on_a_live_call_is_a_local_protocol_error() -> None:
    import asyncio

    session = VoiceSession()
    loop = asyncio.get_running_loop()
    session.attach_stream(loop, NullLink(), stream_id="MZ1", call_id="CA1", carrier="twilio")
    assert session.state is CallState.LIVE
    with pytest.raises(LocalProtocolError):
        session.attach_stream(loop, NullLink(), stream_id="MZ2", call_id="CA1", carrier="twilio")
    session.signal_disconnected("carrier_stop")
    with pytest.raises(LocalProtocolError):
        session.attach_stream(loop, NullLink(), stream_id="MZ3", call_id="CA1", carrier="twilio")


def test_every_state_change_emits_one_event_and_the_end_is_reported_once() -> None:
    ended: list[int] = []
    session = VoiceSession(on_disconnected=lambda: ended.append(1))
    mark = session.send_mark("queued")
    session.signal_disconnected("busy")
    session.signal_disconnected("completed")  # a second report: ignored
    changes = [(e.data["old"], e.data["new"]) for e in session.events if e.kind == ev.STATE_CHANGED]
    assert changes == [(CallState.AWAITING_STREAM, CallState.ENDED)]
    assert [e.data["reason"] for e in session.events if e.kind == ev.CALL_ENDED] == [EndReason.BUSY]
    assert ended == [1] and session.end_reason is EndReason.BUSY
    assert mark.outcome is MarkOutcome.HUNG_UP
    assert [e.data["name"] for e in session.events if e.kind == ev.MARK_HUNG_UP] == ["queued"]


def test_two_threads_listening_at_once_is_refused_not_raced() -> None:
    import queue

    session = VoiceSession()
    results: queue.Queue[object] = queue.Queue()

    def listener() -> None:
        try:
            results.put(session.listen(timeout=10))
        except Exception as exc:  # the second listener's ConcurrencyError comes back here
            results.put(exc)

    threads = [threading.Thread(target=listener) for _ in range(2)]
    for thread in threads:
        thread.start()
    # Whichever thread arrives second finds the first waiting and is refused at once; the first keeps waiting.
    first = results.get(timeout=5)
    assert isinstance(first, ConcurrencyError)
    session.inject_transcript("hello")
    assert results.get(timeout=5) == "hello"
    for thread in threads:
        thread.join(5)


def test_hangup_follows_the_rules_of_every_wait() -> None:
    import asyncio

    session = VoiceSession()
    loop = asyncio.new_event_loop()
    try:
        session.attach_stream(loop, NullLink(), stream_id="MZ1", call_id="CA1", carrier="twilio")
        # The transport never ends this call (the loop does not even run): hangup raises at its deadline.
        with pytest.raises(CallTimeoutError):
            session.hangup(timeout=0.05)
        assert session.state is CallState.ENDING
        session.signal_disconnected("hangup")
        assert session.hangup(timeout=1) is True and session.end_reason is EndReason.HANGUP
    finally:
        loop.close()
