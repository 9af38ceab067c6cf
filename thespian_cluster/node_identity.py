"""A node's identity for one start: its incarnation id and start time.

``start_node`` writes a fresh identity into the node's directory before the actor
system starts; NodeMonitor reads it. So a NodeMonitor restarted by its supervisor
keeps the node's incarnation (its peers must not take it for a new node), while a
new start of the node always gets a new one (its peers must not take it for the
old one).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

IDENTITY_FILE = "identity.json"


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    incarnation: str  # 32 hex digits
    started_at: float  # wall-clock seconds


def new_identity(node_dir: Path) -> NodeIdentity:
    """Make and save a fresh identity for a node starting now."""
    identity = NodeIdentity(uuid.uuid4().hex, time.time())
    node_dir.mkdir(parents=True, exist_ok=True)
    partial = node_dir / f".{IDENTITY_FILE}.{os.getpid()}"
    partial.write_text(
        json.dumps({"incarnation": identity.incarnation, "started_at": identity.started_at})
    )
    partial.replace(node_dir / IDENTITY_FILE)
    return identity


def read_identity(node_dir: Path) -> NodeIdentity:
    """The identity ``start_node`` saved; raises OSError/ValueError if there is none."""
    raw = json.loads((node_dir / IDENTITY_FILE).read_text())
    incarnation = str(raw["incarnation"])
    if len(incarnation) != 32 or int(incarnation, 16) < 0:
        raise ValueError(f"bad incarnation {incarnation!r}")
    return NodeIdentity(incarnation, float(raw["started_at"]))
