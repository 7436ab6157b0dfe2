"""Saying "not now" to a stream upgrade: 503 + Retry-After, before any session exists.

A close-before-accept on Starlette becomes a bare 403, which tells a carrier "forbidden", not "busy". When the
server is at ``max_calls`` the honest answer is ``503 Service Unavailable`` with ``Retry-After``, sent with
the ASGI ``websocket.http.response`` extension (uvicorn supports it); where a server lacks the extension
the upgrade is closed with 1013 ("try again later") instead. The websockets-native mode answers the same
503 from its handshake hook.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.responses import Response

from voice_runtime.server.limits import ServerLimits

log = logging.getLogger(__name__)


def capacity_response(limits: ServerLimits) -> Response:
    return Response("server at capacity, retry later\n", status_code=503, headers={"Retry-After": str(limits.retry_after)})


async def deny_over_capacity(websocket: Any, limits: ServerLimits) -> None:
    """Refuse ``websocket`` (not yet accepted) with 503 + Retry-After, or 1013 without the extension."""
    try:
        await websocket.send_denial_response(capacity_response(limits))
    except (RuntimeError, AttributeError):  # the ASGI server has no websocket.http.response extension
        await websocket.close(code=1013)


__all__ = ["capacity_response", "deny_over_capacity"]
