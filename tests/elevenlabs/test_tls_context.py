"""The ElevenLabs clients share one verifying TLS context (built once, not per call).

Why it matters: building a context loads the CA bundle (tens of ms of CPU under the GIL); with one TTS client
per call that was paid on every call's first utterance (benchmarks/README.md, real-call workload). Sharing must
not weaken verification.
"""

from __future__ import annotations

import ssl

from voice_runtime.providers.elevenlabs_common import shared_ssl_context
from voice_runtime.providers.elevenlabs_tts import ElevenLabsTts


def test_one_context_for_every_client_and_it_verifies() -> None:
    context = shared_ssl_context()
    assert shared_ssl_context() is context
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 0  # the CA bundle is loaded


def test_tts_clients_use_the_shared_context() -> None:
    first = ElevenLabsTts(api_key="k", base_url="https://127.0.0.1:9")
    second = ElevenLabsTts(api_key="k", base_url="https://127.0.0.1:9")
    try:
        pools = [tts._http()._transport._pool for tts in (first, second)]  # type: ignore[attr-defined]
        assert all(pool._ssl_context is shared_ssl_context() for pool in pools)
    finally:
        first.close()
        second.close()
