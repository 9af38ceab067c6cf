"""What every global backend does with a client's write: split it into items, gather
the items' answers, and reply once (one reply, or a batch's per-item results)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from thespian_cluster.backends.scope import Deferred
from thespian_cluster.messages import (
    JoinGroup,
    LeaveGroup,
    Register,
    RegisteredMany,
    RegisterMany,
    Reply,
    Request,
    Unregister,
    UnregisteredMany,
    UnregisterMany,
    UpdateMeta,
)


def write_items(request: Request) -> list[Any] | None:
    """The write requests a client request stands for, in order (None: not a write).
    A batch's items arrive as they came: validate each (one bad item fails alone)."""
    if isinstance(request, RegisterMany):
        return list(request.registrations)
    if isinstance(request, UnregisterMany):
        return list(request.names)
    if isinstance(request, Register | Unregister | UpdateMeta | JoinGroup | LeaveGroup):
        return [request]
    return None


@dataclass
class Gathered:
    """A client waiting for the answers of its request's items."""

    reply_to: Deferred
    request: Request
    results: list[Reply | None]  # filled in as the items are answered
    items: list[Request] = field(default_factory=list)  # the validated items, if kept
    waiting: int = 0

    def reply(self) -> Reply:
        """The client's reply: a batch's per-item results, or the one item's answer."""
        if isinstance(self.request, RegisterMany):
            return RegisteredMany(request_id=self.request.request_id, results=self.results)
        if isinstance(self.request, UnregisterMany):
            return UnregisteredMany(request_id=self.request.request_id, results=self.results)
        result = self.results[0]
        assert result is not None
        return result
