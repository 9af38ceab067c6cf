"""Ask a node for its split-brain verdict, on builds with and without a SplitBrainDetector.

``GetPartitionStatus`` (``thespian_cluster.cluster_messages``) is answered by the
node's SplitBrainDetector. The demo, ``status`` and the metrics all want it when it
exists and must keep working when it does not, so they ask through
:func:`partition_status`, which returns ``None`` when the node cannot tell.
"""

from __future__ import annotations

import importlib
from typing import Any

from thespian.actors import ActorSystem

from thespian_cluster.node import NodeError, cluster_agent, registry_address, root_address

DETECTOR = "split_brain_detector"


def partition_status(system: ActorSystem, timeout: float = 3.0) -> Any | None:
    """The node's ``PartitionStatus`` reply, or ``None`` (no detector, or no answer).

    Asks the Registry (the front door) first; if it does not route the request,
    asks the SplitBrainDetector itself.
    """
    messages = importlib.import_module("thespian_cluster.cluster_messages")
    request_type = getattr(messages, "GetPartitionStatus", None)
    reply_type = getattr(messages, "PartitionStatus", None)
    if request_type is None or reply_type is None:
        return None
    try:
        reply = system.ask(registry_address(system), request_type(), timeout)
        if isinstance(reply, reply_type):
            return reply
        detector = cluster_agent(system, root_address(system), DETECTOR)
        reply = system.ask(detector, request_type(), timeout)
    except NodeError:
        return None
    return reply if isinstance(reply, reply_type) else None
