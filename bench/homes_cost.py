"""What homing costs a Register: ``ask()`` round trips on node b of a 3-node LocalCluster.

``python -m bench.homes_cost [COUNT]`` prints JSON: the median and p90 ask() time (ms)
of ``Register`` for an actor hosted on the node asked (local and global scope, the
common path) and, for comparison, a global ``Register`` of an actor hosted on another
node (the path that finds the actor's home). Blocks alternate so drift hits all alike.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.actors import BenchWorker
from thespian_cluster import Register, Registered
from thespian_cluster.local_cluster import LocalCluster


def main(count: int = 300) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, LocalCluster(Path(tmp), log_level="WARNING") as cl:
        a = cl.start("a")
        b, c = cl.start("b", leader=a), cl.start("c", leader=a)
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
    return {
        kind: {
            "median_ms": round(statistics.median(t), 3),
            "p90_ms": round(statistics.quantiles(t, n=10)[-1], 3),
            "count": len(t),
        }
        for kind, t in times.items()
    }


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 300), indent=2))
