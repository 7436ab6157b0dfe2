"""A TTS provider drives a session only through the documented ProviderSession methods.

The session here is an object that offers exactly those four members (``__slots__``, nothing else), so any
other attribute a provider touched would raise ``AttributeError`` and fail the test.
"""

from __future__ import annotations

import threading

import pytest

from voice_runtime import create_tts
from voice_runtime.providers.base import PROVIDER_SESSION_METHODS, ProviderSession


class MinimalSession:
    __slots__ = ("_gone", "audio", "tapped", "marks", "mark_error")

    def __init__(self, *, gone: bool = False, mark_error: BaseException | None = None) -> None:
        self._gone = gone
        self.audio: list[bytes] = []
        self.tapped: list[bytes] = []
        self.marks: list[tuple[str, float]] = []
        self.mark_error = mark_error

    @property
    def is_disconnected(self) -> bool:
        return self._gone

    def put_outbound_sync(self, data: bytes) -> None:
        self.audio.append(data)

    def tap_agent(self, chunk: bytes) -> None:
        self.tapped.append(chunk)

    def send_mark_and_wait(self, mark_name: str, timeout: float = 10.0) -> None:
        self.marks.append((mark_name, timeout))
        if self.mark_error is not None:
            raise self.mark_error


def test_the_minimal_session_is_exactly_the_documented_contract() -> None:
    public = {name for name in dir(MinimalSession) if not name.startswith("_")} - set(MinimalSession.__slots__)
    assert public == set(PROVIDER_SESSION_METHODS)
    session: ProviderSession = MinimalSession()  # type-checks against the protocol
    assert session.is_disconnected is False


def test_speak_queues_taps_and_waits_for_its_mark() -> None:
    tts = create_tts("mock")
    session = MinimalSession()
    result = tts.speak("hello there", session)
    assert result == {"last_spoken": "hello there", "interrupted": False}
    assert session.audio and session.audio == session.tapped  # every chunk queued is also tapped
    assert sum(len(c) for c in session.audio) == len(tts.audio_for("hello there"))
    assert session.marks == [("tts_complete", tts.mark_timeout)]
    assert tts.spoken == ["hello there"]


def test_speak_on_a_finished_call_sends_nothing() -> None:
    session = MinimalSession(gone=True)
    result = create_tts("mock").speak("anyone?", session)
    assert result["call_disconnected"] is True and result["last_spoken"] == ""
    assert session.audio == [] and session.marks == []


def test_stop_event_interrupts_without_a_mark() -> None:
    stop = threading.Event()
    stop.set()
    session = MinimalSession()
    result = create_tts("mock").speak("cut me off", session, stop_event=stop)
    assert result["interrupted"] is True and session.marks == []


def test_failure_is_reported_once_and_not_raised() -> None:
    tts = create_tts("mock", fail_with="quota exceeded")
    errors: list[str] = []
    tts.on_error = errors.append
    session = MinimalSession()
    result = tts.speak("hi", session)
    assert "quota exceeded" in result["error"] and len(errors) == 1 and session.audio == []


def test_mark_timeout_is_logged_not_raised() -> None:
    session = MinimalSession(mark_error=TimeoutError("no echo"))
    assert create_tts("mock").speak("hi", session)["last_spoken"] == "hi"


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_text_is_a_no_op(text: str) -> None:
    session = MinimalSession()
    assert create_tts("mock").speak(text, session)["last_spoken"] == ""
    assert session.audio == [] and session.marks == []


def test_a_failed_speak_with_no_audio_does_not_wait_for_playback() -> None:
    """NC-260 Gap A: on a provider failure the flow gets the error now, not after a mark timeout."""
    import time

    from voice_runtime import VoiceSession

    session = VoiceSession()
    tts = create_tts("mock", fail_with="auth failed")
    errors: list[str] = []
    tts.on_error = errors.append
    started = time.monotonic()
    result = session.speak("hello", wait=True, timeout=30, tts=tts)
    assert "auth failed" in (result.error or "") and result.mark is None and len(errors) == 1
    assert time.monotonic() - started < 5  # bounded by the failure, not by the 30 s playback wait
