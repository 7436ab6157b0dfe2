"""``/metrics``, ``/healthz`` and ``/readyz``: the same answers from the FastAPI app and the native server.

* ``/healthz`` — 200 while the process serves HTTP at all (liveness).
* ``/readyz`` — 200 while the server accepts calls, 503 while draining or at ``max_calls`` (readiness: take
  this instance out of the load balancer without killing its live calls).
* ``/metrics`` — Prometheus text format (``voice_runtime.metrics.prometheus``); 404 when metrics are off.

The paths honour the server's ``path_prefix``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from fastapi import FastAPI

    from voice_runtime.server.app import VoiceServer

PROBES = ("/metrics", "/healthz", "/readyz")


def probe_response(server: VoiceServer, path: str) -> tuple[int, bytes, str] | None:
    """``(status, body, content_type)`` for a probe path, or None when ``path`` is not one."""
    prefix = server.path_prefix
    if not path.startswith(prefix):
        return None
    name = path[len(prefix) :]
    if name == "/healthz":
        return 200, b'{"status":"ok"}', "application/json"
    if name == "/readyz":
        ready = server.ready
        body = {
            "ready": ready,
            "draining": not server.accepting,
            "active_calls": len(server.connections),
            "max_calls": server.max_calls,
        }
        return (200 if ready else 503), json.dumps(body).encode(), "application/json"
    if name == "/metrics":
        metrics = server.metrics
        if metrics is None:
            return 404, b"metrics are disabled (VoiceServer(metrics=False))\n", "text/plain; charset=utf-8"
        metrics.draining.set(0 if server.accepting else 1)
        body, content_type = metrics.render()
        return 200, body, content_type
    return None


def install_probe_routes(server: VoiceServer, app: FastAPI) -> None:
    from fastapi import Response

    def route(path: str) -> None:
        def endpoint() -> Response:  # sync: FastAPI runs it off the loop (multiprocess /metrics reads files)
            status, body, content_type = probe_response(server, server.path_prefix + path)  # type: ignore[misc]
            return Response(content=body, status_code=status, media_type=content_type)

        endpoint.__name__ = "probe_" + path.strip("/")
        app.add_api_route(server.path_prefix + path, endpoint, methods=["GET"], include_in_schema=False)

    for path in PROBES:
        route(path)
