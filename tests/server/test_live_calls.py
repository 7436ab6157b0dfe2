"""The live calls page in a real headless Chromium during a simulated call, and its refusals without the token.

The browser is Debian's ``chromium`` (scripts/test.sh installs it as root), driven by Playwright's Python
package with ``executable_path``: Playwright never downloads a browser here.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from voice_runtime.audio import pcm16_to_ulaw
from voice_runtime.providers.mock import tone_speech
from voice_runtime.server.live import COOKIE, enable_live_calls

from ..conftest import CallHarness

TOKEN = "live-calls-test-token-0123"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def _serve(harness: CallHarness, release: threading.Event, spoke: threading.Event) -> tuple[Any, Any, Any]:
    def flow(session: Any) -> None:
        while not release.is_set() and not session.is_disconnected:  # keep talking until the test is done
            session.speak("Agent speaking on a live call.", wait=True, timeout=20)
            spoke.set()
        session.hangup(timeout=5)

    server, running = harness.serve(flow, script=["hello"])
    board = enable_live_calls(server, token=TOKEN)
    return server, running, board


def test_page_and_sockets_are_refused_without_the_token(harness: CallHarness, tmp_path: Path) -> None:
    release, spoke = threading.Event(), threading.Event()
    server, running, board = _serve(harness, release, spoke)
    phone = harness.phone(running, custom_parameters={"From": "+15550001111"})
    try:
        assert spoke.wait(10)
        (call,) = board.calls()
        base = running.http_url + "/calls"
        with httpx.Client(timeout=5) as http:
            refused = http.get(base)
            assert refused.status_code == 401 and "+15550001111" not in refused.text and "/data" not in refused.text
            assert http.get(base + "/data").status_code == 401
            assert http.get(base + "/data", headers={"Authorization": "Bearer wrong-token-xxxxxx"}).status_code == 401
            assert http.post(base + "/login", data={"token": "wrong-token-xxxxxx"}, follow_redirects=False).status_code == 401
            ok = http.get(base + "/data", headers={"Authorization": f"Bearer {TOKEN}"})
            assert ok.status_code == 200 and ok.json()["calls"][0]["from"] == "+15550001111"
            login = http.post(base + "/login", data={"token": TOKEN}, follow_redirects=False)
            assert login.status_code == 303
            cookie = login.cookies[COOKIE]
            assert TOKEN not in cookie and "httponly" in login.headers["set-cookie"].lower()

        async def attempt(path: str, headers: dict[str, str]) -> int | None:
            try:
                async with websockets.connect(running.ws_url + path, additional_headers=headers, open_timeout=5) as ws:
                    await ws.recv()
                    return None  # accepted
            except websockets.InvalidStatus as exc:
                return exc.response.status_code

        for kind in ("events", "listen"):
            path = f"/calls/{call.key}/{kind}"
            assert asyncio.run(attempt(path, {})) == 403
            assert asyncio.run(attempt(path, {"Cookie": f"{COOKIE}=forged"})) == 403
            same_site = {"Cookie": f"{COOKIE}={cookie}", "Origin": running.http_url}
            assert asyncio.run(attempt(path, {**same_site, "Origin": "http://evil.example"})) == 403
            assert asyncio.run(attempt(path, same_site)) is None  # the right cookie from the page's origin works
    finally:
        release.set()
        phone.wait_closed(20)


def test_enable_live_calls_fails_closed_without_a_token(harness: CallHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VOICE_LIVE_TOKEN", raising=False)
    server, _ = harness.serve(lambda session: None)
    with pytest.raises(ValueError, match="needs a token"):
        enable_live_calls(server)
    with pytest.raises(ValueError, match="at least 12"):
        enable_live_calls(server, token="short")


def test_live_calls_page_in_headless_chromium(harness: CallHarness, tmp_path: Path) -> None:
    if CHROMIUM is None:
        pytest.skip("needs Debian's chromium: apt-get install chromium (scripts/test.sh installs it when run as root)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package (the [dev] extra)")
    release, spoke = threading.Event(), threading.Event()
    server, running, board = _serve(harness, release, spoke)
    base = running.http_url + "/calls"
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS
        )
        try:
            page = context.new_page()
            response = page.goto(base)
            assert response is not None and response.status == 401  # the login form, not the page
            page.fill("input[name=token]", TOKEN)
            page.click("button[type=submit]")
            page.wait_for_selector("#empty", state="visible", timeout=10_000)  # signed in: no calls yet

            phone = harness.phone(running, custom_parameters={"From": "+15550002222", "To": "+15550003333"})
            call_id = phone.codec.call_id
            row = page.wait_for_selector(f"tr[data-call-id='{call_id}']", timeout=10_000)
            assert row is not None
            cells = row.inner_text()
            assert "+15550002222" in cells and "+15550003333" in cells and "twilio" in cells and "live" in cells

            row.click()  # its events stream in: the history, then live ones
            page.wait_for_function("window.__vr.events.includes('stream_started')", timeout=10_000)
            seen = page.evaluate("window.__vr.eventsReceived")
            page.wait_for_function(f"window.__vr.eventsReceived > {seen} && window.__vr.events.includes('mark_played')", timeout=20_000)

            phone.say(pcm16_to_ulaw(tone_speech(1.0)))  # the caller talks: the latency column fills in
            page.click("#listen")  # and we listen in: mixed audio arrives over the socket and is played
            page.wait_for_function("window.__vr.audioBytes >= 16000", timeout=15_000)  # >= 0.5 s of 8 kHz PCM16
            assert page.evaluate("window.__vr.audioPeak") > 1000  # real speech, not silence
            # The caller's turn was answered: the row shows the last turn latency in ms.
            page.wait_for_function(
                f"[...document.querySelectorAll(\"tr[data-call-id='{call_id}'] td\")].some(td => / ms$/.test(td.textContent))",
                timeout=15_000,
            )

            release.set()  # the flow hangs up: the events socket ends and the row disappears
            assert phone.wait_closed(20)
            page.wait_for_function("window.__vr.events.includes('call_ended') && window.__vr.eventsClosed", timeout=10_000)
            page.wait_for_selector(f"tr[data-call-id='{call_id}']", state="detached", timeout=10_000)
            assert board.listing()["count"] == 0
        finally:
            release.set()
            context.close()
