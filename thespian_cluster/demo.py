"""``make demo``: the registry's main job on one local node, as a readable timeline.

It starts a node on 127.0.0.1 with the embedded default settings, registers three
MCP-style servers and two transports, looks them up, shows the automatic groups,
SIGKILLs one server and shows its name freed and taken over, then stops the node.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

from thespian.actors import Actor

from thespian_cluster.messages import (
    GroupMembers,
    ListNames,
    Register,
    Registered,
    Whereis,
)
from thespian_cluster.node import Node, port_in_use, start_node
from thespian_cluster.settings import ClusterSettings
from thespian_cluster.supervisors.os_process import live_processes_in_group

SERVERS: dict[str, dict[str, Any]] = {
    "weather": {"capabilities": {"tools": {}, "resources": {}}},
    "calendar": {"capabilities": {"tools": {}, "prompts": {}}},
    "docs": {"capabilities": {"resources": {}}},
}
TRANSPORTS = ["stdio", "sse"]


class DemoServer(Actor):
    """Stands in for an MCP server or transport: tells its pid, nothing else."""

    def receiveMessage(self, message: Any, sender: Any) -> None:
        if message == "pid":
            self.send(sender, os.getpid())


class Timeline:
    def __init__(self) -> None:
        self.began = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[{(time.monotonic() - self.began) * 1000:8.1f} ms] {text}", flush=True)


def demo_settings(port: int | None, data_dir: Path) -> ClusterSettings:
    default = resources.files("thespian_cluster").joinpath("default.toml")
    with resources.as_file(default) as path:
        settings = ClusterSettings.load(path, data_dir=data_dir)
    if port is not None or port_in_use(settings.host, settings.admin_port):
        settings = settings.model_copy(update={"admin_port": port or _free_port()})
    return settings


def run_demo(port: int | None = None) -> int:
    timeline = Timeline()
    with tempfile.TemporaryDirectory(prefix="thespian-cluster-demo-") as data_dir:
        settings = demo_settings(port, Path(data_dir))
        node = start_node(settings, log_to_stderr=False)
        timeline.say(
            f"node {settings.node_name!r} up on {settings.admin_address} (pgid {node.pgid})"
        )
        try:
            return _scenario(node, timeline)
        finally:
            node.stop()
            gone = _group_gone(node.pgid)
            timeline.say(
                "node stopped; every actor process is gone"
                if gone
                else f"node stopped, but processes of group {node.pgid} are left"
            )


def _scenario(node: Node, timeline: Timeline) -> int:
    system = node.system
    actors: dict[str, Any] = {}
    for name, meta in SERVERS.items():
        actors[name] = system.createActor(DemoServer)
        reply = node.ask(Register(name=name, address=actors[name], kind="server", meta=meta))
        assert isinstance(reply, Registered), reply
        caps = ", ".join(meta["capabilities"])
        timeline.say(f"registered server    {name!r:<11} -> {reply.address}  ({caps})")
    for name in TRANSPORTS:
        actors[name] = system.createActor(DemoServer)
        node.ask(Register(name=name, address=actors[name], kind="transport"))
        timeline.say(f"registered transport {name!r:<11} -> {actors[name]}")

    found = node.ask(Whereis(name="weather"))
    timeline.say(f"whereis 'weather'     -> {found.address} on node {found.node!r}")
    taken = node.ask(Register(name="weather", address=actors["docs"]))
    timeline.say(f"'docs' tries to take 'weather' -> {type(taken).__name__} (owner {taken.owner})")
    for group in ("servers", "transports", "tool_servers", "resource_servers", "prompt_servers"):
        members = node.ask(GroupMembers(group=group)).members
        timeline.say(f"group {group:<17} {len(members)} member(s)")

    pid = system.ask(actors["weather"], "pid", 10)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    timeline.say(f"SIGKILL 'weather' (pid {pid})")
    while node.ask(Whereis(name="weather")).address is not None:
        if time.monotonic() - killed > 10:
            timeline.say("'weather' was NOT freed within 10 s")
            return 1
        time.sleep(0.005)
    timeline.say(
        f"'weather' is free again, {(time.monotonic() - killed) * 1000:.0f} ms after the kill"
    )
    tool_servers = node.ask(GroupMembers(group="tool_servers")).members
    timeline.say(f"group tool_servers      {len(tool_servers)} member(s) (calendar)")

    replacement = system.createActor(DemoServer)
    reply = node.ask(Register(name="weather", address=replacement, meta=SERVERS["weather"]))
    timeline.say(f"a new 'weather' takes the name -> {type(reply).__name__} {reply.address}")
    listed = node.ask(ListNames())
    timeline.say(
        f"{len(listed.names)} names registered: "
        + ", ".join(sorted(str(n.name) for n in listed.names))
    )
    return 0


def _group_gone(pgid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not live_processes_in_group(pgid):
            return True
        time.sleep(0.01)
    return False


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
