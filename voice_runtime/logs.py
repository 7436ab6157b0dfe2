"""Log lines that say which call they are about, from any thread.

A call runs on two kinds of threads (its flow thread and the event loop, where it is one task among many),
so a thread-local would be wrong and a logger per call would leak. Instead the call's identity lives in a
:mod:`contextvars` variable, set once in the call's flow thread and once in the call's loop task (tasks and
``call_soon_threadsafe`` callbacks copy the context they were created in, so the pump, the STT tasks and the
flow's intents inherit it). A log record factory stamps every record with ``record.call_id``, so a format
string can say ``%(call_id)s`` and :class:`JsonFormatter` emits ``"call_id"``.

``docs/logging.md`` shows how to turn this into JSON logs and how to debug one module.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

__all__ = [
    "CallRef", "CallIdFilter", "JsonFormatter", "call_context", "current_call_id", "install_call_id_records",
    "start_thread_in_context",
]

NO_CALL = "-"


class CallRef:
    """A mutable pointer to the call a context belongs to (its id is often learned after the context began)."""

    __slots__ = ("call_id", "session")

    def __init__(self, call_id: str | None = None, session: Any = None) -> None:
        self.call_id = call_id
        self.session = session

    def resolve(self) -> str | None:
        if self.call_id is not None:
            return self.call_id
        session = self.session
        return None if session is None else getattr(session, "call_sid", None)


_current: contextvars.ContextVar[CallRef | None] = contextvars.ContextVar("voice_runtime_call", default=None)


def current_call_id() -> str | None:
    ref = _current.get()
    return None if ref is None else ref.resolve()


@contextlib.contextmanager
def call_context(ref: CallRef | Any) -> Iterator[CallRef]:
    """Within this block (and tasks/callbacks created in it) log records carry the call's id.

    ``ref`` is a :class:`CallRef` or a session (its ``call_sid`` is read when each record is made).
    """
    if not isinstance(ref, CallRef):
        ref = CallRef(session=ref)
    token = _current.set(ref)
    try:
        yield ref
    finally:
        _current.reset(token)


def start_thread_in_context(target: Any, *args: Any, name: str) -> threading.Thread:
    """Start a daemon thread that runs ``target(*args)`` in a copy of the caller's context.

    Why: a new thread starts with an empty context, so a runtime thread a call starts (its speech worker, a
    looping play, a hold prompt) would log without the call's id. Copied here, what it logs carries the id of
    the call that started it, as tasks and loop callbacks do.
    """
    thread = threading.Thread(target=contextvars.copy_context().run, args=(target, *args), name=name, daemon=True)
    thread.start()
    return thread


def set_call_context(ref: CallRef) -> None:
    """Bind ``ref`` to the current context for good (a task or thread that belongs to one call)."""
    _current.set(ref)


class CallIdFilter(logging.Filter):
    """Adds ``record.call_id`` (``"-"`` outside any call); for handlers when the record factory is not wanted."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "call_id"):
            record.call_id = current_call_id() or NO_CALL
        return True


_install_lock = threading.Lock()
_installed = False


def install_call_id_records() -> None:
    """Make every ``LogRecord`` carry ``call_id`` (wraps the current record factory; idempotent)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            if not hasattr(record, "call_id"):
                ref = _current.get()
                record.call_id = (ref.resolve() if ref is not None else None) or NO_CALL
            return record

        logging.setLogRecordFactory(factory)
        _installed = True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, call_id, thread, and any ``extra`` fields."""

    _STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "call_id"}

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "call_id": getattr(record, "call_id", None) or current_call_id() or NO_CALL,
            "thread": record.threadName,
        }
        for key, value in vars(record).items():
            if key not in self._STANDARD and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)
