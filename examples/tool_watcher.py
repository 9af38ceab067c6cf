"""A transport that waits for its server, and a watcher told when tool servers come and go.

    python examples/tool_watcher.py

Two nodes. On node a, a ``Transport`` asks for its server with ``AwaitName`` before
the server exists, and a ``Watcher`` subscribes to the automatic group
``tool_servers``. Then a server with tools registers on node b: the transport's wait
is answered, and the watcher is told ``MemberJoined``. The server exits: the watcher
is told ``MemberLeft`` with the reason ``owner_died``. Nobody polls.
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

from thespian.actors import Actor, ActorExitRequest  # noqa: E402

from thespian_cluster import (  # noqa: E402
    AwaitName,
    GroupEvent,
    GroupSnapshot,
    Register,
    RegistryExitHook,
    SubscribeGroup,
    WhereisReply,
)
from thespian_cluster.local_cluster import LocalCluster, wait_for  # noqa: E402


class Transport(Actor):
    """``("connect", registry, name)``: wait for server ``name``; ``"server"``: who it is."""

    server: Any = None

    def receiveMessage(self, message: Any, sender: Any) -> None:
        if isinstance(message, tuple) and message[0] == "connect":
            _, registry, name = message
            self.send(registry, AwaitName(name=name, scope="global", timeout=60))
        elif isinstance(message, WhereisReply):
            self.server = message.address  # the wait is over: talk to it from now on
        elif message == "server":
            self.send(sender, self.server)


class Watcher(Actor):
    """``("watch", registry)``: follow ``tool_servers``; ``"events"``: what it was told."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []

    def receiveMessage(self, message: Any, sender: Any) -> None:
        if isinstance(message, tuple) and message[0] == "watch":
            me = self.myAddress
            self.send(
                message[1], SubscribeGroup(subscriber=me, group="tool_servers", scope="global")
            )
        elif isinstance(message, GroupSnapshot):
            self.events.append(f"snapshot: {len(message.members)} tool servers")
        elif isinstance(message, GroupEvent):
            self.events.append(f"{type(message).__name__} {message.node} ({message.reason})")
        elif message == "events":
            self.send(sender, list(self.events))


class ToolServer(RegistryExitHook, Actor):
    """A server that frees its names as it exits."""


def main() -> int:
    from examples.tool_watcher import ToolServer, Transport, Watcher  # as the nodes import them

    with tempfile.TemporaryDirectory() as work, LocalCluster(Path(work)) as cluster:
        a = cluster.start("a")
        b = cluster.start("b", leader=a)
        cluster.wait_formed(["a", "b"])
        on_a = a.client()
        transport, watcher = on_a.createActor(Transport), on_a.createActor(Watcher)
        on_a.tell(transport, ("connect", a.registry(), "weather"))
        on_a.tell(watcher, ("watch", a.registry()))
        wait_for(lambda: on_a.ask(watcher, "events", 5), 10, "the watcher's snapshot")
        server = b.client().createActor(ToolServer)
        tools = {"capabilities": {"tools": {}}}
        b.ask(Register(name="weather", address=server, scope="global", meta=tools))
        found = wait_for(lambda: on_a.ask(transport, "server", 5), 10, "the transport's server")
        print(f"transport on a found its server on b: {found == server}")
        b.client().tell(server, ActorExitRequest())
        seen = wait_for(lambda: (e := on_a.ask(watcher, "events", 5)) and len(e) >= 3 and e, 10)
        for line in seen:
            print(f"watcher on a: {line}")
        expected = [
            "snapshot: 0 tool servers",
            "MemberJoined b (normal)",
            "MemberLeft b (owner_died)",
        ]
        return 0 if found == server and seen == expected else 1


if __name__ == "__main__":
    sys.exit(main())
