"""``CallAudio.watch_demand``: what tells the call loop whether to write each frame to a call's taps."""

from __future__ import annotations

from voice_runtime.recording import CallAudio
from voice_runtime.session import VoiceSession


class _Tap:
    def write_caller(self, chunk: bytes, at: float | None = None) -> None:
        pass

    def write_agent(self, chunk: bytes, at: float | None = None) -> None:
        pass

    def truncate_agent(self, at: float) -> None:
        pass

    def close(self) -> None:
        pass


def test_demand_follows_the_mixer_and_the_listeners_and_ends_with_close() -> None:
    session = VoiceSession()
    audio = CallAudio(session)
    seen: list[bool] = []
    audio.watch_demand(seen.append)
    assert seen == [False]  # told at once: nothing takes the audio
    session.set_mixer(_Tap())
    session.set_mixer(None)
    remove = audio.add_listener(_Tap())
    remove()
    session.pause_recording()  # a pause alone is no use for the audio
    assert seen == [False, True, False, True, False] and not audio.wants_audio
    session.set_mixer(_Tap())
    audio.close()
    assert seen[-2:] == [True, False]  # closed: nothing is fed any more, whatever is still set
    assert CallAudio(session, _Tap()).wants_audio  # a sink always takes it


def test_a_newer_call_audio_keeps_hearing_of_the_mixer_when_the_older_one_closes() -> None:
    """A reconnect gives the session a new ``CallAudio`` while the old connection may still be closing: the old
    one's close must not stop the new one from learning of ``set_mixer``."""
    session = VoiceSession()
    old, new = CallAudio(session), CallAudio(session)
    heard: list[bool] = []
    new.watch_demand(heard.append)
    old.close()
    session.set_mixer(_Tap())
    assert heard == [False, True]
