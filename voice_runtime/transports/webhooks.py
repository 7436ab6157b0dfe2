"""What every carrier's webhooks share: a body read that is bounded *before* it is buffered.

Carrier callbacks are a few hundred bytes. An unsigned request cannot be rejected before its body is read
(the signature covers the body), so the read itself must be bounded: a declared ``Content-Length`` over the
limit is refused at once, and a chunked body is refused the moment it passes the limit. Either way the answer
is 413 and at most ``limit`` bytes were held.
"""

from __future__ import annotations

from starlette.requests import Request

__all__ = ["MAX_WEBHOOK_BODY", "read_limited"]

#: Carrier webhook bodies are a few hundred bytes; anything far larger is not a carrier.
MAX_WEBHOOK_BODY = 64 * 1024


async def read_limited(request: Request, limit: int = MAX_WEBHOOK_BODY) -> bytes | None:
    """The request body, or None once it exceeds ``limit`` bytes (checked before buffering it all)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
