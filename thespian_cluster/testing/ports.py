"""Free ports for nodes, etcd members and servers started by tests and benchmarks.

``bind(("127.0.0.1", 0))`` returns a port from the kernel's ephemeral range, and that
is the range every other socket on the machine draws from meanwhile: each actor a node
starts (Thespian binds actors to port 0), each outgoing connection's own end. A port
picked that way and bound a moment later by the node is free at the first instant and
can be taken at the second: a fresh-clone run lost a node's start to exactly that
("not a valid or useable ActorSystem Admin"). So the ports come from below the
ephemeral range, where the kernel never hands one out by itself, chosen at random,
checked free for TCP and UDP (a node's heartbeats use the same number), and never
handed out twice by one process.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_LOWEST = 10_000  # below: well-known and registered services' customary ports
_handed_out: set[int] = set()


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for automatic ports (Linux), or IANA's where unknown."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 49152, 65535


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for TCP and UDP on ``host`` right now, outside the ephemeral range."""
    low = ephemeral_range()[0]
    top = low if low - _LOWEST >= 1000 else 65536  # a range starting low: no room below
    for _ in range(1000):
        port = random.randrange(_LOWEST, top)
        if port in _handed_out or not _free(host, port):
            continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port on {host} between {_LOWEST} and {top}")


def _free(host: str, port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True
