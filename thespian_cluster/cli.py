"""The ``thespian-cluster`` command: run a node, ask it things, show its tree.

::

    thespian-cluster start --config config/single-node.toml   # foreground; Ctrl-C stops
    thespian-cluster whereis weather --port 1900
    thespian-cluster names --port 1900
    thespian-cluster groups --port 1900            # or: groups tool_servers
    thespian-cluster status --port 1900            # the supervision tree
    thespian-cluster demo                          # what `make demo` runs
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from thespian.actors import ActorExitRequest, ActorSystem, ActorSystemException

from thespian_cluster.logs import configure_logging
from thespian_cluster.messages import (
    ChildrenReply,
    GroupMembers,
    ListGroups,
    ListNames,
    Request,
    Whereis,
    WhichChildren,
)
from thespian_cluster.node import (
    NodeError,
    connect,
    disconnect,
    registry_address,
    root_address,
    start_node,
)
from thespian_cluster.settings import ClusterSettings, SettingsError
from thespian_cluster.supervisors.node import GetNodeInfo, NodeInfo

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n\n")[0])

Port = Annotated[int, typer.Option("--port", "-p", help="the node's admin port")]
Host = Annotated[str, typer.Option("--host", help="the node's host")]
Kind = Annotated[str, typer.Option("--kind", "-k", help="server, transport or your own kind")]
TIMEOUT = 10.0


def main() -> None:
    configure_logging("cli", "WARNING", None)  # start_node reconfigures for `start`
    app()


@app.command()
def start(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="a TOML settings file")
    ] = None,
    join: Annotated[
        str | None,
        typer.Option("--join", help="HOST:PORT of the convention leader to join (a cluster node)"),
    ] = None,
) -> None:
    """Run a node in the foreground until Ctrl-C or SIGTERM."""
    overrides = {"convention_leader": join, "cluster_enabled": True} if join else {}
    # A node that cannot start is one line on stderr and exit code 2, never a traceback.
    with _one_line_errors():
        settings = ClusterSettings.load(config, **overrides)
        node = start_node(settings)
    stop = threading.Event()
    # Both explicitly: a shell starts background jobs with SIGINT ignored.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    typer.echo(
        f"node {settings.node_name} running on {settings.admin_address} "
        f"(pgid {node.pgid}); Ctrl-C stops it"
    )
    try:
        while not stop.wait(0.5):  # a timed wait lets the signal handlers run
            pass
    finally:
        node.stop()
        typer.echo(f"node {settings.node_name} stopped")


@app.command()
def whereis(name: str, kind: Kind = "server", port: Port = 1900, host: Host = "127.0.0.1") -> None:
    """Who owns NAME."""
    reply = _ask_registry(host, port, Whereis(name=name, kind=kind))
    if reply.address is None:
        typer.echo(f"{kind} {name!r} is not registered")
        raise typer.Exit(1)
    typer.echo(f"{kind} {name!r} -> {reply.address} on node {reply.node} meta={reply.meta}")


@app.command()
def names(
    kind: Annotated[str | None, typer.Option("--kind", "-k")] = None,
    port: Port = 1900,
    host: Host = "127.0.0.1",
) -> None:
    """Every registered name."""
    reply = _ask_registry(host, port, ListNames(kind=kind))
    for info in sorted(reply.names, key=lambda i: (i.kind, str(i.name))):
        typer.echo(f"{info.kind:<10} {info.name!s:<30} {info.address} node={info.node}")
    typer.echo(f"{len(reply.names)} name(s)")


@app.command()
def groups(
    group: Annotated[str | None, typer.Argument(help="show this group's members")] = None,
    port: Port = 1900,
    host: Host = "127.0.0.1",
) -> None:
    """Every group, or the members of GROUP."""
    if group is None:
        for name in _ask_registry(host, port, ListGroups()).groups:
            typer.echo(name)
        return
    reply = _ask_registry(host, port, GroupMembers(group=group))
    for member in reply.members:
        typer.echo(f"{member.address} node={member.node} meta={member.meta}")
    typer.echo(f"{len(reply.members)} member(s) in {group}")


@app.command()
def status(port: Port = 1900, host: Host = "127.0.0.1") -> None:
    """The node's supervision tree with each child's address and restart count."""
    with _session(host, port) as system:
        root = root_address(system)
        info = system.ask(root, GetNodeInfo(), TIMEOUT)
        if not isinstance(info, NodeInfo) or not info.node:
            system.tell(root, ActorExitRequest())  # the stray root our lookup just created
            typer.echo("error: this actor system runs no thespian-cluster node", err=True)
            raise typer.Exit(2)
        typer.echo(f"node {info.node} (process group {info.pgid})")
        typer.echo(f"NodeSupervisor {root}")
        _print_tree(system, root, "")


@app.command()
def demo(
    port: Annotated[int | None, typer.Option(help="admin port (default: a free one)")] = None,
) -> None:
    """A local node that registers servers and transports, kills one, and shows the name freed."""
    from thespian_cluster.demo import run_demo

    raise typer.Exit(run_demo(port))


def _print_tree(system: ActorSystem, supervisor: Any, indent: str) -> None:
    reply = system.ask(supervisor, WhichChildren(), TIMEOUT)
    if not isinstance(reply, ChildrenReply):
        return
    for index, child in enumerate(reply.children):
        last = index == len(reply.children) - 1
        branch, deeper = ("└── ", "    ") if last else ("├── ", "│   ")
        uptime = f"{child.uptime:.1f}s" if child.uptime is not None else "-"
        state = "running" if child.running else "stopped"
        typer.echo(
            f"{indent}{branch}{child.id:<22} {state:<8} restarts={child.restart_count:<3} "
            f"uptime={uptime:<9} {child.address}"
        )
        if child.type == "supervisor" and child.running:
            _print_tree(system, child.address, indent + deeper)


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """Errors the user can fix become one line on stderr and exit code 2, no traceback."""
    try:
        yield
    except (NodeError, SettingsError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@contextmanager
def _failures_explained(host: str, port: int) -> Iterator[None]:
    with _one_line_errors():
        try:
            yield
        except ActorSystemException:
            # A node with another cookie drops our packets: Thespian reports a bad address.
            typer.echo(
                f"error: the node at {host}:{port} refused us (check the cluster cookie)",
                err=True,
            )
            raise typer.Exit(2) from None


@contextmanager
def _session(host: str, port: int) -> Iterator[ActorSystem]:
    """A client handle, closed afterwards, with failures turned into one clear line."""
    with _failures_explained(host, port):
        system = connect(port, host)
        try:
            yield system
        finally:
            disconnect(system)


def _ask_registry(host: str, port: int, request: Request) -> Any:
    with _session(host, port) as system:
        reply = system.ask(registry_address(system), request, TIMEOUT)
    if reply is None:
        typer.echo("error: the registry did not answer", err=True)
        raise typer.Exit(2)
    return reply


if __name__ == "__main__":
    main()
