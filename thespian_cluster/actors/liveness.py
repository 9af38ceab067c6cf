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
    return probe(addresses, timeout)[0]


def listening(address: Any, timeout: float = 0.05) -> bool:
    """True if someone accepts connections on ``address``'s port right now.

    Evidence that arrives late (a dead letter from a send that failed a while ago) is
    checked with this first: a port that accepts again belongs to a live actor, maybe a
    new one the kernel gave the dead one's port, and its names must stay.
    """
    return bool(probe([address], timeout)[1])


def probe(addresses: Sequence[Any], timeout: float = 0.05) -> tuple[list[Any], list[Any]]:
    """``(refused, accepted)``: the addresses whose port refused a connection, and those
    whose port accepted one within ``timeout``; the rest (no TCP address, no answer in
    time, an unreachable network) are in neither."""
    dead: list[Any] = []
    alive: list[Any] = []
    pending: dict[socket.socket, Any] = {}
    selector = selectors.DefaultSelector()
    try:
        for address in addresses:
            sockname = getattr(getattr(address, "addressDetails", None), "sockname", None)
            if not sockname:
                continue  # not a TCP actor: nothing to probe
            connection = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            connection.setblocking(False)
            code = connection.connect_ex(tuple(sockname[:2]))
            if code in REFUSED:
                dead.append(address)
                connection.close()
            elif code == 0:
                alive.append(address)
                connection.close()
            elif code == errno.EINPROGRESS:
                pending[connection] = address
                selector.register(connection, selectors.EVENT_WRITE)
            else:
                connection.close()  # unreachable network and the like: unknown
        if pending:
            for key, _ in selector.select(timeout):
                connection = key.fileobj  # type: ignore[assignment]
                assert isinstance(connection, socket.socket)
                error = connection.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error in REFUSED:
                    dead.append(pending[connection])
                elif error == 0:
                    alive.append(pending[connection])
    finally:
        for connection in pending:
            connection.close()
        selector.close()
    return dead, alive
