"""The ElevenLabs clients share one verifying TLS context (built once, not per call).

Why it matters: building a context loads the CA bundle (tens of ms of CPU under the GIL); with one TTS client
per call that was paid on every call's first utterance (benchmarks/README.md, real-call workload). Sharing must
not weaken verification.
"""

from __future__ import annotations

import ssl

import pytest

from voice_runtime.errors import ConfigError
from voice_runtime.providers.elevenlabs_common import shared_ssl_context
from voice_runtime.providers.elevenlabs_tts import ElevenLabsTts
from voice_runtime.providers.urllib3_transport import Urllib3Transport


def test_one_context_for_every_client_and_it_verifies() -> None:
    context = shared_ssl_context()
    assert shared_ssl_context() is context
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 0  # the CA bundle is loaded


def test_tts_clients_use_the_shared_context(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    first = ElevenLabsTts(api_key="k", base_url="https://127.0.0.1:9")
    second = ElevenLabsTts(api_key="k", base_url="https://127.0.0.1:9")
    own = ElevenLabsTts(api_key="k", base_url="https://127.0.0.1:9", http_transport="httpx")
    try:
        for tts in (first, second):  # the default: urllib3 under httpx (providers/urllib3_transport.py)
            transport = tts._http()._transport  # type: ignore[attr-defined]
            assert isinstance(transport, Urllib3Transport)
            assert transport._pool.connection_pool_kw["ssl_context"] is shared_ssl_context()
        assert own._http()._transport._pool._ssl_context is shared_ssl_context()  # type: ignore[attr-defined]
    finally:
        for tts in (first, second, own):
            tts.close()


def test_an_unknown_http_transport_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        ElevenLabsTts(api_key="k", http_transport="curl")  # type: ignore[arg-type]
