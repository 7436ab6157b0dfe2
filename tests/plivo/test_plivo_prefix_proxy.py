"""Plivo signatures behind a prefix-stripping proxy: ``X-Forwarded-Prefix`` from a trusted proxy is enough.

Plivo signs the URL it requested (``https://voice.example.com/w/3/plivo/answer/…``); a proxy that maps
``/w/3/`` to worker 3 and strips the prefix delivers ``/plivo/answer/…``. The call control rebuilds the signed
URL from the trusted ``X-Forwarded-Proto``/``-Host``/``-Prefix`` headers (``transports/forwarded.py``), so
one public host can front every worker by path. Here the test plays the proxy (loopback is a trusted proxy
address by default): each request goes to the worker's real port with the prefix stripped and the forwarded
headers set, signed exactly as Plivo signs the public URL.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

pytest.importorskip("plivo", reason="plivo SDK not installed: pip install voice-runtime[plivo]")

from voice_runtime import VoiceServer, create_tts
from voice_runtime.server.workers import WorkerAddress, install_worker
from voice_runtime.testing.fake_plivo import FakePlivo, plivo_sign_headers, ws_signature_uri
from voice_runtime.testing.phone import SimulatedPhone, PhoneRejected
from voice_runtime.transports.plivo_control import PlivoCallControl

PUBLIC = "https://voice.example.com/w/3"
FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "voice.example.com", "X-Forwarded-Prefix": "/w/3"}


@pytest.fixture
def worker() -> Iterator[tuple[Any, Any, FakePlivo]]:
    fake = FakePlivo().start()
    server = VoiceServer(tts_factory=lambda: create_tts("mock", min_seconds=0.1))
    running = server.start()
    install_worker(server, WorkerAddress("w3", PUBLIC))
    control = PlivoCallControl(
        server, auth_id=fake.auth_id, auth_token=fake.auth_token, from_number="+14155550000", api_base_url=fake.base_url
    )
    try:
        yield running, control, fake
    finally:
        running.stop()
        fake.stop()


def _proxied(running: Any, public_url: str) -> str:
    """Where the prefix-stripping proxy sends a request for ``public_url``: the worker's port, prefix gone."""
    path = urlsplit(public_url).path
    assert path.startswith("/w/3/")
    return f"http://127.0.0.1:{running.port}{path[len('/w/3'):]}"


def test_webhooks_and_the_stream_validate_through_a_prefix_stripping_proxy(worker: tuple[Any, Any, FakePlivo]) -> None:
    running, control, fake = worker
    outbound = control.dial("+15550000701")
    call = fake.wait_for_call()
    answer_url = call.request["answer_url"]
    assert answer_url.startswith(f"{PUBLIC}/plivo/answer/")  # the worker hands Plivo its public, prefixed URL
    params = {**call._base_params(), "CallStatus": "in-progress", "Event": "StartApp"}
    signed = plivo_sign_headers(fake.auth_token, "POST", answer_url, params)

    # without the prefix header the signed URL cannot be rebuilt: refused before any state is touched
    without = {k: v for k, v in FORWARDED.items() if k != "X-Forwarded-Prefix"}
    refused = httpx.post(_proxied(running, answer_url), data=params, headers={**signed, **without}, timeout=10)
    assert refused.status_code == 403
    # with it, the same signature holds (a fresh nonce: the refused one was never recorded as used)
    signed = plivo_sign_headers(fake.auth_token, "POST", answer_url, params)
    answered = httpx.post(_proxied(running, answer_url), data=params, headers={**signed, **FORWARDED}, timeout=10)
    assert answered.status_code == 200, answered.text
    stream = ET.fromstring(answered.text).find("Stream")
    assert stream is not None and (stream.text or "").startswith("wss://voice.example.com/w/3/stream/")
    stream_url = (stream.text or "").strip()

    # the stream upgrade, signed as Plivo's stream SDK does (https:// + the public path), through the proxy
    upgrade = plivo_sign_headers(fake.auth_token, "GET", ws_signature_uri(stream_url, "https"))
    local = "ws://127.0.0.1:%d%s" % (running.port, urlsplit(stream_url).path[len("/w/3"):])
    stray = SimulatedPhone(local, carrier="plivo", headers={**upgrade, **without}, call_id=call.call_uuid, content_type="audio/x-mulaw;rate=8000")
    with pytest.raises(PhoneRejected) as refused_upgrade:  # no prefix header: the signature cannot match
        stray.connect(10)
    assert refused_upgrade.value.status == 403
    stray.close()
    upgrade = plivo_sign_headers(fake.auth_token, "GET", ws_signature_uri(stream_url, "https"))
    phone = SimulatedPhone(local, carrier="plivo", headers={**upgrade, **FORWARDED}, call_id=call.call_uuid, content_type="audio/x-mulaw;rate=8000")
    try:
        phone.connect(10)
        session = outbound.wait_answered(10)
        assert session.call_sid == call.call_uuid
    finally:
        phone.close()
