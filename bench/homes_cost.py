"""What homing costs a Register: ``ask()`` round trips on node b of a 3-node LocalCluster.

``python -m bench.homes_cost [COUNT] [--netns]`` prints JSON: the median and p90 ask() time (ms)
of ``Register`` for an actor hosted on the node asked (local and global scope, the
common path: the same actor, so a probe's answer is reused), the first global claim of
each of ``FRESH`` new local actors, and a global ``Register`` of an actor hosted on
another node (the path that finds the actor's home). With ``--netns`` each node runs in
its own network namespace with its own IP, as on separate hosts (needs root). Blocks
alternate so drift hits all alike.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from thespian.actors import ActorExitRequest

from bench.actors import BenchWorker
from thespian_cluster import Register, Registered
from thespian_cluster.local_cluster import LocalCluster
from thespian_cluster.netns import NetnsLab

FRESH = 20  # actors claimed once each (every one is a process: keep it small)


def main(count: int = 300, netns: bool = False) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        lab = stack.enter_context(NetnsLab()) if netns else None
        cl = stack.enter_context(LocalCluster(Path(tmp), log_level="WARNING"))

        def place(name: str) -> dict[str, Any]:
            return lab.place(name) if lab is not None else {}

        a = cl.start("a", **place("a"))
        b, c = cl.start("b", leader=a, **place("b")), cl.start("c", leader=a, **place("c"))
        cl.wait_formed(["a", "b", "c"], timeout=30)
        here = b.client().createActor(BenchWorker)
        there = c.client().createActor(BenchWorker)
        kinds = {
            "register_local_scope_local_actor": (here, "local"),
            "register_global_scope_local_actor": (here, "global"),
            "register_global_scope_remote_actor": (there, "global"),
        }
        times: dict[str, list[float]] = {k: [] for k in kinds}
        block = max(1, count // 10)
        for first in range(0, count, block):
            for kind, (address, scope) in kinds.items():
                for i in range(first, min(count, first + block)):
                    started = time.perf_counter()
                    reply = b.ask(Register(name=f"{kind}-{i}", address=address, scope=scope))
                    times[kind].append((time.perf_counter() - started) * 1000)
                    assert isinstance(reply, Registered), reply
        # First claims: an actor never seen is probed once (on one host, where the IP
        # cannot tell the nodes apart); each of these actors is claimed only once.
        fresh = [b.client().createActor(BenchWorker) for _ in range(FRESH)]
        times["register_global_scope_local_actor_first_claim"] = []
        for i, address in enumerate(fresh):
            started = time.perf_counter()
            reply = b.ask(Register(name=f"first-{i}", address=address, scope="global"))
            times["register_global_scope_local_actor_first_claim"].append(
                (time.perf_counter() - started) * 1000
            )
            assert isinstance(reply, Registered), reply
        for address in fresh:
            b.client().tell(address, ActorExitRequest())
    return {
        kind: {
            "median_ms": round(statistics.median(t), 3),
            "p90_ms": round(statistics.quantiles(t, n=10)[-1], 3),
            "count": len(t),
        }
        for kind, t in times.items()
    }


if __name__ == "__main__":
    numbers = [int(arg) for arg in sys.argv[1:] if arg.isdigit()]
    result = main(numbers[0] if numbers else 300, netns="--netns" in sys.argv)
    print(json.dumps(result, indent=2))
