"""Liveness probes without messages: is anyone still listening on an actor's port?

Every Thespian actor listens on its own TCP port for as long as its process lives.
When the process is gone the kernel refuses a connection to that port at once, so
a non-blocking ``connect()`` tells a dead actor from a live one without sending it
anything. (A ``Thespian_StatusReq`` would tell as much, but each answer leaves a
connection open in the prober for as long as both live, and Thespian's event loop
pays for every open connection on every turn: a Registry probing 40 actors that
way answered requests at half its speed.)

The kernel completes the handshake even while the actor is busy or stopped, so a
busy actor is never taken for dead; and an address that does not answer within the
timeout (a remote host gone quiet) is reported as *unknown*, not dead.
"""

from __future__ import annotations

import errno
import selectors
import socket
from collections.abc import Sequence
from typing import Any

REFUSED = (errno.ECONNREFUSED,)


def refused(addresses: Sequence[Any], timeout: float = 0.05) -> list[Any]:
    """The addresses whose port refuses connections (their actor is dead)."""
    dead: list[Any] = []
    pending: dict[socket.socket, Any] = {}
    selector = selectors.DefaultSelector()
    try:
        for address in addresses:
            sockname = getattr(getattr(address, "addressDetails", None), "sockname", None)
            if not sockname:
                continue  # not a TCP actor: nothing to probe
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probe.setblocking(False)
            code = probe.connect_ex(tuple(sockname[:2]))
            if code in REFUSED:
                dead.append(address)
                probe.close()
            elif code in (0, errno.EINPROGRESS):
                pending[probe] = address
                selector.register(probe, selectors.EVENT_WRITE)
            else:
                probe.close()  # unreachable network and the like: unknown
        if pending:
            for key, _ in selector.select(timeout):
                probe = key.fileobj  # type: ignore[assignment]
                assert isinstance(probe, socket.socket)
                if probe.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) in REFUSED:
                    dead.append(pending[probe])
    finally:
        for probe in pending:
            probe.close()
        selector.close()
    return dead
