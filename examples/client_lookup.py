"""A plain client script that finds a server with ``lookup()`` and talks to it.

    python examples/client_lookup.py                      # starts a node, then the client
    python examples/client_lookup.py --port 1900 --node-dir DIR --name echo   # client only

``lookup()`` reads the node's table on this host, with no message to any actor; the
client then talks to the server directly. The only thing it needs from the node is
its admin port (to get a client handle, :func:`~thespian_cluster.connect`), its
directory (``settings.node_dir``) and the cluster cookie (here from the environment,
``THESPIAN_CLUSTER_COOKIE``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from examples import importable

importable()

from thespian.actors import Actor  # noqa: E402

from thespian_cluster import Register, Registered, ask, connect, lookup  # noqa: E402
from thespian_cluster.local_cluster import LocalCluster  # noqa: E402
from thespian_cluster.node import disconnect  # noqa: E402


class Echo(Actor):
    """The server: answers ``("echo", text)`` with ``text`` upper-cased."""

    def receiveMessage(self, message: Any, sender: Any) -> None:
        if isinstance(message, tuple) and message[:1] == ("echo",):
            self.send(sender, str(message[1]).upper())


def client(port: int, node_dir: Path, name: str, scope: str = "global") -> int:
    """Find ``name`` without a message, then ask it something."""
    entry = lookup(name, scope=scope, node_dir=node_dir)
    if entry is None:
        print(f"{name!r} is not registered", file=sys.stderr)
        return 1
    print(f"lookup({name!r}) -> {entry.address} on node {entry.node}")
    system = connect(port)
    try:
        answer = ask(system, entry.address, ("echo", "hello"), 10)
    finally:
        disconnect(system)
    print(f"{name} answered {answer!r}")
    return 0 if answer == "HELLO" else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int)
    parser.add_argument("--node-dir", type=Path)
    parser.add_argument("--name", default="echo")
    args = parser.parse_args()
    if args.port is not None:
        return client(args.port, args.node_dir, args.name)

    from examples.client_lookup import Echo  # by module name, as the node imports it

    with tempfile.TemporaryDirectory() as work, LocalCluster(Path(work)) as cluster:
        node = cluster.start("a")
        echo = node.client().createActor(Echo)
        assert isinstance(node.ask(Register(name="echo", address=echo, scope="global")), Registered)
        print(f"node a on port {node.port} holds 'echo'; now a separate client process:")
        command = [sys.executable, __file__, "--port", str(node.port), "--node-dir"]
        env = {**os.environ, "THESPIAN_CLUSTER_COOKIE": cluster.cookie}  # the cluster's cookie
        return subprocess.run([*command, str(node.node_dir)], check=False, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
