"""The one error tree of voice_runtime.

Every exception the runtime raises on purpose derives from :class:`VoiceRuntimeError`, so a call flow
can catch "anything the runtime decided" with one clause and still tell the cases apart::

    VoiceRuntimeError
    ├── CallError                      something happened to *this call*; carries ``call_id``
    │   ├── CallNotAnsweredError       the media stream never connected (timeout, busy, no-answer, failed)
    │   ├── CallHangupError            the call ended while a blocking call was waiting
    │   ├── CallTimeoutError           a blocking wait ran out of time (also a ``TimeoutError``)
    │   └── ConcurrencyError           two threads made the same blocking wait at once (e.g. two ``listen()``)
    ├── ProtocolError
    │   ├── RemoteProtocolError        the carrier sent something we cannot accept (bad JSON, bad base64, ...)
    │   └── LocalProtocolError         we were asked to send something the dialect cannot express
    ├── ProviderError                  an STT/TTS provider failed; ``retryable`` says whether a retry may help
    │   └── CarrierApiError            a carrier REST request (dial, hangup, transfer, SMS) failed; carries the
    │                                  carrier's error ``code`` and HTTP ``status``
    ├── SignatureError                 a webhook or WebSocket upgrade failed carrier signature validation
    └── ConfigError                    missing or invalid configuration
        └── MissingStreamUrlError      no public stream URL configured (``VOICE_STREAM_URL``)

Why a tree and not ad-hoc ``RuntimeError``s: flows written as plain sequential code need to branch on *what*
went wrong (caller hung up vs. we timed out vs. the provider died) without parsing messages.
``CallTimeoutError`` also subclasses the builtin ``TimeoutError`` so code written against the prior art,
which raised bare ``TimeoutError`` from ``send_mark_and_wait``, keeps working; ``ConfigError`` is also a
``RuntimeError``/``ValueError`` for the same reason.
"""

from __future__ import annotations

__all__ = [
    "VoiceRuntimeError",
    "CallError",
    "CallNotAnsweredError",
    "CallHangupError",
    "CallTimeoutError",
    "ConcurrencyError",
    "ProtocolError",
    "RemoteProtocolError",
    "LocalProtocolError",
    "ProviderError",
    "CarrierApiError",
    "SignatureError",
    "ConfigError",
    "MissingStreamUrlError",
]


class VoiceRuntimeError(Exception):
    """Base of every exception voice_runtime raises deliberately."""


class CallError(VoiceRuntimeError):
    """An event on one call. ``call_id`` is the carrier's call id (CallSid / CallUUID) when known."""

    def __init__(self, message: str, *, call_id: str | None = None) -> None:
        super().__init__(message if call_id is None else f"{message} (call {call_id})")
        self.call_id = call_id


class CallNotAnsweredError(CallError):
    """The call's media stream did not start: no answer, busy, failed, or the wait timed out.

    The first positional argument may be a timeout in seconds (prior-art signature) or a message.
    """

    def __init__(
        self,
        timeout_or_reason: float | str | None = None,
        *,
        call_id: str | None = None,
        status: str | None = None,
    ) -> None:
        if isinstance(timeout_or_reason, (int, float)):
            message = f"WebSocket did not connect within {timeout_or_reason}s timeout"
            self.timeout: float | None = float(timeout_or_reason)
        else:
            message = timeout_or_reason or "call was not answered"
            self.timeout = None
        if status:
            message = f"{message} (status {status})"
        super().__init__(message, call_id=call_id)
        self.status = status


class CallHangupError(CallError):
    """The call ended (either side hung up or the socket dropped) while we were waiting on it."""

    def __init__(self, message: str = "call was hung up", *, call_id: str | None = None) -> None:
        super().__init__(message, call_id=call_id)


class CallTimeoutError(CallError, TimeoutError):
    """A blocking wait reached its deadline while the call was still up."""


class ConcurrencyError(CallError, RuntimeError):
    """Two threads made the same blocking wait on one call at once (e.g. two ``listen()`` calls).

    They would race for the same utterance or key press, and which one wins is luck; so the second is refused
    at once, as python-websockets refuses two concurrent ``recv()`` calls.
    """

    def __init__(self, message: str, *, call_id: str | None = None) -> None:
        super().__init__(message, call_id=call_id)


class ProtocolError(VoiceRuntimeError):
    """A message could not be exchanged under the carrier's wire protocol."""


class RemoteProtocolError(ProtocolError):
    """The peer sent a message that violates the protocol. ``reason`` is a short, countable slug."""

    def __init__(self, reason: str, detail: str = "") -> None:
        detail = detail[:120]  # details echo peer input: never let a hostile message bloat logs
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class LocalProtocolError(ProtocolError):
    """We were asked to send something the dialect cannot express (e.g. DTMF out on Twilio)."""


class ProviderError(VoiceRuntimeError):
    """An STT or TTS provider failed. ``retryable`` is False for auth, quota and configuration failures."""

    def __init__(self, message: str, *, provider: str = "", retryable: bool = False) -> None:
        super().__init__(f"{provider}: {message}" if provider else message)
        self.provider = provider
        self.retryable = retryable


class CarrierApiError(ProviderError):
    """A carrier's REST API refused or failed a request (Twilio/Plivo dial, hangup, transfer, SMS).

    ``code`` is the carrier's own error code (Twilio: e.g. 21211 invalid "To" number, 20003 authentication,
    20429 too many requests) so callers can branch on it; ``status`` is the HTTP status (None when the request
    never got an answer, e.g. a timeout). A carrier is a provider of the call itself, hence the base class:
    ``retryable`` is True only for throttling, server-side and transport failures. The message never
    contains credentials.
    """

    def __init__(
        self,
        message: str,
        *,
        carrier: str,
        code: int | None = None,
        status: int | None = None,
        retryable: bool | None = None,
    ) -> None:
        if retryable is None:
            retryable = status is None or status == 429 or status >= 500 or code == 20429
        detail = ", ".join(p for p in (f"code {code}" if code is not None else "", f"HTTP {status}" if status else "") if p)
        super().__init__(f"{message} ({detail})" if detail else message, provider=carrier, retryable=retryable)
        self.carrier = carrier
        self.code = code
        self.status = status


class SignatureError(VoiceRuntimeError):
    """A request did not carry a valid carrier signature."""


class ConfigError(VoiceRuntimeError, RuntimeError, ValueError):
    """Configuration is missing or invalid.

    Also a ``RuntimeError`` (what 0.1.x raised for a missing setting) and a ``ValueError`` (what it raised for
    an invalid one), so ``except RuntimeError`` / ``except ValueError`` written against 0.1.x keeps working.
    """


class MissingStreamUrlError(ConfigError):
    """No public base URL for the media stream WebSocket is configured."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(
            message
            or "VOICE_STREAM_URL is not set: set it to the public wss:// (or https://) base URL at which "
            "the carrier can reach this server's media stream endpoint"
        )
