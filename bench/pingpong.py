"""Actor-to-actor round trips in raw Thespian, within one system and across two.

Two multiprocTCPBase systems on this machine, on different admin ports; B joins A's
convention (``Convention Address.IPv4``), as cluster nodes do. A :class:`~bench.actors.Pinger`
on A does sequential ping-pongs with a ponger (an :class:`~bench.actors.Echo`) on A
and with one on B, timed inside the pinger. Runs alternate between the two.
"""

from __future__ import annotations

import contextlib

from bench.actors import Echo, Pinger, PingPong
from bench.common import Context, Figure, Mode
from bench.systems import plain_system
from thespian_cluster.testing.ports import free_port

FAMILY = "pingpong"
TITLE = "actor-to-actor ping-pong (raw Thespian), one node and two nodes"


def steps(mode: Mode) -> int:
    return mode.runs + 1


def weight(mode: Mode) -> float:
    return 3 + mode.runs * mode.pingpongs * 2 / 700


def run(ctx: Context) -> list[Figure]:
    mode = ctx.mode
    leader_port = free_port()
    same = Figure("baseline.pingpong_same_node", "actor ping-pong, same node", "rt/s")
    cross = Figure("baseline.pingpong_two_nodes", "actor ping-pong, across two nodes", "rt/s")
    with contextlib.ExitStack() as stack:
        system_a = stack.enter_context(plain_system({"Admin Port": leader_port}))
        system_b = stack.enter_context(
            plain_system({"Convention Address.IPv4": f"127.0.0.1:{leader_port}"})
        )
        pinger = system_a.createActor(Pinger)
        targets = {same.id: system_a.createActor(Echo), cross.id: system_b.createActor(Echo)}
        ctx.step("two systems up")

        def round_trips(target: object, count: int) -> float:
            reply = system_a.ask(pinger, PingPong(target, count), 60 + count / 50)
            if not (isinstance(reply, tuple) and reply[0] == "pingpong"):
                raise RuntimeError(f"pinger answered {reply!r}")
            return float(reply[1] / reply[2])

        for target in targets.values():
            round_trips(target, min(30, mode.pingpongs))  # warm up the connections
        for r in range(mode.runs):
            for figure in (same, cross):
                figure.samples.append(round_trips(targets[figure.id], mode.pingpongs))
            ctx.step(f"run {r + 1}/{mode.runs}")
    for figure in (same, cross):
        figure.params = {"round_trips_per_run": mode.pingpongs}
    return [same, cross]
