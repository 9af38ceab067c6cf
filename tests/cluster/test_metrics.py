"""The metrics endpoint of a real node process, scraped over HTTP and parsed as Prometheus."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from thespian_cluster import Register, Registered
from thespian_cluster.demo import DemoServer
from thespian_cluster.local_cluster import LocalCluster, free_port, wait_for
from thespian_cluster.metrics import METRICS, PREFIX

pytestmark = pytest.mark.cluster


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_health_and_readiness_of_a_two_node_cluster(cluster: LocalCluster) -> None:
    port = free_port()
    a = cluster.start("a", metrics_port=port)
    b = cluster.start("b", leader=a)
    cluster.wait_formed(["a", "b"])
    weather = b.client().createActor(DemoServer)
    meta = {"capabilities": {"tools": {}}}
    assert isinstance(
        b.ask(Register(name="weather", address=weather, scope="global", meta=meta)), Registered
    )
    rival = a.client().createActor(DemoServer)  # a's own write outcomes: one refused claim
    assert not isinstance(
        a.ask(Register(name="weather", address=rival, scope="global")), Registered
    )
    base = f"http://127.0.0.1:{port}"
    assert get(f"{base}/healthz") == (200, "ok\n")
    assert wait_for(lambda: get(f"{base}/readyz")[0] == 200, 10, "a ready")

    def scraped() -> dict | None:
        status, text = get(f"{base}/metrics")
        assert status == 200
        found = samples(text)
        return (
            found
            if found.get((PREFIX + "names", (("kind", "server"), ("scope", "global")))) == 1
            else None
        )

    found = wait_for(scraped, 10, "the global name in a's metrics")
    assert found[(PREFIX + "up", ())] == 1
    assert found[(PREFIX + "node_health", (("health", "up"), ("node", "b")))] == 1
    assert found[(PREFIX + "node_health", (("health", "down"), ("node", "b")))] == 0
    assert found[(PREFIX + "heartbeat_rtt_seconds", (("node", "b"),))] > 0
    assert found[(PREFIX + "groups", (("scope", "global"),))] >= 2  # servers, tool_servers
    assert found[(PREFIX + "cluster_joined", ())] == 1
    assert found[(PREFIX + "global_epoch", ())] >= 1
    refused = (("outcome", "already_registered"), ("request", "Register"))
    assert found[(PREFIX + "global_writes", refused)] == 1
    assert found[(PREFIX + "global_merge_conflicts", ())] == 0
    assert (
        found[
            (
                PREFIX + "supervisor_child_restarts",
                (("child", "node_monitor"), ("supervisor", "cluster")),
            )
        ]
        == 0
    )
    names = {name for name, _ in found}
    # every exported name is documented in METRICS (and docs/operations.md, see test_docs)
    assert {n.removeprefix(PREFIX) for n in names} <= set(METRICS)
    assert get(f"{base}/nothing")[0] == 404

    b.kill()
    wait_for(
        lambda: (
            samples(get(f"{base}/metrics")[1]).get(
                (PREFIX + "node_health", (("health", "down"), ("node", "b")))
            )
            == 1
        ),
        10,
        "b down in a's metrics",
    )
