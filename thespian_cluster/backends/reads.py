"""The global scope's read replies, built from what a node knows.

``Whereis``, ``ListNames``, ``GroupMembers`` and ``ListGroups`` of scope global get
the same replies wherever they are answered: by the Registry from the node table's
mirror (the usual way, no message), or by a backend that keeps no mirror
(``feeds_node_table = False``) in :meth:`~thespian_cluster.backends.scope.GlobalBackend.read`,
from a :class:`~thespian_cluster.core.table.NameTable` it builds from its store.
"""

from __future__ import annotations

from thespian_cluster.core.table import Entry, NameTable
from thespian_cluster.messages import (
    ErrorCode,
    GroupList,
    GroupMember,
    GroupMembers,
    GroupMembersReply,
    ListGroups,
    ListNames,
    NameList,
    RegistrationInfo,
    RegistryError,
    Reply,
    Request,
    Whereis,
    WhereisReply,
)

#: The read requests of a scope.
READS = (Whereis, ListNames, GroupMembers, ListGroups)


def whereis_reply(request: Whereis, entry: Entry | None) -> WhereisReply:
    """The answer to ``request`` when ``entry`` holds the name (None: nobody does)."""
    if entry is None:
        return WhereisReply(request_id=request.request_id, name=request.name, kind=request.kind)
    return WhereisReply(
        request_id=request.request_id,
        name=entry.name,
        kind=entry.kind,
        address=entry.address,
        node=entry.node,
        meta=dict(entry.meta),
    )


def read_reply(request: Request, table: NameTable, node: str) -> Reply:
    """The answer to a read of ``table``; ``node`` is this node (``local_only``)."""
    if isinstance(request, Whereis):
        return whereis_reply(request, table.whereis(request.name, request.kind))
    if isinstance(request, ListNames):
        return NameList(
            request_id=request.request_id,
            names=[RegistrationInfo.of(e) for e in table.names(request.kind)],
        )
    if isinstance(request, GroupMembers):
        members = table.members(request.group, node=node if request.local_only else None)
        return GroupMembersReply(
            request_id=request.request_id,
            group=request.group,
            members=[GroupMember.of(m) for m in members],
        )
    if isinstance(request, ListGroups):
        return GroupList(request_id=request.request_id, groups=table.groups())
    return RegistryError(
        request_id=request.request_id,
        code=ErrorCode.UNKNOWN_REQUEST,
        detail=f"{type(request).__name__} is not a read",
    )
