"""``RegistryBehavior``: the one interface every registry backend implements.

The Registry actor receives protocol messages, validates them and calls a backend;
the backend decides. A backend is a plain Python object: no Thespian, no I/O of its
own, one instance per node, called from one actor (so it needs no locks).
Addresses are opaque values: compare them with
:func:`thespian_cluster.core.addresses.address_key`, never with ``hash()``.

Write your own by subclassing and select it in settings with a dotted path::

    registry_backend = "my_package.my_module:MyBackend"

docs/backends.md walks through a complete custom backend.
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from thespian_cluster.core.table import Conflict, Entry, Member, Name, Removal

if TYPE_CHECKING:
    from thespian_cluster.backends.scope import GlobalBackend


class RegistryBehavior(ABC):
    """Names (unique per ``(kind, name)``) and process groups for one node.

    The constructor takes the node's name as its only argument; ``node`` is what
    entries and members record as their home.

    This is the *local* scope. A backend that also serves ``scope="global"`` names the
    :class:`~thespian_cluster.backends.scope.GlobalBackend` that does in
    :attr:`global_scope`; the node's RegistryDist actor runs it.
    """

    #: The global scope's backend, or None: this backend serves the local scope only.
    global_scope: ClassVar[type[GlobalBackend] | None] = None

    def __init__(self, node: str) -> None:
        self.node = node

    # ---- names ----

    @abstractmethod
    def register(
        self, name: Name, address: Any, kind: str, meta: Mapping[str, Any]
    ) -> Entry | Conflict:
        """Give ``name`` to ``address``; a :class:`Conflict` names the current owner.

        Registering a name again for its own owner replaces its meta.
        """

    @abstractmethod
    def unregister(self, name: Name, kind: str) -> Entry | None:
        """Free ``name``; the entry that was removed, or None if it was not registered."""

    @abstractmethod
    def whereis(self, name: Name, kind: str) -> Entry | None:
        """The owner of ``name``, or None."""

    @abstractmethod
    def list(self, kind: str | None = None) -> builtins.list[Entry]:
        """Every registration of ``kind`` (of any kind when None)."""

    @abstractmethod
    def update(self, name: Name, kind: str, meta: Mapping[str, Any]) -> Entry | None:
        """Replace the meta of ``name``; None if it is not registered."""

    # ---- groups ----

    @abstractmethod
    def join_group(self, group: str, address: Any, meta: Mapping[str, Any]) -> Member:
        """Add ``address`` to ``group``; joining twice is one membership."""

    @abstractmethod
    def leave_group(self, group: str, address: Any) -> bool:
        """Remove ``address`` from ``group``; False if it was not a member."""

    @abstractmethod
    def get_group_members(self, group: str) -> builtins.list[Member]:
        """Every member of ``group``, including the automatic memberships."""

    @abstractmethod
    def get_local_group_members(self, group: str) -> builtins.list[Member]:
        """The members of ``group`` that live on this node."""

    @abstractmethod
    def groups(self) -> builtins.list[str]:
        """Every group with at least one member."""

    # ---- liveness ----

    @abstractmethod
    def remove_address(self, address: Any) -> Removal:
        """``address`` is dead: drop all its names and memberships, say what went."""

    @abstractmethod
    def watched_addresses(self) -> builtins.list[Any]:
        """The live actors this node must watch (owners and members it hosts)."""

    # ---- restarts ----

    def snapshot(self) -> tuple[builtins.list[Entry], builtins.list[Member]]:
        """Everything the backend holds, so a restarted Registry can rebuild it."""
        return self.list(), [m for g in self.groups() for m in self.get_group_members(g)]

    def restore(self, entries: builtins.list[Entry], members: builtins.list[Member]) -> None:
        """Load a :meth:`snapshot` into a fresh backend (default: replay the calls)."""
        for entry in entries:
            self.register(entry.name, entry.address, entry.kind, entry.meta)
        for member in members:
            self.join_group(member.group, member.address, member.meta)

    def is_distributed(self) -> bool:
        """True when names are shared across the cluster (scope ``global``): a
        :attr:`global_scope` is named (an override returning True without one gets the
        built-in :class:`~thespian_cluster.backends.sequenced.SequencedBackend`)."""
        return self.global_scope is not None
