"""What the Registry does with requests that are not for its own (local) table.

The node's Registry is the one address a user needs. It answers local names itself;
for the rest, :class:`FrontDoor` decides:

* **global writes** (``Register`` / ``Unregister`` / ``UpdateMeta`` / ``JoinGroup`` /
  ``LeaveGroup`` with ``scope="global"``) go to this node's RegistryDist wrapped in
  :class:`~thespian_cluster.global_messages.Forwarded` with the client's address;
  RegistryDist answers the client directly (one hop, not two);
* **global reads** (``Whereis``, ``ListNames``, ``GroupMembers``, ``ListGroups``) are
  answered here from the node table's global mirror, which the global backend keeps:
  no extra message, so a global ``Whereis`` costs what a local one does. A backend
  that keeps no mirror (``feeds_node_table = False``) gets them forwarded instead;
* **global events** (``SubscribeNames``, ``SubscribeGroup``, their unsubscribes and
  ``AwaitName`` with ``scope="global"``) go to RegistryDist too, which serves them;
* **node requests** (``ClusterNodes``, ``GetNodeStatus``, ...) go to NodeMonitor,
  and **partition requests** to SplitBrainDetector, the same way.

Where those actors are comes from the node table (each publishes its address when it
starts). Without ``cluster_enabled`` every one of these answers
``RegistryError(not_distributed)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from thespian_cluster.actors.event_service import EVENT_REQUESTS
from thespian_cluster.backends.reads import read_reply, whereis_reply
from thespian_cluster.cluster_messages import (
    ClusterNodes,
    ForceNodeCheck,
    ForceResolution,
    GetNodeHealth,
    GetNodeStatus,
    GetPartitionStatus,
    SubscribeNodeEvents,
    SubscribePartitionEvents,
    UnsubscribeNodeEvents,
    UnsubscribePartitionEvents,
)
from thespian_cluster.core.replica import build_table
from thespian_cluster.global_messages import Forwarded, GetGlobalStatus
from thespian_cluster.messages import (
    ErrorCode,
    JoinGroup,
    LeaveGroup,
    Register,
    RegisterMany,
    RegistryError,
    Request,
    Unregister,
    UnregisterMany,
    UpdateMeta,
    Whereis,
)
from thespian_cluster.node_table import NotMirrored, TableReader

GLOBAL_WRITES = (
    Register,
    Unregister,
    UpdateMeta,
    JoinGroup,
    LeaveGroup,
    RegisterMany,
    UnregisterMany,
)
NODE_REQUESTS = (
    ClusterNodes,
    GetNodeStatus,
    GetNodeHealth,
    ForceNodeCheck,
    SubscribeNodeEvents,
    UnsubscribeNodeEvents,
)
#: Request types routed to another actor of the node, by the role that answers them.
PARTITION_REQUESTS = (
    GetPartitionStatus,
    ForceResolution,
    SubscribePartitionEvents,
    UnsubscribePartitionEvents,
)
ROUTES: dict[type, str] = {
    **{t: "registry_dist" for t in (*GLOBAL_WRITES, *EVENT_REQUESTS, GetGlobalStatus)},
    **{t: "node_monitor" for t in NODE_REQUESTS},
    **{t: "split_brain_detector" for t in PARTITION_REQUESTS},
}


def register_route(request_type: type, role: str) -> None:
    """Let the Registry forward ``request_type`` to the node's ``role`` actor."""
    ROUTES[request_type] = role


Send = tuple[Any, Any]  # (to, message)


class FrontDoor:
    """See the module docstring. One per Registry."""

    def __init__(self, node_dir: Path, node: str, cluster_enabled: bool) -> None:
        self.node = node
        self.cluster_enabled = cluster_enabled
        self.reader = TableReader(node_dir)

    def handles(self, request: Request) -> bool:
        """Is ``request`` for another actor or for the global table (not the local one)?"""
        return getattr(request, "scope", "local") == "global" or (
            type(request) in ROUTES and not hasattr(request, "scope")
        )

    def take(self, request: Request, client: Any) -> Send:
        """What to send where for ``request`` from ``client``: a reply to the client, or
        the forwarded request to the actor that answers it."""
        if not self.cluster_enabled:
            return client, _error(
                request,
                ErrorCode.NOT_DISTRIBUTED,
                f"{type(request).__name__} needs a cluster node (cluster_enabled = true)",
            )
        role = ROUTES.get(type(request))
        if role is not None:
            return self._forward(request, client, role)
        return self._read(request, client)

    def _forward(self, request: Request, client: Any, role: str) -> Send:
        target = self.reader.agent(role)
        if target is None:
            return client, _error(request, ErrorCode.UNAVAILABLE, f"this node's {role} is not up")
        return target, Forwarded(request=request, reply_to=client)

    # ---- global reads, from the mirror ----------------------------------------------------

    def _read(self, request: Request, client: Any) -> Send:
        try:
            if isinstance(request, Whereis):
                entry = self.reader.lookup(request.name, request.kind, "global")
                return client, whereis_reply(request, entry)
            entries, members = self.reader.global_records()
        except NotMirrored:  # the backend keeps no mirror: it answers reads itself
            return self._forward(request, client, "registry_dist")
        return client, read_reply(request, build_table(entries, members), self.node)


def _error(request: Request, code: ErrorCode, detail: str) -> RegistryError:
    return RegistryError(request_id=request.request_id, code=code, detail=detail)
