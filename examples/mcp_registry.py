"""An MCP-style registry across three nodes: servers and transports registered on
different nodes, found and listed from every node.

    python examples/mcp_registry.py

Each server declares its MCP capabilities in ``meta``; the registry files it into the
automatic groups (``servers``, ``tool_servers``, ``resource_servers``,
``prompt_servers``; transports into ``transports``), cluster-wide with
``scope="global"``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from examples import importable

importable()

from thespian.actors import Actor  # noqa: E402

from thespian_cluster import (  # noqa: E402
    GroupMembers,
    ListNames,
    Register,
    Registered,
    Whereis,
    ask,
    lookup,
)
from thespian_cluster.demo import wait_global_settled  # noqa: E402
from thespian_cluster.local_cluster import LocalCluster  # noqa: E402

SERVERS = {  # name -> (node, capabilities)
    "weather": ("a", {"tools": {}, "resources": {}}),
    "calendar": ("b", {"tools": {}, "prompts": {}}),
    "filesystem": ("c", {"resources": {}}),
}
TRANSPORTS = {"stdio": "a", "http-sse": "c"}


class McpServer(Actor):
    """Stands in for an MCP server: answers ``("call", tool)`` with a result tuple."""

    def receiveMessage(self, message: Any, sender: Any) -> None:
        if isinstance(message, tuple) and message[:1] == ("call",):
            self.send(sender, ("result", message[1], "sunny"))


def main() -> int:
    from examples.mcp_registry import McpServer  # by module name, as the nodes import it

    with tempfile.TemporaryDirectory() as work, LocalCluster(Path(work)) as cluster:
        a = cluster.start("a")
        nodes = {"a": a, "b": cluster.start("b", leader=a), "c": cluster.start("c", leader=a)}
        cluster.wait_formed(list(nodes))
        wait_global_settled(cluster.nodes.values())  # the joins' takeovers are done
        for name, (on, capabilities) in SERVERS.items():
            server = nodes[on].client().createActor(McpServer)
            meta = {"capabilities": capabilities, "version": "1.0"}
            reply = nodes[on].ask(Register(name=name, address=server, scope="global", meta=meta))
            assert isinstance(reply, Registered), reply
            print(f"server {name} registered on node {on}")
        for name, on in TRANSPORTS.items():
            transport = nodes[on].client().createActor(McpServer)
            reply = nodes[on].ask(
                Register(name=name, address=transport, kind="transport", scope="global")
            )
            assert isinstance(reply, Registered), reply
            print(f"transport {name} registered on node {on}")

        b = nodes["b"]
        listed = cluster_wide(b, "server", len(SERVERS))
        print("servers seen from b:", ", ".join(f"{n.name}@{n.node}" for n in listed))
        transports = cluster_wide(b, "transport", len(TRANSPORTS))
        print("transports seen from b:", ", ".join(f"{n.name}@{n.node}" for n in transports))
        for group in ("tool_servers", "resource_servers", "prompt_servers", "transports"):
            members = b.ask(GroupMembers(group=group, scope="global")).members
            print(f"group {group}: on nodes {sorted(m.node for m in members)}")
        # Find a tool server from node c and call it.
        c = nodes["c"]
        weather = c.ask(Whereis(name="weather", scope="global"))
        entry = lookup("weather", scope="global", node_dir=c.node_dir)
        assert entry is not None and entry.address == weather.address
        answer = ask(c.client(), weather.address, ("call", "forecast"), 10)
        print(f"c calls weather (on {weather.node}) -> {answer}")
        assert answer == ("result", "forecast", "sunny")
    return 0


def cluster_wide(node: Any, kind: str, expected: int) -> list[Any]:
    """The cluster's names of ``kind`` as ``node`` sees them, once all ``expected`` arrived."""
    from thespian_cluster.local_cluster import wait_for

    return wait_for(
        lambda: (
            names
            if len(names := node.ask(ListNames(kind=kind, scope="global")).names) == expected
            else None
        ),
        10,
        f"{expected} {kind}s",
    )


if __name__ == "__main__":
    sys.exit(main())
