"""Supervisor restart gap and "actor death -> name freed", with real SIGKILLs.

* **restart gap** — a ``Supervisor`` (one_for_one) with one child registered through
  ``register_as``. SIGKILL the child's process; the gap is from the kill until
  ``Whereis`` (asked in a loop from this process) returns the new incarnation.
* **actor death -> name freed** — a plain actor registered by name (no supervisor,
  no exit hook) is SIGKILLed; the gap is until ``lookup()`` no longer finds the name.
  Only the Registry's liveness probes can notice such a death, so this is bounded by
  the probe interval (the default setting, 1 s, is used and reported). Kills land at
  random points of the probe cycle.
"""

from __future__ import annotations

import os
import random
import signal
import time
from typing import Any

from bench.actors import BenchWorker
from bench.common import Context, Figure, Mode, wait_until
from bench.systems import running_node, settings
from thespian_cluster import (
    ChildrenReply,
    ChildSpec,
    ConfigureSupervisor,
    Register,
    RegisterAs,
    Registered,
    StartSupervisor,
    Supervisor,
    TableReader,
    Whereis,
)
from thespian_cluster.actors.liveness import refused
from thespian_cluster.supervisors.os_process import is_dead

FAMILY = "supervision"
TITLE = "supervisor restart gap; actor death -> name freed"
WORKER = f"{BenchWorker.__module__}.BenchWorker"


def steps(mode: Mode) -> int:
    return mode.restarts + mode.deaths + 1


def weight(mode: Mode) -> float:
    return 2 + mode.restarts * 0.15 + mode.deaths * 1.2


def run(ctx: Context) -> list[Figure]:
    mode = ctx.mode
    # INFO: a failed wait below shows the Registry's and the supervisor's own account.
    config = settings(ctx, "supervision", log_level="INFO")
    interval = config.liveness_probe_interval
    gap = Figure(
        "supervision.restart_gap",
        "supervisor restart gap: SIGKILL -> Whereis gives the new child",
        "ms",
        higher_is_better=False,
        latency=True,
        params={"kills": mode.restarts},
    )
    freed = Figure(
        "supervision.death_to_name_freed",
        f"actor death -> name freed (liveness probe every {interval:g} s)",
        "ms",
        higher_is_better=False,
        latency=True,
        params={"kills": mode.deaths, "liveness_probe_interval_s": interval},
    )
    with running_node(config) as node:
        supervisor = node.system.createActor(Supervisor)
        spec = ChildSpec(id="svc", actor_class=WORKER, register_as=RegisterAs(name="bench-svc"))
        node.system.tell(
            supervisor,
            ConfigureSupervisor(children=[spec], max_restarts=100_000, max_seconds=1.0),
        )

        # Up means the child answered its start probe *and* its name was acknowledged.
        # A kill before that is a failed initial start, which (as in OTP) stops the
        # supervisor for good: a registration seen by Whereis alone is not enough.
        started = node.system.ask(supervisor, StartSupervisor(), 30)
        if not isinstance(started, ChildrenReply):
            raise RuntimeError(f"the supervisor did not start: {started!r}")

        def whereis() -> Any:
            return node.ask(Whereis(name="bench-svc")).address

        current = wait_until(whereis, 30, "the supervised child's registration")
        ctx.step("supervisor up")
        for k in range(mode.restarts):
            pid = node.system.ask(current, ("pid",), 10)
            os.kill(pid, signal.SIGKILL)
            killed = time.perf_counter()
            old = current
            # The restarted child may get the dead one's port back from the kernel (the
            # same address): tell them apart by pid, not by address.
            seen: list[Any] = []  # what the last poll saw, for the error if none passes

            def moved(o: Any = old, dead: int = pid, seen: list[Any] = seen) -> Any:
                a = whereis()
                # The name points at the old address until the Registry hears of the death.
                # Ask there only once the old process is gone and someone listens again
                # (a reused port): an ask() while SIGKILL is still landing blocks the poll
                # for its whole timeout (the 2 s outliers this figure used to show).
                reused = a is not None and a == o and is_dead(dead) and not refused([a])
                answer = node.system.ask(a, ("pid",), 2) if reused else None
                seen[:] = [a, a == o, answer]
                return a is not None and (a != o or answer not in (None, dead)) and a

            try:
                current = wait_until(moved, 30, "the name to move to the restarted child")
            except RuntimeError as exc:
                log = node.settings.resolved_log_file.read_text().splitlines()[-25:]
                raise RuntimeError(
                    f"{exc} (killed pid {pid}; last seen: name at {seen[0]}, same address "
                    f"{seen[1]}, its pid answer {seen[2]!r}); the node's log ends:\n"
                    + "\n".join(log)
                ) from None
            gap.samples.append((time.perf_counter() - killed) * 1000)
            ctx.step(f"restart {k + 1}/{mode.restarts}")
            time.sleep(0.05)  # let the supervisor finish its bookkeeping
        reader = TableReader(node.settings.node_dir)
        phase = random.Random(11)
        for k in range(mode.deaths):
            worker = node.system.createActor(BenchWorker)
            name = f"mortal-{k}"
            if not isinstance(node.ask(Register(name=name, address=worker)), Registered):
                raise RuntimeError(f"could not register {name}")
            pid = node.system.ask(worker, ("pid",), 10)
            # Kill at a random point of the probe cycle: the previous detection just
            # followed a probe, so killing at once would always wait a whole interval.
            time.sleep(phase.uniform(0, interval))
            os.kill(pid, signal.SIGKILL)
            killed = time.perf_counter()
            wait_until(
                lambda n=name: reader.lookup(n) is None,
                max(30.0, interval * 10),
                f"{name} to be freed",
                pause=0.002,
            )
            freed.samples.append((time.perf_counter() - killed) * 1000)
            ctx.step(f"death {k + 1}/{mode.deaths}")
    return [gap, freed]
