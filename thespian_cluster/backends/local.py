"""``LocalBackend``: names and groups of one node, held in a :class:`NameTable`."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import Any

from thespian_cluster.backends.behavior import RegistryBehavior
from thespian_cluster.backends.sequenced import SequencedBackend
from thespian_cluster.core.table import (
    Conflict,
    Entry,
    Member,
    Name,
    NameTable,
    Removal,
)


class LocalBackend(RegistryBehavior):
    """The default backend: everything in this node's memory, nothing shared."""

    def __init__(self, node: str) -> None:
        super().__init__(node)
        self.table = NameTable()

    def register(
        self, name: Name, address: Any, kind: str, meta: Mapping[str, Any]
    ) -> Entry | Conflict:
        return self.table.register(name, kind, address, self.node, meta)

    def unregister(self, name: Name, kind: str) -> Entry | None:
        return self.table.unregister(name, kind)

    def whereis(self, name: Name, kind: str) -> Entry | None:
        return self.table.whereis(name, kind)

    def list(self, kind: str | None = None) -> builtins.list[Entry]:
        return self.table.names(kind)

    def update(self, name: Name, kind: str, meta: Mapping[str, Any]) -> Entry | None:
        return self.table.update_meta(name, kind, meta)

    def join_group(self, group: str, address: Any, meta: Mapping[str, Any]) -> Member:
        return self.table.join(group, address, self.node, meta)

    def leave_group(self, group: str, address: Any) -> bool:
        return self.table.leave(group, address)

    def get_group_members(self, group: str) -> builtins.list[Member]:
        return self.table.members(group)

    def get_local_group_members(self, group: str) -> builtins.list[Member]:
        return self.table.members(group, node=self.node)

    def groups(self) -> builtins.list[str]:
        return self.table.groups()

    def remove_address(self, address: Any) -> Removal:
        return self.table.remove_address(address)

    def watched_addresses(self) -> builtins.list[Any]:
        return self.table.addresses()

    def snapshot(self) -> tuple[builtins.list[Entry], builtins.list[Member]]:
        # Automatic memberships are derived from the entries: save only explicit ones.
        return self.table.names(), self.table.explicit_members()


class GlobalGroupsBackend(LocalBackend):
    """The built-in distributed backend (``registry_backend = "global"``, the default of a
    node with ``cluster_enabled``): this node's names as :class:`LocalBackend` keeps them,
    and ``scope="global"`` served by :class:`SequencedBackend`, the cluster's replicated
    table (see docs/global-protocol.md)."""

    global_scope = SequencedBackend
