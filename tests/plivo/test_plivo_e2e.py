"""One call flow, written for Twilio, runs unchanged on Plivo (μ-law 8k, L16 8k, L16 16k) over real sockets.

The flow speaks and waits, waits on a mark, listens (mock STT timed by the phone's real tone speech), is
interrupted by ``request_clear_buffer`` while its speech sits in the carrier's buffer, reads a DTMF key and
sends DTMF. The simulated phone plays the carrier's side strictly: for Plivo it never acks a checkpoint that
was pending at ``clearAudio`` (only a ``clearedAudio``), so the test proves the session resolves such a
waiter as CLEARED by itself instead of hanging.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from voice_runtime import LocalProtocolError, MarkOutcome, VoiceSession
from voice_runtime.providers.mock import tone_speech
from voice_runtime.testing import SimulatedPhone

from .conftest import DEEP_BUFFER, PlivoRig

FORMATS = {
    "twilio": ("twilio", None),
    "plivo-mulaw-8k": ("plivo", "audio/x-mulaw;rate=8000"),
    "plivo-l16-8k": ("plivo", "audio/x-l16;rate=8000"),
    "plivo-l16-16k": ("plivo", "audio/x-l16;rate=16000"),
}

LONG_TEXT = "This is a long answer that the caller is going to interrupt before it has finished playing. " * 2


class Conversation:
    """The flow under test plus the gates the test thread uses to play the caller's part."""

    def __init__(self) -> None:
        self.out: dict[str, Any] = {}
        self.listening = threading.Event()
        self.long_queued = threading.Event()
        self.playing = threading.Event()
        self.want_dtmf = threading.Event()
        self.done = threading.Event()
        self.error: BaseException | None = None

    def flow(self, session: VoiceSession) -> None:
        """Written against the Twilio-era API only; nothing here knows which carrier it runs on."""
        out = self.out
        try:
            greeting = session.speak("Hello, thanks for calling the test line.", wait=True, timeout=10)
            out["greeting"] = greeting.mark.outcome if greeting.mark else None
            out["mark"] = session.send_mark_and_wait("after-greeting", timeout=5)
            self.listening.set()
            out["heard"] = session.listen(timeout=15)
            long = session.speak(LONG_TEXT, wait=False)
            checkpoint = session.send_mark("long-done")
            out["cleared_wire_names"] = [long.mark.wire_name, checkpoint.wire_name]  # type: ignore[union-attr]
            self.long_queued.set()
            assert self.playing.wait(10), "phone never started playing the long answer"
            session.request_clear_buffer()
            started = time.monotonic()
            out["long_outcome"] = long.wait(timeout=5)
            out["checkpoint_outcome"] = checkpoint.wait(timeout=5)
            out["clear_wait"] = time.monotonic() - started
            self.want_dtmf.set()
            out["digit"] = session.wait_for_dtmf(timeout=10)
            try:
                session.send_dtmf("12#", method="message")
                out["dtmf_out"] = "sent"
            except LocalProtocolError:  # Twilio has no DTMF message: the default falls back to in-band tones
                out["dtmf_out"] = "unsupported"
                out["tones"] = session.send_dtmf("12#").wait(10)
            out["carrier"] = session.carrier
        except BaseException as exc:  # surfaced to the test thread
            self.error = exc
        finally:
            self.done.set()

    def play_caller(self, phone: SimulatedPhone, *, expect_dtmf_out: bool) -> None:
        """The caller's side, driven from the test thread with event waits only."""
        assert self.listening.wait(15), "flow never reached listen()"
        phone.say(tone_speech(1.0))
        assert self.long_queued.wait(15), "flow never queued the long answer"
        last_checkpoint = self.out["cleared_wire_names"][-1]
        # the whole answer and its checkpoints are at the carrier (deep buffer) and playing: now interrupt
        phone.wait_for("mark", 10, lambda e: e.data["name"] == last_checkpoint)
        phone.wait_for("playback_start", 10, after=phone.wait_for("caller_speech_end", 1).at)
        self.playing.set()
        phone.wait_for("clear", 10)
        assert self.want_dtmf.wait(10), "flow never asked for DTMF"
        phone.press("7")
        if expect_dtmf_out:
            phone.wait_for("dtmf_out", 10)
        assert self.done.wait(15), "flow did not finish"
        if self.error is not None:
            raise self.error


def check_outcome(conv: Conversation, phone: SimulatedPhone, carrier: str) -> None:
    out = conv.out
    assert out["greeting"] is MarkOutcome.PLAYED
    assert out["mark"] is MarkOutcome.PLAYED
    assert out["heard"] == "yes please"
    # the waiter on audio that was at the carrier when the clear went out resolves CLEARED and does not hang
    assert out["long_outcome"] is MarkOutcome.CLEARED
    assert out["checkpoint_outcome"] is MarkOutcome.CLEARED
    assert out["clear_wait"] < 5.0  # i.e. it did not run into the wait's own timeout
    assert out["digit"] == "7"
    assert phone.violations == []
    clear = phone.wait_for("clear", 1)
    assert clear.data["pending_marks"] >= 1, "the clear should have found checkpoints pending at the carrier"
    echoed_cleared = set(out["cleared_wire_names"]) & set(phone.marks_echoed)
    if carrier == "plivo":
        assert out["dtmf_out"] == "sent"
        assert phone.wait_for("dtmf_out", 1).data["digits"] == "12#"
        assert echoed_cleared == set(), "Plivo never acks checkpoints pending at clearAudio"
    else:
        assert out["dtmf_out"] == "unsupported"
        assert out["tones"] is MarkOutcome.PLAYED and phone.tones_heard == "12#"  # in-band, decoded by the phone
        assert echoed_cleared  # Twilio echoes them; the session ignored those echoes


@pytest.mark.timeout(60)
@pytest.mark.parametrize("variant", list(FORMATS))
def test_same_flow_runs_on_every_carrier_and_format(rig: PlivoRig, variant: str) -> None:
    carrier, content_type = FORMATS[variant]
    conv = Conversation()
    server, running = rig.server(conv.flow, script=["yes please"], connection_config=DEEP_BUFFER)
    kwargs: dict[str, Any] = {"content_type": content_type} if content_type else {}
    phone = SimulatedPhone(running.ws_url + "/stream", carrier=carrier, **kwargs)
    rig.phones.append(phone)
    phone.connect()
    assert conv.listening.wait(15)
    connection = next(iter(server.connections))  # kept for its counters after the call ends
    conv.play_caller(phone, expect_dtmf_out=carrier == "plivo")
    check_outcome(conv, phone, carrier)
    assert conv.out["carrier"] == carrier
    if carrier == "plivo":
        # clearedAudio was sent before the "7" key on the same ordered socket, so it is counted by now
        assert connection.stats["clear_acked"] == 1  # the phone's clearedAudio was parsed and counted
        assert connection.stats["protocol_errors"] == 0


@pytest.mark.timeout(60)
def test_same_flow_through_plivo_inbound_answer_webhook(rig: PlivoRig) -> None:
    """Full stack: fake Plivo posts the signed answer webhook, follows the XML to a signed L16 16k stream."""
    conv = Conversation()
    server, running = rig.server(script=["yes please"], connection_config=DEEP_BUFFER)
    fake = rig.fake()
    control = rig.control(server, fake, content_type="audio/x-l16;rate=16000", inbound_flow=conv.flow)
    call = fake.inbound_call(control.webhook_url("answer"), from_="+14155550123", to="+14155550199")
    assert call.stream_attributes["contentType"] == "audio/x-l16;rate=16000"
    assert call.phone is not None
    conv.play_caller(call.phone, expect_dtmf_out=True)
    check_outcome(conv, call.phone, "plivo")
    assert control.validator.matched  # the webhook and the upgrade were signature-checked


@pytest.mark.timeout(60)
@pytest.mark.parametrize("content_type", ["audio/x-mulaw;rate=8000", "audio/x-l16;rate=16000"])
def test_large_batches_respect_plivo_message_limits(rig: PlivoRig, content_type: str) -> None:
    """Even when the connection is told to batch 10 s per message, every playAudio fits Plivo's limits."""
    from voice_runtime import ConnectionConfig

    done = threading.Event()
    outcome: dict[str, Any] = {}

    def flow(session: VoiceSession) -> None:
        try:
            outcome["speech"] = session.speak("word " * 25, wait=True, timeout=30).mark.outcome  # type: ignore[union-attr]
        finally:
            done.set()

    server, running = rig.server(flow, connection_config=ConnectionConfig(max_batch_seconds=10.0, playout_lead=60.0))
    phone = SimulatedPhone(running.ws_url + "/stream", carrier="plivo", content_type=content_type)
    rig.phones.append(phone)
    phone.connect()
    assert done.wait(45)
    assert outcome["speech"] is MarkOutcome.PLAYED
    assert phone.violations == []
    codec = phone.codec
    assert codec.max_message_bytes <= 64 * 1024  # type: ignore[attr-defined]
    assert codec.max_payload_b64 <= 16 * 1024  # type: ignore[attr-defined]  (Plivo's recommended chunk)
    assert codec.max_payload_b64 > 8 * 1024  # type: ignore[attr-defined]  (batching really was large)
    assert phone.media_bytes >= 8 * 8000  # ~9 s of speech arrived intact (in μ-law bytes)
