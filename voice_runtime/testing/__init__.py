"""Test helpers shipped for users' own tests: the simulated phone and carrier-side codecs."""

from voice_runtime.testing.carriers import CARRIERS, CarrierCodec, CarrierViolation, PlivoCarrier, TwilioCarrier, carrier_codec
from voice_runtime.testing.phone import HeardSegment, PhoneEvent, PhoneRejected, PlayedFrame, SimulatedPhone, Utterance, locate, to_ulaw

__all__ = [
    "CARRIERS",
    "CarrierCodec",
    "CarrierViolation",
    "HeardSegment",
    "PhoneEvent",
    "PhoneRejected",
    "PlayedFrame",
    "PlivoCarrier",
    "SimulatedPhone",
    "TwilioCarrier",
    "Utterance",
    "carrier_codec",
    "locate",
    "to_ulaw",
]
