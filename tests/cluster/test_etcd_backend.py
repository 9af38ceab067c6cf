"""``registry_backend = "etcd"`` across real node processes, on a real etcd.

The conformance suite (test_backend_conformance.py) checks the protocol's answers;
these check what only a store outside the cluster makes possible or necessary: one
winner among nodes racing through etcd, a dead node's lease revoked at once, etcd
restarted under a stream of writes, and a node that lost its watch across a
compaction catching up by listing again.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

from tests.integration.actors import Worker
from thespian_cluster import (
    AlreadyRegistered,
    GetGlobalStatus,
    GlobalStatus,
    ListNames,
    Register,
    Registered,
    RegisteredMany,
    RegisterMany,
    RegistryError,
    Whereis,
)
from thespian_cluster.backends.etcd.view import entry_value, name_key
from thespian_cluster.core.table import Entry
from thespian_cluster.local_cluster import ClusterNode, LocalCluster, wait_for
from thespian_cluster.node_table import address_at
from thespian_cluster.testing.etcd_server import EtcdServer


def _settings(server: EtcdServer, **backend: Any) -> dict[str, Any]:
    prefix = f"/t-{uuid.uuid4().hex}/"
    return {
        "registry_backend": "etcd",
        "backend": {"endpoints": server.endpoints, "prefix": prefix, **backend},
    }


def _three(cluster: LocalCluster) -> list[ClusterNode]:
    a = cluster.start("a")
    b = cluster.start("b", leader=a)
    c = cluster.start("c", leader=a)
    cluster.wait_formed(["a", "b", "c"])
    return [a, b, c]


def _whereis(node: ClusterNode, name: str) -> Any:
    return node.ask(Whereis(name=name, scope="global")).address


def _race(nodes: list[ClusterNode], name: str) -> tuple[list[Any], list[Any]]:
    """Each node claims ``name`` for an actor of its own, all at once."""
    actors = [n.client().createActor(Worker) for n in nodes]
    replies: list[Any] = [None] * len(nodes)
    start = threading.Barrier(len(nodes))

    def claim(i: int) -> None:
        start.wait()
        replies[i] = nodes[i].ask(Register(name=name, address=actors[i], scope="global"))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(nodes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return actors, replies


def test_three_nodes_racing_for_one_name_get_one_winner(
    tmp_path: Path, etcd_server: EtcdServer
) -> None:
    with LocalCluster(tmp_path, **_settings(etcd_server)) as cluster:
        nodes = _three(cluster)
        for round_ in range(5):
            name = f"contested-{round_}"
            actors, replies = _race(nodes, name)
            winners = [i for i, r in enumerate(replies) if isinstance(r, Registered)]
            assert len(winners) == 1, replies
            winner, home = actors[winners[0]], nodes[winners[0]].name
            for i, reply in enumerate(replies):
                if i != winners[0]:
                    assert isinstance(reply, AlreadyRegistered), reply
                    assert reply.owner == winner and reply.node == home
            for node in nodes:  # every node's table agrees, once the watch delivered it
                wait_for(lambda n=node, nm=name, w=winner: _whereis(n, nm) == w, 5, "one owner")


def test_two_nodes_bulk_loading_the_same_names_at_once_get_one_owner_each(
    tmp_path: Path, etcd_server: EtcdServer
) -> None:
    """Bulk loads go as transactions of ``txn_ops`` new names; when a rival's
    transaction took some of them first, each is decided alone and the rest go again."""
    with LocalCluster(tmp_path, **_settings(etcd_server, txn_ops=50)) as cluster:
        a, b, c = _three(cluster)
        names = [f"bulk-{i}" for i in range(300)]
        owners = {n.name: n.client().createActor(Worker) for n in (b, c)}
        replies: dict[str, Any] = {}
        start = threading.Barrier(2)

        def load(node: ClusterNode) -> None:
            items = [Register(name=x, address=owners[node.name]) for x in names]
            start.wait()
            replies[node.name] = node.ask(RegisterMany(registrations=items, scope="global"), 60)

        threads = [threading.Thread(target=load, args=(n,)) for n in (b, c)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
        won = {}
        for node in ("b", "c"):
            reply = replies[node]
            assert isinstance(reply, RegisteredMany), reply
            for name, result in zip(names, reply.results, strict=True):
                if isinstance(result, Registered):
                    assert name not in won, f"{name} registered by both nodes"
                    won[name] = owners[node]
                else:
                    assert isinstance(result, AlreadyRegistered), result
                    assert result.owner != owners[node]
        assert sorted(won) == sorted(names)
        wait_for(lambda: all(_whereis(a, x) == won[x] for x in names[::30]), 10, "a's table")
        status = b.ask(GetGlobalStatus())
        assert isinstance(status, GlobalStatus)
        assert status.backend["bulk_writes"] == 6  # 300 names, 50 per transaction

        # Meta etcd cannot store (a set is no JSON) fails its own item of a bulk write
        # alone, and leaves no name held: the same names register again at once.
        owner = owners["b"]
        items = [
            Register(name="ok-1", address=owner),
            Register(name="no-json", address=owner, meta={"tags": {"a"}}),
            Register(name="ok-2", address=owner),
        ]
        reply = b.ask(RegisterMany(registrations=items, scope="global"), 30)
        assert isinstance(reply, RegisteredMany)
        kinds = [type(r).__name__ for r in reply.results]
        assert kinds == ["Registered", "RegistryError", "Registered"], reply.results
        assert reply.results[1].code == "invalid_request" and "JSON" in reply.results[1].detail
        again = b.ask(Register(name="no-json", address=owner, scope="global", meta={"tags": []}))
        assert isinstance(again, Registered)


def test_a_killed_node_loses_its_names_everywhere_within_a_second_of_node_down(
    tmp_path: Path, etcd_server: EtcdServer
) -> None:
    # A long lease: only the survivors' revocation can free the names this fast.
    with LocalCluster(
        tmp_path, cluster_heartbeat_timeout=1.0, **_settings(etcd_server, lease_ttl=60)
    ) as cluster:
        a, b, c = _three(cluster)
        names = [f"on-c-{i}" for i in range(20)]
        for name in names:
            worker = c.client().createActor(Worker)
            assert isinstance(
                c.ask(Register(name=name, address=worker, scope="global")), Registered
            )
        for node in (a, b):
            wait_for(lambda n=node: all(_whereis(n, x) for x in names), 5, "c's names")
        c.kill()  # os.killpg(SIGKILL): the node and every actor of it
        wait_for(lambda: "c" not in a.cluster_nodes().nodes, 10, "a to see c down")
        down = time.monotonic()
        for node in (a, b):
            wait_for(
                lambda n=node: not any(_whereis(n, x) for x in names),
                5,
                f"c's names gone on {node.name}",
            )
        took = time.monotonic() - down
        assert took <= 1.0, f"names gone {took:.3f} s after NodeDown"


def test_etcd_restarted_under_a_stream_of_registrations_loses_nothing_acknowledged(
    tmp_path: Path,
) -> None:
    with (
        EtcdServer() as server,
        LocalCluster(tmp_path, global_request_timeout=3.0, **_settings(server)) as cluster,
    ):
        a = cluster.start("a")
        b = cluster.start("b", leader=a)
        cluster.wait_formed(["a", "b"])
        system = b.client()
        acknowledged: list[str] = []
        refused: list[str] = []
        stop = threading.Event()

        def stream() -> None:
            k = 0
            while not stop.is_set():
                name = f"s-{k}"
                k += 1
                reply = b.ask(
                    Register(name=name, address=system.createActor(Worker), scope="global")
                )
                (acknowledged if isinstance(reply, Registered) else refused).append(name)
                if not isinstance(reply, Registered):
                    assert isinstance(reply, RegistryError), reply
                    assert reply.code in ("unavailable", "timeout"), reply

        writer = threading.Thread(target=stream)
        writer.start()
        try:
            wait_for(lambda: len(acknowledged) >= 20, 20, "writes before the restart")
            server.restart()
            seen = len(acknowledged)
            wait_for(lambda: len(acknowledged) >= seen + 20, 30, "writes after the restart")
        finally:
            stop.set()
            writer.join(60)
        assert not writer.is_alive()
        for node in (a, b):
            wait_for(
                lambda n=node: (
                    {e.name for e in n.ask(ListNames(scope="global")).names} >= set(acknowledged)
                ),
                10,
                f"every acknowledged name on {node.name}",
            )
        with server.client() as direct:
            prefix = _settings_prefix(cluster)
            stored = direct.get_prefix(prefix + "n/").records
        assert len(stored) >= len(acknowledged)


def test_a_node_that_lost_its_watch_across_a_compaction_catches_up(
    tmp_path: Path,
) -> None:
    with EtcdServer() as server, LocalCluster(tmp_path, **_settings(server)) as cluster:
        a = cluster.start("a")
        b = cluster.start("b", leader=a)
        cluster.wait_formed(["a", "b"])
        prefix = _settings_prefix(cluster)
        worker = a.client().createActor(Worker)
        assert isinstance(a.ask(Register(name="kept", address=worker, scope="global")), Registered)
        wait_for(lambda: _whereis(b, "kept"), 5, "b to see 'kept'")
        b.pause()  # SIGSTOP: b's watch stops reading
        try:
            server.restart()  # b's stream breaks; what it watched from will be compacted
            with server.client() as direct:
                # Another writer's changes while b is away: a new name, and 'kept' gone.
                fake = Entry("written-while-away", "server", address_at("127.0.0.1", 9), "z")
                direct.put(name_key(prefix, "server", "written-while-away"), entry_value(fake))
                direct.delete(name_key(prefix, "server", "kept"))
                for k in range(50):  # history for the compaction to remove
                    direct.put(f"{prefix}x/noise", str(k))
                revision = direct.get(f"{prefix}x/noise").revision
                server.compact(revision)
        finally:
            b.resume()
        wait_for(lambda: _whereis(b, "written-while-away"), 10, "b to list again")
        assert _whereis(b, "kept") is None


def _settings_prefix(cluster: LocalCluster) -> str:
    prefix = cluster.settings["backend"]["prefix"]
    assert isinstance(prefix, str)
    return prefix
