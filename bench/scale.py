"""One node filled with names: registration rate, lookups and memory as the table grows.

A :class:`~bench.actors.Loader` actor on the node registers ``mode.fill_names``
names (``Register``, local scope, 5 requests in flight, every reply awaited), all
owned by one live actor. The fill is cut into chunks; each chunk's rate is one
sample of the registration rate, plotted against the names held at its end. At
each checkpoint (``mode.fill_checkpoints``) the benchmark also measures

* ``Register`` via ``ask()`` from this process (the round trip a client pays),
* ``lookup()`` of random names on the node's real table from this process,
* the Registry process's memory (``/proc/<pid>/smaps_rollup``: anonymous = its
  Python heap; Rss also counts the LMDB pages it has mapped) and the node table's
  size (LMDB pages in use).

Memory per name is the growth from the first checkpoint to the last divided by the
names added in between (the slope: start-up allocations are paid by the first
checkpoint); "per replica" because every node of a cluster will hold a replica.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

from bench.actors import BenchWorker, Load, Loader
from bench.common import (
    Context,
    Figure,
    Mode,
    actor_port,
    memory_of,
)
from bench.systems import running_node, settings
from thespian_cluster import Node, Register, Registered, TableReader
from thespian_cluster.node_table import _environment, table_path
from thespian_cluster.supervisors.os_process import pid_listening_on

FAMILY = "scale"
TITLE = "a node filled with names: registration rate, lookups, memory"
WINDOW = 5  # measured best: 1 and 2 are a little slower, 20 and 50 much slower
ASKS_AT_CHECKPOINT = 500
LOOKUPS_AT_CHECKPOINT = 200_000


def steps(mode: Mode) -> int:
    return len(_chunks(mode)) + 2


def weight(mode: Mode) -> float:
    return 3 + mode.fill_names / 1200 + len(mode.fill_checkpoints) * 2


def _chunks(mode: Mode) -> list[int]:
    """The fill's chunk ends: every checkpoint, and at most ~20 chunks in all."""
    size = max(100, mode.fill_names // 20)
    ends = set(mode.fill_checkpoints) | set(range(size, mode.fill_names + 1, size))
    return sorted(n for n in ends if n <= mode.fill_names)


def run(ctx: Context) -> list[Figure]:
    mode = ctx.mode
    config = settings(ctx, "scale")
    register_rate = Figure(
        "scale.register_throughput",
        f"Register from an actor, {WINDOW} in flight (per chunk of the fill)",
        "names/s",
        params={"names": mode.fill_names, "window": WINDOW},
    )
    figures: list[Figure] = [register_rate]
    with running_node(config) as node:
        registry = node.registry
        registry_pid = pid_listening_on(actor_port(registry))
        if registry_pid is None:
            raise RuntimeError("cannot find the Registry's process")
        owner = node.system.createActor(BenchWorker)
        loader = node.system.createActor(Loader)
        node.system.ask(owner, ("pid",), 10)
        time.sleep(0.5)  # let the node settle (first probes, imports) before the baseline
        memory_empty = memory_of(registry_pid)
        marks: list[tuple[int, dict[str, int], int]] = []  # (names, memory, table bytes)
        ctx.step("node up")
        held = 0  # names registered so far (loader and asks)
        loaded = 0
        ask_figure: Figure | None = None
        lookup_figure: Figure | None = None
        for end in _chunks(mode):
            count = end - loaded
            reply = node.system.ask(
                loader,
                Load(registry, owner, "name-", loaded, count, window=WINDOW),
                60 + count / 50,
            )
            if not (isinstance(reply, tuple) and reply[0] == "loaded"):
                raise RuntimeError(f"the loader answered {reply!r}")
            _, registered, refused, seconds = reply
            if refused:
                register_rate.note = f"{refused} registrations refused"
            loaded, held = end, held + registered
            register_rate.samples.append(count / seconds)
            ctx.point("register_rate", names=held, rate=count / seconds)
            if end in mode.fill_checkpoints:
                asks = _register_asks(node, owner, end)
                held += ASKS_AT_CHECKPOINT
                ctx.point("register_ask_rate", names=held, rate=asks)
                lookups = _lookups(node, loaded)
                ctx.point("lookup_node_table", names=held, rate=lookups)
                memory = memory_of(registry_pid)
                marks.append((held, memory, _table_size(node)["used_bytes"]))
                ctx.point(
                    "registry_memory",
                    names=held,
                    anonymous=memory["anonymous"] - memory_empty["anonymous"],
                    rss=memory["rss"] - memory_empty["rss"],
                )
                ask_figure = Figure(
                    "scale.register_ask_full",
                    f"Register via ask(), {held:,} names held",
                    "rt/s",
                    [asks],
                    params={"names": held, "asks": ASKS_AT_CHECKPOINT},
                )
                lookup_figure = Figure(
                    "scale.lookup_node_table",
                    f"lookup() on a node's table, {held:,} names",
                    "lookups/s",
                    [lookups],
                    params={"names": held},
                )
            ctx.step(f"{held:,} names")
        table = _table_size(node)
    for figure in (ask_figure, lookup_figure):
        if figure is not None:
            figures.append(figure)
    (first, memory_first, table_first), (last, memory_last, table_last) = marks[0], marks[-1]
    added = last - first
    heap = (memory_last["anonymous"] - memory_first["anonymous"]) / added
    rss = (memory_last["rss"] - memory_first["rss"]) / added
    table_per_name = (table_last - table_first) / added
    params = {
        "names": last,
        "measured_from_names": first,
        "registry_memory_empty": memory_empty,
        "registry_memory_last": memory_last,
    }
    figures += [
        Figure(
            "scale.memory_per_name",
            f"memory per name: Registry heap + node table, {first:,} -> {last:,} names",
            "bytes/name",
            [heap + table_per_name],
            higher_is_better=False,
            params=params,
        ),
        Figure(
            "scale.heap_per_name",
            "  of which the Registry's heap (anonymous memory)",
            "bytes/name",
            [heap],
            higher_is_better=False,
            note=f"Registry Rss grew {rss:.0f} B/name (heap + mapped table pages)",
        ),
        Figure(
            "scale.table_per_name",
            "  of which the node table (LMDB pages in use)",
            "bytes/name",
            [table_per_name],
            higher_is_better=False,
            params=table,
        ),
    ]
    ctx.step("memory measured")
    return figures


def _register_asks(node: Node, owner: Any, at: int) -> float:
    registry = node.registry
    started = time.perf_counter()
    for i in range(ASKS_AT_CHECKPOINT):
        request = Register(name=f"ask-{at}-{i}", address=owner)
        reply = node.system.ask(registry, request, 10)
        if not isinstance(reply, Registered):
            raise RuntimeError(f"Register answered {reply!r}")
    return ASKS_AT_CHECKPOINT / (time.perf_counter() - started)


def _lookups(node: Node, loaded: int) -> float:
    """Warm lookups of random loaded names on the node's own table, from this process."""
    reader = TableReader(node.settings.node_dir)
    rng = random.Random(loaded)
    names = [f"name-{rng.randrange(loaded):07d}" for _ in range(min(loaded, 20_000))]
    for name in names:  # fill the cache
        if reader.lookup(name) is None:
            raise RuntimeError(f"{name} is not in the node table")
    sequence = (names * (LOOKUPS_AT_CHECKPOINT // len(names) + 1))[:LOOKUPS_AT_CHECKPOINT]
    lookup = reader.lookup
    started = time.perf_counter()
    for name in sequence:
        lookup(name)
    return len(sequence) / (time.perf_counter() - started)


def _table_size(node: Node) -> dict[str, int]:
    path = table_path(node.settings.node_dir)
    env = _environment(path)
    info, stat = env.info(), env.stat()
    data = path / "data.mdb"
    return {
        "used_bytes": (info["last_pgno"] + 1) * stat["psize"],
        "file_bytes_on_disk": os.stat(data).st_blocks * 512,
        "entries": stat["entries"],
    }
