"""A supervised worker pool that spreads work over a process group, on two nodes.

    python examples/worker_pool.py

On each node a ``Pool`` supervisor starts three workers. Each worker joins the global
group ``pool`` when it starts (and the registry drops it when it dies), so the group
is always the live workers of the whole cluster. A client sends jobs round robin to
the group's members; a SIGKILLed worker is restarted by its supervisor and rejoins.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from itertools import cycle
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from examples import importable

importable()

from thespian.actors import Actor  # noqa: E402

from thespian_cluster import (  # noqa: E402
    ChildSpec,
    GroupMembers,
    JoinGroup,
    StartSupervisor,
    SupervisedBy,
    Supervisor,
    ask,
)
from thespian_cluster.actors.exit_hook import node_registry  # noqa: E402
from thespian_cluster.demo import wait_global_settled  # noqa: E402
from thespian_cluster.local_cluster import LocalCluster, wait_for  # noqa: E402

GROUP = "pool"
PER_NODE = 3


class PoolWorker(Actor):
    """Joins ``pool`` once supervised; answers ``("square", n)`` with (n*n, node, pid)."""

    def receiveMessage(self, message: Any, sender: Any) -> None:
        if isinstance(message, SupervisedBy):
            # The node's Registry: actors of a node find it without a lookup.
            self.send(
                node_registry(), JoinGroup(group=GROUP, address=self.myAddress, scope="global")
            )
        elif isinstance(message, tuple) and message[:1] == ("square",):
            node = os.environ.get("THESPIAN_CLUSTER_NODE_DIR", "?").rsplit("/", 1)[-1]
            self.send(sender, (message[1] ** 2, node.split("-")[0], os.getpid()))


class Pool(Supervisor):
    """Three workers, restarted one_for_one."""

    strategy = "one_for_one"

    def child_specs(self) -> list[ChildSpec]:
        return [ChildSpec(id=f"worker-{i}", actor_class=PoolWorker) for i in range(PER_NODE)]


def members(node: Any) -> list[Any]:
    return node.ask(GroupMembers(group=GROUP, scope="global")).members


def main() -> int:
    from examples.worker_pool import Pool  # by module name, as the nodes import it

    with tempfile.TemporaryDirectory() as work, LocalCluster(Path(work)) as cluster:
        a = cluster.start("a")
        b = cluster.start("b", leader=a)
        cluster.wait_formed(["a", "b"])
        wait_global_settled(cluster.nodes.values())  # the joins' takeovers are done
        for node in (a, b):
            pool = node.client().createActor(Pool)
            ask(node.client(), pool, StartSupervisor(), 10)
        wait_for(lambda: len(members(a)) == 2 * PER_NODE, 10, "six workers in the group")
        print(
            f"group {GROUP!r}: {len(members(a))} workers on nodes "
            f"{sorted({m.node for m in members(a)})}"
        )

        client = a.client()
        results = []
        targets = cycle(members(a))
        for n in range(12):
            results.append(ask(client, next(targets).address, ("square", n), 10))
        assert [r[0] for r in results] == [n * n for n in range(12)]
        spread = {node: sum(1 for r in results if r[1] == node) for node in ("a", "b")}
        print(f"12 jobs done; by node: {spread}")
        assert spread == {"a": 6, "b": 6}

        victim = members(b)[0].address
        pid = ask(client, victim, ("square", 0), 10)[2]
        os.kill(pid, signal.SIGKILL)
        print(f"SIGKILL worker pid {pid} on b")
        wait_for(
            lambda: len(ms := members(a)) == 2 * PER_NODE and victim not in [m.address for m in ms],
            10,
            "the restarted worker back in the group",
        )
        print(f"its supervisor restarted it; the group has {len(members(a))} live workers again")
    return 0


if __name__ == "__main__":
    sys.exit(main())
