"""A provider factory that raises, seen from outside: a counter, an event, and one traceback, not one per call.

The connection already ends such a call with close 1011 (``SessionUnavailable``). What an operator also needs:

* a server-wide counter, ``server.stats["provider_factory_failed"]``;
* an event: a provider-less stand-in session is adopted by the server, so every ``add_call_listener``
  listener sees ``provider_error`` (``stage="factory"``) and then ``call_ended`` (reason ``provider_failed``)
  for the call, like any other call end — and ``on_call_ended`` runs for it;
* a log that does not flood: the traceback the first time, then one rate-limited ERROR line (a broken
  provider fails *every* call the same way).
"""

from __future__ import annotations

import logging
from typing import Any

from voice_runtime.call_events import EventKind
from voice_runtime.lifecycle import EndReason
from voice_runtime.server.limits import RateLimitedLog
from voice_runtime.session import VoiceSession

log = logging.getLogger("voice_runtime.server.admission")
_limited = RateLimitedLog(log, interval=10.0)

__all__ = ["report_setup_failure"]


def report_setup_failure(server: Any, call_id: str | None, exc: BaseException) -> None:
    """Count, log and announce (on a stand-in session) that ``call_id`` could not be set up."""
    server.stats["provider_factory_failed"] += 1
    if server.stats["provider_factory_failed"] == 1:
        log.error("call %s: a provider factory raised; the call is closed with 1011", call_id, exc_info=exc)
    else:
        _limited("provider_factory_failed", logging.ERROR,
                 "call %s: a provider factory raised %s: %s; closed with 1011", call_id, type(exc).__name__, exc)
    stand_in = VoiceSession(call_sid=call_id)
    stand_in.log.call_id = call_id
    server.adopt(stand_in)
    stand_in.log.emit(EventKind.PROVIDER_ERROR, stage="factory", error=f"{type(exc).__name__}: {exc}"[:200])
    stand_in.signal_disconnected(EndReason.PROVIDER_FAILED)
