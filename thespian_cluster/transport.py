"""Where a node listens, what address it advertises, and how many idle sockets it keeps.

Thespian's TCP transport binds every listening socket of an actor system to all
interfaces (``''``) and advertises an address it guesses by routing towards the
convention leader (or 8.8.8.8). A node should instead listen and advertise exactly
``settings.host``: the default single-node config then listens on 127.0.0.1 only,
and a node in a network namespace advertises the address its peers can reach.

:func:`bind_node_to` must run in the process that starts the actor system, before
``ActorSystem(...)``: the admin and every actor are forked from it and inherit both
the environment variable and the patched class.

:func:`limit_idle_sockets` bounds Thespian's pool of idle outgoing connections.
Thespian keeps one open per peer it ever sent to, for as long as both live, and
its event loop registers every one of them in a fresh selector on *each* turn: a
Registry that has answered or probed 40 actors handled half as many requests per
second as one that had not (measured: 588/s against 1,203/s). Closing the oldest
beyond a small pool costs a reconnect (a loopback handshake, ~0.1 ms) now and then
instead of a slower loop forever; the peer sees the close and drops its end too.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

BIND_HOST_ENV = "THESPIAN_CLUSTER_BIND_HOST"
#: Idle connections an actor process keeps for reuse; older ones are closed.
MAX_IDLE_SOCKETS = 16
BASE_ADDRESS_ENV = "THESPIAN_BASE_IPADDR"  # read by Thespian's IPActorAddress
_PATCHED = "_thespian_cluster_bind_patch"
_POOL_PATCHED = "_thespian_cluster_pool_patch"


def bind_node_to(host: str) -> None:
    """Listen on ``host`` only and advertise it, in this process and its forks."""
    advertise(host)
    os.environ[BIND_HOST_ENV] = host
    _patch_bind_args()


def advertise(host: str) -> None:
    """Make Thespian in this process use ``host`` as this machine's address.

    Left to itself Thespian replaces loopback with the address of its default route,
    so a client would look for a loopback-only node where it does not listen.
    """
    os.environ[BASE_ADDRESS_ENV] = host


def _patch_bind_args() -> None:
    from thespian.system.transport.IPBase import IPActorAddress

    if getattr(IPActorAddress, _PATCHED, False):
        return
    original = IPActorAddress.bindArgs

    def bind_args(self: Any) -> tuple[tuple[str, int], ...]:
        host = os.environ.get(BIND_HOST_ENV)
        address, port = self.bindname[0], self.bindname[1]
        if host and address in ("", "0.0.0.0"):
            return ((host, port),)
        return original.fget(self)

    IPActorAddress.bindArgs = property(bind_args)
    setattr(IPActorAddress, _PATCHED, True)


def limit_idle_sockets(limit: int = MAX_IDLE_SOCKETS) -> None:
    """Keep at most ``limit`` idle connections per process, here and in forks."""
    from thespian.system.transport.TCPTransport import TCPTransport

    if getattr(TCPTransport, _POOL_PATCHED, None) == limit:
        return
    original = getattr(TCPTransport, "_thespian_cluster_original_finish", None)
    if original is None:
        original = TCPTransport._finishIntent
        TCPTransport._thespian_cluster_original_finish = original

    def finish_intent(self: Any, intent: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, intent, *args, **kwargs)
        excess = len(getattr(self, "_openSockets", ())) - limit
        if excess > 0:
            self.close_oldest_idle_sockets(excess)
        return result

    TCPTransport._finishIntent = finish_intent
    setattr(TCPTransport, _POOL_PATCHED, limit)


#: Transmits an actor may have in flight (sent, not yet acknowledged) before it queues
#: every further send behind them. Thespian's default is 20, for *all* peers together:
#: a sequencer sending deltas to one hung or cut-off node (whose kernel accepts the
#: connection, or whose SYNs go unanswered for two minutes) filled that in two seconds
#: and then could not even answer a local client. Plenty here; a peer that is down
#: is no longer sent to, and what is in flight to it times out.
MAX_IN_FLIGHT = 2000
#: How long one transmit may wait before Thespian gives it up (its default: 5 minutes).
TRANSMIT_TIMEOUT = timedelta(seconds=30)


def widen_transmit_limits() -> None:
    """Let a node's actors keep sending while some peer is unreachable (in this
    process and its forks; call before ``ActorSystem(...)``)."""
    from thespian.system import transport as thespian_transport
    from thespian.system.transport import asyncTransportBase

    asyncTransportBase.MAX_PENDING_TRANSMITS = MAX_IN_FLIGHT
    asyncTransportBase.MAX_QUEUED_TRANSMITS = max(
        asyncTransportBase.MAX_QUEUED_TRANSMITS, MAX_IN_FLIGHT
    )
    asyncTransportBase.QUEUE_TRANSMIT_UNBLOCK_THRESHOLD = int(MAX_IN_FLIGHT * 0.8)
    asyncTransportBase.DROP_TRANSMITS_LEVEL = MAX_IN_FLIGHT + 100
    thespian_transport.DEFAULT_MAX_TRANSMIT_PERIOD = TRANSMIT_TIMEOUT
