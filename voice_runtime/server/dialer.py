"""One outbound call from dial to outcome, shared by ``voice-runtime call`` and the admin API's dial.

Why a module: the command line dials from its own process, and ``POST /admin/calls`` dials from a running
server; both must classify the ending the same way (the CLI turns it into its exit status):

``completed``  answered, the flow ran and returned (or the callee hung up)
``machine``    answered by an answering machine or fax (AMD), whatever the flow then did
``busy`` / ``no-answer`` / ``failed``  never answered (``canceled``, ``rejected``... are ``failed``)
``flow-error`` answered, but the flow raised
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from voice_runtime.errors import CallError, CallHangupError, CallNotAnsweredError

log = logging.getLogger(__name__)

RESULTS = ("completed", "machine", "busy", "no-answer", "failed", "flow-error")
_NOT_ANSWERED = {"busy": "busy", "no-answer": "no-answer", "timeout": "no-answer"}


@dataclass(frozen=True)
class CallOutcome:
    result: str
    call_id: str | None
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"result": self.result, "call_id": self.call_id, "detail": self.detail}


def dial_options(carrier: str, amd: bool) -> dict[str, Any]:
    """The carrier's spelling of "answering-machine detection on" (Twilio: an enum; Plivo: a flag)."""
    if not amd:
        return {}
    return {"machine_detection": "Enable"} if carrier == "twilio" else {"machine_detection": True}


def not_answered_result(status: str | None) -> str:
    return _NOT_ANSWERED.get((status or "").lower(), "failed")


def run_dialled_call(outbound: Any, control: Any, flow: Callable[[Any], Any], *, answer_timeout: float = 60.0) -> CallOutcome:
    """Wait for the answer, run ``flow`` on the live session in this thread, hang up, classify the ending."""
    session = outbound.session
    try:
        outbound.wait_answered(answer_timeout)
    except CallNotAnsweredError as exc:
        status = exc.status or ("no-answer" if getattr(exc, "timeout", None) else None)
        _cancel(control, outbound.call_id)
        control.forget(outbound.call_id)
        return CallOutcome(not_answered_result(status), outbound.call_id, status or str(exc))
    result, detail = "completed", ""
    try:
        flow(session)
    except CallHangupError:
        detail = "the callee hung up"
    except CallError as exc:
        detail = str(exc)
    except Exception as exc:
        log.exception("flow for call %s failed", outbound.call_id)
        result, detail = "flow-error", f"{type(exc).__name__}: {exc}"
    finally:
        if not session.is_disconnected:
            session.hangup(10.0)
        control.forget(outbound.call_id)
    answered_by = (session.answered_by or "").lower()
    if result == "completed" and answered_by.startswith(("machine", "fax")):
        return CallOutcome("machine", outbound.call_id, answered_by)
    return CallOutcome(result, outbound.call_id, detail)


def _cancel(control: Any, call_id: str) -> None:
    try:
        control.hangup_call(call_id)
    except Exception as exc:  # the call has usually ended already: that is what we wanted
        log.info("cancelling %s: %s", call_id, exc)
