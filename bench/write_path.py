"""Where a write's time goes: CPU per request in every process it crosses.

Run ``python -m bench.write_path [--count N] [--batches B]``; prints one JSON object.

Three nodes (``a`` sequences; requests are asked on ``b``, as in the cluster family).
For each kind of request, the CPU time (user + system, from ``/proc/<pid>/stat``) that
every process on the path spent, divided by the number of requests, next to the wall
time per request:

* ``echo``: ``ask()`` of an echo actor on ``b`` (the transport's floor);
* ``register_local``: ``Register`` in local scope (client -> b's Registry -> client);
* ``register_global``: ``Register(scope="global")`` (client -> b's Registry -> b's
  RegistryDist -> a's RegistryDist (the sequencer) -> b's RegistryDist -> client, and the
  delta to c);
* ``register_many_global``: ``RegisterMany`` of 1,000 global names, per name.

CPU per process is immune to what else the machine runs; wall time is not. The
``client`` row is this benchmark's own process (pickling, the ask's socket work); a
process's CPU includes its idle timers (heartbeats, probes), measured alone over the
same time as ``idle`` and subtracted.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.actors import BenchWorker, Echo
from thespian_cluster import Register, Registered, RegisteredMany, RegisterMany
from thespian_cluster.local_cluster import ClusterNode, LocalCluster
from thespian_cluster.node import cluster_agent, registry_address, root_address
from thespian_cluster.supervisors.os_process import pid_listening_on

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def _pid(address: Any) -> int:
    pid = pid_listening_on(address.addressDetails.sockname[1])
    assert pid is not None, address
    return pid


def processes(a: ClusterNode, b: ClusterNode, c: ClusterNode, echo: Any) -> dict[str, int]:
    """The processes a write crosses, by role."""
    system = b.client()
    found = {
        "client": os.getpid(),
        "b.echo": _pid(echo),
        "b.registry": _pid(registry_address(system)),
    }
    for node in (a, b, c):
        client = node.client()
        found[f"{node.name}.registry_dist"] = _pid(
            cluster_agent(client, root_address(client), "registry_dist")
        )
    return found


def measure(
    pids: dict[str, int], count: int, call: Callable[[int], None], per: int = 1
) -> dict[str, Any]:
    before = {role: cpu_seconds(pid) for role, pid in pids.items()}
    started = time.perf_counter()
    for i in range(count):
        call(i)
    wall = time.perf_counter() - started
    after = {role: cpu_seconds(pid) for role, pid in pids.items()}
    units = count * per
    return {
        "wall_us": round(wall / units * 1e6, 1),
        "cpu_us": {r: round((after[r] - before[r]) / units * 1e6, 1) for r in pids},
        "seconds": round(wall, 2),
    }


def idle_cpu(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """CPU per second of every process when nothing is asked (timers)."""
    before = {role: cpu_seconds(pid) for role, pid in pids.items()}
    time.sleep(seconds)  # measuring idleness itself: nothing to wait for
    after = {role: cpu_seconds(pid) for role, pid in pids.items()}
    return {r: (after[r] - before[r]) / seconds for r in pids}


def less_idle(result: dict[str, Any], idle: dict[str, float], units: int) -> dict[str, Any]:
    spent = result["seconds"]
    result["cpu_us"] = {
        r: round(max(0.0, v - idle[r] * spent / units * 1e6), 1)
        for r, v in result["cpu_us"].items()
    }
    result["cpu_us"]["total"] = round(sum(result["cpu_us"].values()), 1)
    return result


def run(count: int, batches: int, links: bool = True) -> dict[str, Any]:
    tmp = tempfile.TemporaryDirectory(prefix="bench-write-path-")
    with tmp, LocalCluster(Path(tmp.name), log_level="WARNING") as cluster:
        a = cluster.start("a", global_peer_links=links)
        b = cluster.start("b", leader=a, global_peer_links=links)
        c = cluster.start("c", leader=a, global_peer_links=links)
        cluster.wait_formed(["a", "b", "c"], timeout=30)
        system = b.client()
        echo = system.createActor(Echo)
        owner = system.createActor(BenchWorker)
        pids = processes(a, b, c, echo)
        registry = registry_address(system)
        idle = idle_cpu(pids, 3.0)

        def echo_once(i: int) -> None:
            assert system.ask(echo, i, 10) == i

        def local(i: int) -> None:
            reply = system.ask(registry, Register(name=f"l-{i}", address=owner), 10)
            assert isinstance(reply, Registered), reply

        def global_(i: int) -> None:
            request = Register(name=f"g-{i}", address=owner, scope="global")
            assert isinstance(system.ask(registry, request, 10), Registered)

        def many(i: int) -> None:
            batch = [
                Register(name=f"m-{i}-{n}", address=owner, scope="global") for n in range(1000)
            ]
            reply = system.ask(registry, RegisterMany(registrations=batch, scope="global"), 60)
            assert isinstance(reply, RegisteredMany)
            assert all(isinstance(r, Registered) for r in reply.results)

        results: dict[str, Any] = {}
        for _ in range(2):  # alternating rounds: drift hits every kind alike
            for kind, call, n, per in (
                ("echo", echo_once, count, 1),
                ("register_local", local, count, 1),
                ("register_global", global_, count, 1),
                ("register_many_global", many, batches, 1000),
            ):
                offset = len(results.get(kind, [])) * n
                measured = measure(pids, n, lambda i, f=call, o=offset: f(o + i), per)
                results.setdefault(kind, []).append(less_idle(measured, idle, n * per))
        return {
            "peer_links": links,
            "count": count,
            "batches": batches,
            "processes": list(pids),
            "idle_cpu_percent": {r: round(v * 100, 2) for r, v in idle.items()},
            "per_request": {kind: rounds[-1] for kind, rounds in results.items()},
            "first_round": {kind: rounds[0] for kind, rounds in results.items()},
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="asks per kind and round")
    parser.add_argument("--batches", type=int, default=5, help="RegisterMany batches per round")
    parser.add_argument(
        "--no-links", action="store_true", help="global_peer_links = false: all by Thespian"
    )
    args = parser.parse_args()
    print(json.dumps(run(args.count, args.batches, not args.no_links), indent=2))


if __name__ == "__main__":
    main()
