"""Where a node listens and what address it advertises.

Thespian's TCP transport binds every listening socket of an actor system to all
interfaces (``''``) and advertises an address it guesses by routing towards the
convention leader (or 8.8.8.8). A node should instead listen and advertise exactly
``settings.host``: the default single-node config then listens on 127.0.0.1 only,
and a node in a network namespace advertises the address its peers can reach.

:func:`bind_node_to` must run in the process that starts the actor system, before
``ActorSystem(...)``: the admin and every actor are forked from it and inherit both
the environment variable and the patched class.
"""

from __future__ import annotations

import os
from typing import Any

BIND_HOST_ENV = "THESPIAN_CLUSTER_BIND_HOST"
_BASE_ADDRESS_ENV = "THESPIAN_BASE_IPADDR"  # read by Thespian's IPActorAddress
_PATCHED = "_thespian_cluster_bind_patch"


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
    os.environ[_BASE_ADDRESS_ENV] = host


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
