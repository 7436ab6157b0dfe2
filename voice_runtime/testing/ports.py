"""Loopback ports for tests that start a server in another process and must name its port up front.

Why not bind to port 0 and close: the kernel hands such a port out again to the next outgoing connection of any
test running in parallel (pytest-xdist), and a run of consecutive ports checked only at its first port collides
often enough to fail CI. These ports come from *below* the kernel's ephemeral range, which outgoing connections
and ``bind(0)`` never use, start at a random place so parallel workers rarely meet, and are each probed with the
same ``SO_REUSEADDR`` bind the servers under test use.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

__all__ = ["free_port", "free_port_run", "free_ports"]

_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 10_000


def _ephemeral_low() -> int:
    try:
        return int(_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # the Linux default; elsewhere the probe below still rules out taken ports


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_run(count: int, *, attempts: int = 200) -> list[int]:
    """``count`` consecutive free ports below the ephemeral range, every one of them probed."""
    high = _ephemeral_low() - count
    if high <= _LOWEST:
        raise RuntimeError(f"no room below the ephemeral range ({_RANGE_FILE}) for {count} ports")
    for _ in range(attempts):
        base = random.randrange(_LOWEST, high)
        if all(_bindable(base + i) for i in range(count)):
            return [base + i for i in range(count)]
    raise RuntimeError(f"no {count} consecutive free ports found in {attempts} tries")


def free_port() -> int:
    """One free port from below the ephemeral range."""
    return free_port_run(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` free ports (not necessarily consecutive) from below the ephemeral range."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports
