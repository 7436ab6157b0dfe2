"""Environment that points a ``voice-runtime`` subprocess at the loopback fake carriers."""

from __future__ import annotations

from voice_runtime.testing.fake_plivo import FakePlivo
from voice_runtime.testing.fake_twilio import FakeTwilio

PLIVO_NUMBER = "+14155550199"


def carrier_env(twilio: FakeTwilio | None = None, plivo: FakePlivo | None = None, **extra: str) -> dict[str, str]:
    env: dict[str, str] = {}
    if twilio is not None:
        env.update(twilio.environ(TWILIO_API_URL=twilio.base_url))
    if plivo is not None:
        env.update(
            PLIVO_AUTH_ID=plivo.auth_id,
            PLIVO_AUTH_TOKEN=plivo.auth_token,
            PLIVO_PHONE_NUMBER=PLIVO_NUMBER,
            PLIVO_API_URL=plivo.base_url,
        )
    env.update(extra)
    return env
