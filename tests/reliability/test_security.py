"""Security across carriers: hostile upgrades refused before any session state; secrets never in logs.

One server with *both* carriers' call controls registered (Twilio and Plivo validators side by side, as a
multi-carrier deployment runs), each pointed at its loopback fake. The per-carrier signature suites live in
tests/twilio and tests/plivo; this file checks what only shows up when everything runs together: that no
combination of missing, wrong, foreign or replayed credentials opens a stream, and that nothing any layer
logs at DEBUG during whole calls (ours, the SDKs', httpx, websockets, uvicorn) contains a secret.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from voice_runtime import VoiceServer, create_tts
from voice_runtime.errors import VoiceRuntimeError
from voice_runtime.providers.mock import MockStt
from voice_runtime.server import RunningServer
from voice_runtime.testing import PhoneRejected, SimulatedPhone

# Imported, not importorskip'd: these are the project's own modules on core dependencies only, so one that
# fails to import is a bug this suite must report, never a reason to skip the security tests.
from voice_runtime.testing import fake_plivo, fake_twilio
from voice_runtime.transports import plivo_control, twilio_control


@dataclass
class Stack:
    server: VoiceServer
    running: RunningServer
    twilio: Any
    plivo: Any
    fake_twilio: Any
    fake_plivo: Any
    stt_made: list[Any]


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    monkeypatch.delenv("TWILIO_SKIP_SIGNATURE_VALIDATION", raising=False)
    monkeypatch.delenv("VOICE_STREAM_URL", raising=False)
    stt_made: list[Any] = []

    def stt() -> Any:
        made = MockStt()
        stt_made.append(made)
        return made

    with fake_twilio.FakeTwilio() as ft:
        fp = fake_plivo.FakePlivo().start()
        server = VoiceServer(stt_factory=stt, tts_factory=lambda: create_tts("mock"))
        tw = twilio_control.TwilioCallControl(server, credentials=ft.credentials(), http_client=ft.http_client())
        pl = plivo_control.PlivoCallControl(
            server, auth_id=fp.auth_id, auth_token=fp.auth_token, api_base_url=fp.base_url, from_number="+14155550000"
        )
        running = server.start()
        server.public_url = pl.public_url = running.http_url
        try:
            yield Stack(server, running, tw, pl, ft, fp, stt_made)
        finally:
            running.stop()
            fp.stop()


def _refused(url: str, headers: dict[str, str], **kwargs: Any) -> None:
    phone = SimulatedPhone(url, headers=headers, **kwargs)
    try:
        with pytest.raises(PhoneRejected) as caught:
            phone.connect()
        assert caught.value.status == 403, f"{headers} got {caught.value}"
    finally:
        phone.close()


def test_hostile_upgrades_are_refused_before_any_session_state(stack: Stack) -> None:
    from twilio.request_validator import RequestValidator

    from voice_runtime.transports.plivo_security import sign as plivo_sign

    server, ft = stack.server, stack.fake_twilio
    tw_out = stack.twilio.dial("+15551230001")
    tw_call = ft.calls[tw_out.call_id]
    tw_url = tw_call.stream()[0]
    pl_out = stack.plivo.dial("+14155550123")
    pl_call = stack.fake_plivo.wait_for_call()
    pl_call.ring()
    assert pl_call.fetch_answer().status == 200
    pl_url = pl_call.stream_url
    pending = server.registry.pending_count
    made_before = list(stack.stt_made)  # the start-up config check builds one STT when the server starts
    inbound = stack.running.ws_url + "/stream"
    wrong_twilio = RequestValidator("not-the-auth-token").compute_signature(tw_url, {})
    plivo_nonce = "12345678901234567890"
    foreign_plivo = {  # a well-formed Plivo V3 signature made with the wrong token
        "X-Plivo-Signature-V3": plivo_sign("not-the-auth-token", "GET", pl_url.replace("ws://", "https://"), plivo_nonce),
        "X-Plivo-Signature-V3-Nonce": plivo_nonce,
    }
    attempts: list[tuple[str, dict[str, str]]] = [
        (inbound, {}),  # a stranger on the inbound endpoint
        (inbound, {"X-Twilio-Signature": "x" * 28}),  # garbage signature
        (inbound, foreign_plivo),
        (tw_url, {}),  # the right URL, unsigned
        (tw_url, {"X-Twilio-Signature": wrong_twilio}),  # signed with someone else's token
        (tw_url, {"X-Twilio-Signature": ft.sign(tw_url + "0")}),  # signed for another URL
        (tw_url, {**foreign_plivo}),  # the other carrier's header, forged
        (pl_url, {}),
        (pl_url, foreign_plivo),
        (pl_url, {"X-Twilio-Signature": ft.sign(pl_url)[:-4] + "AAA="}),  # tampered
        (stack.running.ws_url + "/stream/not-a-token", {"X-Twilio-Signature": ft.sign(stack.running.ws_url + "/stream/not-a-token")}),
    ]
    for url, headers in attempts:
        _refused(url, headers, carrier="plivo" if url == pl_url else "twilio")
        assert server.connections == set(), "a refused upgrade created a connection"
    assert server.registry.pending_count == pending, "a refused upgrade consumed a stream token"
    assert stack.stt_made == made_before, "a refused upgrade created provider sessions"

    # Genuine upgrades still work, once each: a replay of the same signed URL is refused.
    phone = ft.answer(tw_call.sid, callbacks=False)
    tw_headers = {"X-Twilio-Signature": ft.sign(tw_url)}
    plivo_phone = pl_call.connect_stream()
    try:
        # The phones see the handshake complete slightly before the server registers the connection: wait
        # for both streams to be live (their STT is built by then) rather than race the registration.
        tw_out.wait_answered(5)
        pl_out.wait_answered(5)
        assert len(server.connections) == 2
        _refused(tw_url, tw_headers)  # replayed token + valid signature
        _refused(pl_url, dict(plivo_phone.headers), carrier="plivo")
        assert len(server.connections) == 2 and len(stack.stt_made) == len(made_before) + 2
    finally:
        phone.hangup()
        plivo_phone.hangup()
    assert server.registry.pending_count == pending - 2


SECRET_LOGGERS = ("", "httpx", "httpcore", "urllib3", "twilio", "plivo", "websockets", "uvicorn", "voice_runtime")


class _Capture(logging.Handler):
    """Formats every record (message, args and traceback) exactly as a log file would receive it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def debug_logs() -> Iterator[_Capture]:
    capture = _Capture()
    root = logging.getLogger()
    previous = {name: logging.getLogger(name).level for name in SECRET_LOGGERS}
    root.addHandler(capture)
    for name in SECRET_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        for name, level in previous.items():
            logging.getLogger(name).setLevel(level)


def test_secrets_never_reach_logs_or_exception_messages(stack: Stack, debug_logs: _Capture) -> None:
    ft, fp = stack.fake_twilio, stack.fake_plivo
    secrets = [ft.auth_token, fp.auth_token]
    basic = [base64.b64encode(f"{user}:{token}".encode()).decode() for user, token in ((ft.account_sid, ft.auth_token), (fp.auth_id, fp.auth_token))]
    errors: list[str] = []

    # A whole Twilio call: dial, answer, speak, the flow hangs up over REST.
    outbound = stack.twilio.dial("+15551230002")
    phone = ft.answer(outbound.call_id)
    session = outbound.wait_answered(5)
    session.speak("Hello there.", wait=True, timeout=10)
    assert session.hangup(timeout=10)
    phone.close()

    # A whole Plivo call, the same way.
    pl_out = stack.plivo.dial("+14155550124")
    pl_call = fp.wait_for_call()
    pl_phone = pl_call.answer()
    pl_session = pl_out.wait_answered(5)
    pl_session.speak("Hello from Plivo.", wait=True, timeout=10)
    assert pl_session.hangup(timeout=10)
    pl_phone.close()

    # Failures carry messages that end up in logs and tracebacks.
    ft.fail_next("POST", r"/Calls\.json$", status=401, code=20003, message="Authenticate")
    with pytest.raises(VoiceRuntimeError) as failed:
        stack.twilio.dial("+15551230003")
    errors += [str(failed.value), repr(failed.value)]
    with pytest.raises(Exception) as bad_validation:
        twilio_control.TwilioCallControl(VoiceServer(), account_sid=ft.account_sid, auth_token="", http_client=ft.http_client())
    errors.append(str(bad_validation.value))

    text = "\n".join(debug_logs.lines + errors + [repr(stack.twilio), repr(stack.plivo)])
    assert len(debug_logs.lines) > 50, "DEBUG capture did not see the calls"
    for secret in secrets + basic:
        assert secret not in text, f"secret {secret[:4]}… found in logs or exception messages"


def test_the_elevenlabs_key_never_reaches_logs_or_exception_messages(debug_logs: _Capture) -> None:
    """The TTS stream goes through urllib3 under httpx (providers/urllib3_transport.py), which logs each request
    at DEBUG: the key travels in a header, and neither library may print it, nor may a failure's message."""
    import threading

    from voice_runtime.providers.elevenlabs_tts import ElevenLabsTts
    from voice_runtime.testing.fake_elevenlabs import FakeElevenLabs

    key = "sk_test_0123456789abcdef0123456789abcdef"
    with FakeElevenLabs(key) as fake, ElevenLabsTts(api_key=key, base_url=fake.http_url) as tts:
        audio = b"".join(tts.stream_audio("Hello there.", threading.Event()))
        fake.fail_tts(401)
        with pytest.raises(VoiceRuntimeError) as failed:
            list(tts.stream_audio("Again.", threading.Event()))
    assert audio  # the request went through, and was logged
    assert any(line.startswith("urllib3") for line in debug_logs.lines), "DEBUG capture did not see urllib3"
    text = "\n".join(debug_logs.lines + [str(failed.value), repr(failed.value), repr(tts)])
    assert key not in text
