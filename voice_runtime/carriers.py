"""The carrier registry: each carrier described once.

A carrier is four things, and this is the only place they are named together:

* its **dialect** — the sans-I/O codec of its media-stream messages (``protocols/<carrier>.py``);
* its **call control** — REST dial/hangup/transfer, answer webhooks and status callbacks, built on
  :class:`~voice_runtime.transports.call_control.CallControlBase` (``transports/<carrier>_control.py``);
* its **signature validator** — webhooks and WebSocket upgrades, used by the call control;
* its **SMS** module — ``send_sms(to, body, ...)`` (``transports/<carrier>_sms.py``);
* its **campaign dialer** — the :class:`~voice_runtime.campaign.dialer.Dialer` a campaign worker dials and
  reconciles with, built from the call control (``campaign/<carrier>_dialer.py``).

Adding a carrier means writing those modules and one :func:`register_carrier` line; the media loop, the
admission path, the flow runner and the tokens are shared and need no change (``docs/architecture.md``).
Modules are named as import strings and loaded on first use, so an SDK that is not installed costs nothing
until its carrier is used.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from voice_runtime.protocols import DIALECTS, Dialect

__all__ = ["Carrier", "CARRIERS", "register_carrier", "get_carrier"]


@dataclass(frozen=True)
class Carrier:
    """One carrier. The strings are ``"module:attribute"`` (or a module, for ``sms``)."""

    name: str
    dialect: type[Dialect]
    call_control: str | None = None
    signature_validator: str | None = None
    sms: str | None = None
    campaign_dialer: str | None = None

    def load_call_control(self) -> Any:
        return _load(self.call_control, self.name, "call control")

    def load_signature_validator(self) -> Any:
        return _load(self.signature_validator, self.name, "signature validator")

    def load_campaign_dialer(self) -> Any:
        return _load(self.campaign_dialer, self.name, "campaign dialer")

    def load_sms(self) -> Any:
        if self.sms is None:
            raise ValueError(f"carrier {self.name!r} has no SMS module")
        return importlib.import_module(self.sms)


CARRIERS: dict[str, Carrier] = {}


def register_carrier(carrier: Carrier) -> Carrier:
    """Make ``carrier`` known: its dialect joins detection on the bare ``/stream`` route and routed streams."""
    if carrier.dialect.name != carrier.name:
        raise ValueError(f"dialect {carrier.dialect.__name__}.name must be {carrier.name!r}")
    CARRIERS[carrier.name] = carrier
    DIALECTS[carrier.name] = carrier.dialect
    return carrier


def get_carrier(name: str) -> Carrier:
    try:
        return CARRIERS[name]
    except KeyError:
        raise ValueError(f"unknown carrier {name!r}; registered: {', '.join(sorted(CARRIERS))}") from None


def _load(path: str | None, carrier: str, what: str) -> Any:
    if path is None:
        raise ValueError(f"carrier {carrier!r} has no {what}")
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


def _register_builtins() -> None:
    from voice_runtime.protocols.plivo import PlivoDialect
    from voice_runtime.protocols.twilio import TwilioDialect

    register_carrier(
        Carrier(
            "twilio",
            TwilioDialect,
            call_control="voice_runtime.transports.twilio_control:TwilioCallControl",
            signature_validator="voice_runtime.transports.twilio_security:TwilioSignatureValidator",
            sms="voice_runtime.transports.twilio_sms",
            campaign_dialer="voice_runtime.campaign.dialer:TwilioDialer",
        )
    )
    register_carrier(
        Carrier(
            "plivo",
            PlivoDialect,
            call_control="voice_runtime.transports.plivo_control:PlivoCallControl",
            signature_validator="voice_runtime.transports.plivo_security:PlivoSignatureValidator",
            sms="voice_runtime.transports.plivo_sms",
            campaign_dialer="voice_runtime.campaign.plivo_dialer:PlivoDialer",
        )
    )


_register_builtins()
