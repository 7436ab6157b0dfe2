"""Addressable workers: every call's stream reaches the process that owns its session, on one host or many.

A call we dial, and a call our webhook answers, are bound to a session in one process's memory. With several
worker processes behind one address (``SO_REUSEPORT``, a load balancer) the carrier's media stream would land
on the owner only 1 time in N. So each worker is *addressable*:

* it has its own public base URL (:class:`WorkerAddress`): its own port (``http://10.0.0.5:8083``) or a path
  prefix that a reverse proxy maps to it (``https://voice.example.com/w/3``; the proxy strips the prefix and
  sends ``X-Forwarded-Prefix: /w/3``, see ``docs/server-modes.md``);
* :func:`install_worker` makes the server put that address into every stream URL, status/AMD callback URL and
  answer-webhook ``<Stream url>`` it builds, and prefixes every stream token with the worker id
  (``w3.Xy…``), so the owner is readable from the URL alone;
* a stream whose token names another worker (a proxy misconfiguration) is refused before the handshake with
  HTTP 421 *Misdirected Request* and a body naming the owner, and logged with the owner's address. The check
  is a string split: no lookup, no state, done before the carrier signature is even read.

Webhooks that start a call (the number's voice URL) may land on any worker: whichever answers owns the call and
points the stream at itself. :func:`serve_workers` runs N such processes on one host: each listens on its own
port and on a shared ``SO_REUSEPORT`` port for webhooks.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import signal
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from voice_runtime.server.limits import LISTEN_BACKLOG

log = logging.getLogger(__name__)

__all__ = [
    "MISDIRECTED_STATUS",
    "TOKEN_SEPARATOR",
    "WorkerAddress",
    "WorkerRegistry",
    "WorkerPlan",
    "install_worker",
    "owner_of",
    "run_worker",
    "serve_workers",
]

#: HTTP status for a stream that reached the wrong worker (RFC 9110 §15.5.20: "Misdirected Request").
MISDIRECTED_STATUS = 421
#: Between the worker id and the random part of a token. Not in ``secrets.token_urlsafe``'s alphabet, and
#: unreserved in URLs, so it needs no escaping and the split is unambiguous.
TOKEN_SEPARATOR = "."
_WORKER_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")


def owner_of(token: str) -> str | None:
    """The worker id a stream token names, or None for a token without one (single-process servers)."""
    owner, sep, rest = token.partition(TOKEN_SEPARATOR)
    if not sep or not rest or not _WORKER_ID.fullmatch(owner):
        return None
    return owner


@dataclass(frozen=True)
class WorkerAddress:
    """One worker process: its id and the public base URL that reaches it and no other process."""

    worker_id: str
    public_url: str

    def __post_init__(self) -> None:
        if not _WORKER_ID.fullmatch(self.worker_id):
            raise ValueError(f"worker id {self.worker_id!r} must be 1-32 of A-Z a-z 0-9 _ -")
        if not re.match(r"^(https?|wss?)://", self.public_url):
            raise ValueError(f"worker public_url {self.public_url!r} must start with http(s):// or ws(s)://")


class WorkerRegistry:
    """The server's call registry, with the owning worker's id in front of every token.

    Wraps the server's own registry (composition, so it keeps working whatever that registry becomes): issued
    tokens are ``{worker_id}.{inner token}``; ``peek``/``claim``/``revoke`` strip the prefix again. Everything
    else is delegated unchanged.
    """

    def __init__(self, inner: Any, address: WorkerAddress, peers: Mapping[str, str] | None = None) -> None:
        self.inner = inner
        self.address = address
        #: worker id -> public URL of the other workers, only to name the owner's address in the log.
        self.peers = dict(peers or {})
        self.misdirected = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _local(self, token: str) -> str | None:
        owner, sep, rest = token.partition(TOKEN_SEPARATOR)
        return rest if sep and owner == self.address.worker_id else None

    def issue_token(self, session: Any, *args: Any, **kwargs: Any) -> str:
        return f"{self.address.worker_id}{TOKEN_SEPARATOR}{self.inner.issue_token(session, *args, **kwargs)}"

    def peek(self, token: str) -> bool:
        local = self._local(token)
        return local is not None and self.inner.peek(local)

    def claim(self, token: str) -> Any:
        local = self._local(token)
        return None if local is None else self.inner.claim(local)

    def claim_with_carrier(self, token: str) -> Any:
        local = self._local(token)
        return None if local is None else self.inner.claim_with_carrier(local)

    def revoke(self, token: str) -> None:
        local = self._local(token)
        if local is not None:
            self.inner.revoke(local)

    def misdirected_reason(self, token: str) -> str | None:
        """None if this worker may serve ``token``; else the refusal text (also logged, with the owner's URL)."""
        owner = owner_of(token)
        if owner is None or owner == self.address.worker_id:
            return None
        self.misdirected += 1
        where = self.peers.get(owner, "address unknown here")
        log.warning(
            "refused misdirected stream: token owned by worker %s (%s) arrived at worker %s (%s); check the proxy's routing",
            owner,
            where,
            self.address.worker_id,
            self.address.public_url,
        )
        return f"stream owned by worker {owner}, not {self.address.worker_id}"


def install_worker(server: Any, address: WorkerAddress, *, peers: Mapping[str, str] | None = None) -> WorkerRegistry:
    """Make ``server`` (a :class:`~voice_runtime.server.app.VoiceServer`) the addressable worker ``address``.

    Call it once, before dialling; call controls created before or after both pick the address up.
    """
    registry = server.registry if isinstance(server.registry, WorkerRegistry) else WorkerRegistry(server.registry, address, peers)
    registry.address, registry.peers = address, dict(peers or registry.peers)
    server.registry = registry
    server.public_url = address.public_url
    server.worker_address = address
    server.route_guard = registry.misdirected_reason
    for control in getattr(server, "call_controls", {}).values():
        control.public_url = address.public_url
    return registry


# ------------------------------------------------------------------------------------------ running workers
@dataclass
class WorkerPlan:
    """N workers on one host: worker ``i`` listens on ``base_port + i`` and on the shared ``webhook_port``.

    ``public_url`` is a template with ``{index}``, ``{port}`` and ``{worker_id}``, e.g.
    ``"https://voice.example.com/w/{index}"`` (behind a proxy) or ``"http://10.0.0.5:{port}"`` (direct).
    """

    workers: int
    base_port: int
    public_url: str
    webhook_port: int | None = None
    host: str = "0.0.0.0"
    id_prefix: str = "w"
    extra: dict[str, Any] = field(default_factory=dict)

    def address(self, index: int) -> WorkerAddress:
        worker_id = f"{self.id_prefix}{index}"
        url = self.public_url.format(index=index, port=self.base_port + index, worker_id=worker_id)
        return WorkerAddress(worker_id, url)

    def peers(self) -> dict[str, str]:
        return {a.worker_id: a.public_url for a in map(self.address, range(self.workers))}


def _bind_worker(host: str, port: int, webhook_port: int | None) -> list[socket.socket]:
    """The worker's own listening socket, plus its ``SO_REUSEPORT`` share of the webhook port."""
    sockets = [_listen(host, port, reuse_port=False)]
    if webhook_port is not None:
        try:
            sockets.append(_listen(host, webhook_port, reuse_port=True))
        except OSError:
            sockets[0].close()
            raise
    return sockets


def _bind_fleet(plan: WorkerPlan) -> list[list[socket.socket]]:
    """Every worker's sockets, bound in the supervisor before any fork.

    Why here and not in each child: a taken port then fails the whole start at once, with the port named,
    instead of leaving a fleet with a hole in it (the other workers serving, the plan still sending worker i's
    calls to a port nobody owns). gunicorn's arbiter binds before forking for the same reason.
    """
    bound: list[list[socket.socket]] = []
    for index in range(plan.workers):
        try:
            bound.append(_bind_worker(plan.host, plan.base_port + index, plan.webhook_port))
        except OSError as exc:
            _close_all(bound)
            raise OSError(exc.errno, f"worker {plan.address(index).worker_id}: {exc.strerror}") from exc
    return bound


def _close_all(groups: list[list[socket.socket]]) -> None:
    for sockets in groups:
        for sock in sockets:
            sock.close()


def _listen(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host} port {port}: {exc.strerror}") from exc
    sock.listen(LISTEN_BACKLOG)
    sock.set_inheritable(True)
    return sock


def run_worker(
    server: Any,
    address: WorkerAddress,
    *,
    host: str = "0.0.0.0",
    port: int,
    webhook_port: int | None = None,
    peers: Mapping[str, str] | None = None,
    drain_deadline: float = 30.0,
    sockets: list[socket.socket] | None = None,
    **uvicorn_kwargs: Any,
) -> None:
    """Serve one addressable worker in the foreground (its own ``port``, plus the shared ``webhook_port``).

    Everything the FastAPI mode serves (streams, webhooks, callbacks) is on both sockets; SIGTERM drains as
    ``VoiceServer.serve`` does. One call per process per host is the multi-host building block: run it once
    per process on every host, each with its own address. ``sockets``: listening sockets bound already
    (:func:`serve_workers` binds before it forks); ``port`` and ``webhook_port`` then only label the log line.
    """
    import uvicorn

    from voice_runtime.server.runners import GracefulServer, exit_if_unclean, hardened_uvicorn_options
    from voice_runtime.server.stream_policy import warn_if_unsigned

    server.check_config_at_start()
    warn_if_unsigned(server)
    install_worker(server, address, peers=peers)
    if sockets is None:
        sockets = _bind_worker(host, port, webhook_port)
    uvicorn_kwargs.setdefault("ws_max_size", server.connection_config.hard_max_inbound_message)
    uvicorn_kwargs.setdefault("log_level", "warning")
    uvicorn_kwargs.setdefault("ws_ping_interval", None)
    for name, value in hardened_uvicorn_options(server).items():  # header deadline, connection cap, no deflate
        uvicorn_kwargs.setdefault(name, value)
    config = uvicorn.Config(server.app, **uvicorn_kwargs)
    log.info("worker %s serving on port %s (webhooks also on %s) as %s", address.worker_id, port, webhook_port, address.public_url)
    graceful = GracefulServer(config, server, drain_deadline)
    graceful.run(sockets=sockets)
    exit_if_unclean(graceful.drain_report)


def serve_workers(build_server: Callable[[WorkerAddress], Any], plan: WorkerPlan, **run_kwargs: Any) -> int:
    """Fork ``plan.workers`` addressable workers; block until all exit. Returns the number that failed.

    ``build_server(address)`` runs *in each child*, after the fork, so every worker builds its own server,
    call controls and provider clients (nothing with threads crosses the fork; the only sockets that do are
    the listening ones). Every port is bound first, in this process: a taken port raises :class:`OSError`
    naming it before any worker starts. SIGTERM/SIGINT are forwarded to every child, which drains. POSIX only.
    """
    peers = plan.peers()
    bound = _bind_fleet(plan)
    children: dict[int, str] = {}
    for index in range(plan.workers):
        address = plan.address(index)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _close_all(bound[:index] + bound[index + 1 :])  # a dead worker's queue must not live on in its siblings
                run_worker(
                    build_server(address),
                    address,
                    host=plan.host,
                    port=plan.base_port + index,
                    webhook_port=plan.webhook_port,
                    peers=peers,
                    sockets=bound[index],
                    **run_kwargs,
                )
            except SystemExit as exit_:  # an unclean drain (exit_if_unclean): its status, logged by the drain
                code = exit_.code if isinstance(exit_.code, int) else 1
            except BaseException:
                log.exception("worker %s failed", address.worker_id)
                code = 1
            finally:
                os._exit(code)
        children[pid] = address.worker_id
    _close_all(bound)  # the children hold them now

    def forward(signum: int, _frame: Any) -> None:
        for child in children:
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    failed = 0
    for child in list(children):
        while True:
            try:
                _, status = os.waitpid(child, 0)
                failed += int(os.waitstatus_to_exitcode(status) != 0)
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                break
    return failed


def new_worker_id(prefix: str = "w") -> str:
    """A fresh id for a worker started without a plan (e.g. one per container)."""
    return f"{prefix}{secrets.token_hex(3)}"
