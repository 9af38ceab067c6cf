"""The etcd backend over a real partition: three nodes, each in its own network
namespace with a member of a three-member etcd cluster beside it. Cut one node's cable
and it loses etcd's quorum along with its peers: it refuses global writes (bounded in
time) while the other two keep writing; after the heal every node holds one table.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.integration.actors import Worker
from thespian_cluster import ListNames, Register, Registered
from thespian_cluster.local_cluster import ClusterNode, LocalCluster, wait_for
from thespian_cluster.netns import NetnsLab
from thespian_cluster.testing.etcd_server import EtcdCluster

pytestmark = pytest.mark.cluster

REPO = Path(__file__).parents[2]
#: A client inside a node's namespace: create a Worker there, claim a global name for
#: it, print the reply's type, code and how long it took.
CLAIM = """
import json, sys, time
from tests.integration.actors import Worker
from thespian_cluster import Register, ask, connect, registry_address
from thespian_cluster.node import disconnect
host, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
system = connect(port, host)
try:
    worker = system.createActor(Worker)
    start = time.monotonic()
    reply = ask(system, registry_address(system), Register(name=name, address=worker,
                scope="global"), 30)
    print(json.dumps({"reply": type(reply).__name__, "code": getattr(reply, "code", None),
                      "seconds": time.monotonic() - start}))
finally:
    disconnect(system)
"""


def _claim_inside(lab: NetnsLab, node: ClusterNode, name: str) -> dict[str, object]:
    done = subprocess.run(
        [*lab.launcher(node.name), sys.executable, "-c", CLAIM, node.host, str(node.port), name],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={"THESPIAN_CLUSTER_COOKIE": node.cookie, "PATH": "/usr/sbin:/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(answer, dict)
    return answer


def _names(node: ClusterNode) -> set[object]:
    return {e.name for e in node.ask(ListNames(scope="global")).names}


def test_a_node_cut_off_with_its_etcd_member_refuses_writes_and_rejoins_one_table(
    netns_lab: NetnsLab, tmp_path: Path
) -> None:
    names = ["a", "b", "c"]
    slots = [netns_lab.add(n) for n in names]
    with EtcdCluster(
        3, hosts=[s.address for s in slots], netns=[s.namespace for s in slots]
    ) as etcd:
        prefix = f"/t-{uuid.uuid4().hex}/"
        endpoints = etcd.endpoints

        def backend(i: int) -> dict[str, object]:
            own_first = [endpoints[i], *(e for j, e in enumerate(endpoints) if j != i)]
            return {"endpoints": own_first, "prefix": prefix, "timeout": 1.0}

        # cluster_nodes: the cut side knows it lost, so it revokes no lease of the others
        # (with every side "winning", both would revoke each other's once healed).
        with LocalCluster(tmp_path, registry_backend="etcd", cluster_nodes=names) as cluster:
            a = cluster.start("a", backend=backend(0), **netns_lab.place("a"))
            b = cluster.start("b", leader=a, backend=backend(1), **netns_lab.place("b"))
            c = cluster.start("c", leader=a, backend=backend(2), **netns_lab.place("c"))
            cluster.wait_formed(names, timeout=30)
            for node in (a, b, c):
                worker = node.client().createActor(Worker)
                reply = node.ask(
                    Register(name=f"before-{node.name}", address=worker, scope="global")
                )
                assert isinstance(reply, Registered), reply

            netns_lab.cut("c")
            refused = _claim_inside(netns_lab, c, "from-the-cut-side")
            assert refused["reply"] == "RegistryError" and refused["code"] == "unavailable", refused
            assert float(str(refused["seconds"])) < 10, refused  # bounded, not a hang
            written = []
            for node in (a, b):  # the majority keeps writing all along
                for k in range(5):
                    worker = node.client().createActor(Worker)
                    name = f"during-{node.name}-{k}"
                    reply = node.ask(Register(name=name, address=worker, scope="global"))
                    assert isinstance(reply, Registered), reply
                    written.append(name)

            netns_lab.heal()
            cluster.wait_formed(names, timeout=30)
            # c was down for the others, who revoked its lease: its name went, and is
            # not registered again behind its owner's back.
            expected = {"before-a", "before-b", *written}
            for node in (a, b, c):
                try:
                    wait_for(lambda n=node: _names(n) == expected, 20, "one table")
                except TimeoutError:
                    held = _names(node)
                    raise AssertionError(f"{node.name} holds {held}, not {expected}") from None
