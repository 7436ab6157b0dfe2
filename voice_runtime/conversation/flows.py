"""What a call flow may be, checked once at registration: a plain function or an ``async def``.

``as_flow(fn)`` returns a callable the server can run on its flow thread:

* ``def flow(session)`` — returned as is (the classic sequential flow; one thread per call);
* ``async def flow(session)`` (also an object whose ``__call__`` is ``async def``, or a ``functools.partial`` of
  one) — wrapped so that the flow thread runs it with ``asyncio.run`` and hands it an
  :class:`~voice_runtime.conversation.async_session.AsyncVoiceSession` over the same session;
* anything else — refused with :class:`~voice_runtime.errors.ConfigError` *now*: a generator or async generator
  function (it would never run its body), something that is not callable, or a callable that cannot take
  exactly one positional argument (the session). Before this check an ``async def`` flow was accepted and
  silently never ran.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from typing import Any

from voice_runtime.errors import ConfigError

SYNC = "sync"
ASYNC = "async"


def _target(flow: Any) -> Any:
    while isinstance(flow, functools.partial):
        flow = flow.func
    return flow


def flow_kind(flow: Any) -> str:
    """``"sync"`` or ``"async"``; raises :class:`ConfigError` for anything that cannot be a flow."""
    if getattr(flow, "__voice_flow_kind__", None) in (SYNC, ASYNC):
        return SYNC  # already adapted by as_flow: a plain callable now
    if not callable(flow):
        raise ConfigError(f"a call flow must be a function taking the session, got {type(flow).__name__} {flow!r}")
    target = _target(flow)
    call = target if inspect.isfunction(target) or inspect.ismethod(target) else getattr(type(target), "__call__", target)
    name = getattr(target, "__qualname__", type(target).__name__)
    if inspect.isasyncgenfunction(target) or inspect.isasyncgenfunction(call):
        raise ConfigError(f"flow {name} is an async generator function; write 'async def flow(session):' without yield")
    if inspect.isgeneratorfunction(target) or inspect.isgeneratorfunction(call):
        raise ConfigError(f"flow {name} is a generator function: its body would never run; remove the yield")
    try:
        inspect.signature(flow).bind(object())
    except TypeError:
        raise ConfigError(f"flow {name} must accept exactly one positional argument (the session)") from None
    except ValueError:  # builtins without a signature: trust them
        pass
    if inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(call):
        return ASYNC
    return SYNC


def as_flow(flow: Callable[..., Any] | None) -> Callable[[Any], Any] | None:
    """Check ``flow`` and return what the flow thread should call (see the module docstring). None stays None."""
    if flow is None:
        return None
    kind = flow_kind(flow)
    if kind == SYNC:
        return flow

    @functools.wraps(_target(flow))
    def run_async_flow(session: Any) -> Any:
        return asyncio.run(_drive(flow, session))

    run_async_flow.__voice_flow_kind__ = ASYNC  # type: ignore[attr-defined]
    return run_async_flow


async def _drive(flow: Callable[[Any], Any], session: Any) -> Any:
    from voice_runtime.conversation.async_session import AsyncVoiceSession

    face = AsyncVoiceSession(session)
    try:
        return await flow(face)
    finally:
        face.close()


__all__ = ["ASYNC", "SYNC", "as_flow", "flow_kind"]
