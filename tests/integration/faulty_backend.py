"""A LocalBackend with faults on cue, loaded by name in a real Registry (no mocks).

Names and groups starting with a marker make one call go wrong in the Registry's own
process; the tests then check what the Registry's replies and node table say.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from thespian_cluster.backends import LocalBackend
from thespian_cluster.core.table import Conflict, Entry, Member, Name

#: ``meta={"fault": BACKEND}``: the backend changes its memory, then raises.
BACKEND = "backend"
#: ``meta={"fault": TABLE}``: the backend hands the Registry a record the node table
#: cannot encode (a lock in its meta): the table write fails after memory changed.
TABLE = "table"
#: Unregister / LeaveGroup of a name or group starting with this: memory changes, then
#: the backend raises.
ON_REMOVE = "fault-on-remove"


def _fault(meta: Mapping[str, Any]) -> Any:
    return meta.get("fault") if isinstance(meta, Mapping) else None


def _broken(record: Any) -> Any:
    return replace(record, meta={**record.meta, "lock": threading.Lock()})


class FaultyBackend(LocalBackend):
    """Faults on cue (see the markers above), and a first probe round that raises."""

    def __init__(self, node: str) -> None:
        super().__init__(node)
        self.probe_rounds = 0

    def register(
        self, name: Name, address: Any, kind: str, meta: Mapping[str, Any]
    ) -> Entry | Conflict:
        result = super().register(name, address, kind, meta)
        if _fault(meta) == BACKEND:
            raise RuntimeError("injected backend fault")
        if _fault(meta) == TABLE and isinstance(result, Entry):
            return _broken(result)
        return result

    def update(self, name: Name, kind: str, meta: Mapping[str, Any]) -> Entry | None:
        entry = super().update(name, kind, meta)
        if _fault(meta) == BACKEND:
            raise RuntimeError("injected backend fault")
        if _fault(meta) == TABLE and entry is not None:
            return _broken(entry)
        return entry

    def unregister(self, name: Name, kind: str) -> Entry | None:
        entry = super().unregister(name, kind)
        if isinstance(name, str) and name.startswith(ON_REMOVE):
            raise RuntimeError("injected backend fault")
        return entry

    def join_group(self, group: str, address: Any, meta: Mapping[str, Any]) -> Member:
        member = super().join_group(group, address, meta)
        if _fault(meta) == BACKEND:
            raise RuntimeError("injected backend fault")
        if _fault(meta) == TABLE:
            return _broken(member)
        return member

    def leave_group(self, group: str, address: Any) -> bool:
        was_member = super().leave_group(group, address)
        if group.startswith(ON_REMOVE):
            raise RuntimeError("injected backend fault")
        return was_member

    def watched_addresses(self) -> builtins.list[Any]:
        self.probe_rounds += 1
        if self.probe_rounds == 1:
            raise RuntimeError("injected fault in the first liveness-probe round")
        return super().watched_addresses()
