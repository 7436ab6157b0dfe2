"""Test helpers shipped for users' own tests: the simulated phone and carrier-side codecs."""

from voice_runtime.testing.carriers import CARRIERS, CarrierCodec, CarrierViolation, PlivoCarrier, TwilioCarrier, carrier_codec
from voice_runtime.testing.phone import PhoneEvent, PhoneRejected, SimulatedPhone, Utterance, to_ulaw

__all__ = [
    "CARRIERS",
    "CarrierCodec",
    "CarrierViolation",
    "PhoneEvent",
    "PhoneRejected",
    "PlivoCarrier",
    "SimulatedPhone",
    "TwilioCarrier",
    "Utterance",
    "carrier_codec",
    "to_ulaw",
]
