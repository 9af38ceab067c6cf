"""Why a name or a membership changed: the ``reason`` of every name and group event.

Asked-for changes are ``normal``; the rest say what the node saw (syn's event handler
and gproc's monitors give the same kind of reason).
"""

from __future__ import annotations

NORMAL = "normal"  #: asked for: Register, Unregister, UpdateMeta, JoinGroup, LeaveGroup
OWNER_DIED = "owner_died"  #: its actor died (exit hook, dead letter, liveness probe)
NODE_DOWN = "node_down"  #: its node left the cluster's view and was purged
CONFLICT = "conflict"  #: another owner won the name when two sides of a partition merged
PURGED = "purged"  #: gone in a snapshot this node installed (decided while it was away)
LOST = "lost"  #: gone from the store without a client asking (an etcd lease expired)

REASONS: frozenset[str] = frozenset([NORMAL, OWNER_DIED, NODE_DOWN, CONFLICT, PURGED, LOST])
