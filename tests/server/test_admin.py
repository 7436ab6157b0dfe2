"""The admin API on a real server: bearer auth (fail closed), the live-calls listing, dial request checks."""

from __future__ import annotations

import threading

import httpx
import pytest

from voice_runtime.call_events import CallEvent
from voice_runtime.providers.mock import tone_speech
from voice_runtime.server.admin import last_turn_latency

TOKEN = "test-admin-token-4f2a"


def _get(running, token: str | None = TOKEN, path: str = "/admin/calls") -> httpx.Response:  # type: ignore[no-untyped-def]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(running.http_url + path, headers=headers, timeout=5)


def test_disabled_without_a_configured_token(harness, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("VOICE_ADMIN_TOKEN", raising=False)
    _, running = harness.serve(None)
    response = _get(running, token="anything")
    assert response.status_code == 403 and "VOICE_ADMIN_TOKEN" in response.json()["error"]


@pytest.mark.parametrize("header", [None, "Basic dXNlcjpwYXNz", "Bearer wrong-token", "Bearer"])
def test_refuses_missing_or_wrong_credentials(harness, monkeypatch: pytest.MonkeyPatch, header: str | None) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("VOICE_ADMIN_TOKEN", TOKEN)
    _, running = harness.serve(None)
    response = httpx.get(running.http_url + "/admin/calls", headers={"Authorization": header} if header else {}, timeout=5)
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert TOKEN not in response.text


def test_lists_a_live_call_with_its_last_turn_latency(harness, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("VOICE_ADMIN_TOKEN", TOKEN)
    answered = threading.Event()
    release = threading.Event()

    def flow(session):  # type: ignore[no-untyped-def]
        heard = session.listen(timeout=20)
        session.speak(f"You said {heard}", wait=True, timeout=20)
        answered.set()
        release.wait(20)

    _, running = harness.serve(flow, script=["hello"])
    phone = harness.phone(running, custom_parameters={"from_number": "+15550107777", "to_number": "+15550108888"})
    phone.say(tone_speech(0.8), 8000)
    assert answered.wait(30)
    try:
        listing = _get(running).json()
    finally:
        release.set()
    assert listing["count"] == 1
    call = listing["calls"][0]
    assert call["carrier"] == "twilio" and call["from"] == "+15550107777" and call["to"] == "+15550108888"
    assert call["state"] == "live" and call["id"].startswith("CA") and call["stream_id"].startswith("MZ")
    assert call["duration_s"] > 0.5
    assert isinstance(call["last_turn_latency_ms"], int) and 0 <= call["last_turn_latency_ms"] < 5000


def test_last_turn_latency_pairs_each_answer_with_the_transcript_before_it() -> None:
    events = [
        CallEvent("tts_first_audio", 1.0),  # the greeting: no turn yet
        CallEvent("stt_final", 5.0),
        CallEvent("tts_first_audio", 5.4),
        CallEvent("tts_first_audio", 9.0),  # a second prompt without a new transcript: not a turn
        CallEvent("stt_final", 12.0),
        CallEvent("tts_first_audio", 12.25),
    ]
    assert last_turn_latency(events) == pytest.approx(0.25)
    assert last_turn_latency(events[:1]) is None
    assert last_turn_latency(events[:2]) is None


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"not json", 400, "body must be JSON"),
        (b'{"carrier": "twilio"}', 400, "need"),
        (b'{"to": "+15550001111", "carrier": "twilio"}', 409, "no twilio call control"),
    ],
)
def test_dial_request_checks(harness, monkeypatch: pytest.MonkeyPatch, body: bytes, status: int, message: str) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("VOICE_ADMIN_TOKEN", TOKEN)
    _, running = harness.serve(lambda s: None)
    response = httpx.post(running.http_url + "/admin/calls", content=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert response.status_code == status and message in response.json()["error"]
    unauthorized = httpx.post(running.http_url + "/admin/calls", content=body, timeout=5)
    assert unauthorized.status_code == 401
    missing = _get(running, path="/admin/calls/CAnope/events")
    assert missing.status_code == 404
