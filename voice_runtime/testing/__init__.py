"""Test helpers shipped for users' own tests: the simulated phone and carrier-side codecs."""

from voice_runtime.testing.carriers import CARRIERS, CarrierCodec, CarrierViolation, TwilioCarrier, carrier_codec
from voice_runtime.testing.phone import PhoneEvent, PhoneRejected, SimulatedPhone, Utterance, to_ulaw

__all__ = [
    "CARRIERS",
    "CarrierCodec",
    "CarrierViolation",
    "PhoneEvent",
    "PhoneRejected",
    "SimulatedPhone",
    "TwilioCarrier",
    "Utterance",
    "carrier_codec",
    "to_ulaw",
]
