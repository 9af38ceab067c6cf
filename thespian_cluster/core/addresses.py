"""Hashable keys for actor addresses.

Thespian's ``ActorAddress`` compares equal across processes but is not hashable,
so tables key on the transport details instead: ``(ip, port)`` of a TCP address.
This module only duck-types the address, so the cores stay Thespian-free.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

AddressKey = Hashable


def address_key(address: Any) -> AddressKey:
    """A hashable, process-independent key for an actor address."""
    details = getattr(address, "addressDetails", None)
    sockname = getattr(details, "sockname", None)
    if sockname is not None:
        return ("tcp", *tuple(sockname))
    return ("repr", str(address))
