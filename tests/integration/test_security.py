"""The cluster cookie, end to end: real multiprocTCPBase systems, one process per cookie.

Each node or client runs ``_security_node.py`` in its own process (the wire serializer
is process-global and inherited by forked actors), with its cookie in the environment.
What is checked:

* the classic pickle exploit sent with a raw socket to the admin port and to an actor's
  port writes nothing (untagged, wrongly tagged, and even correctly tagged -- then the
  allow-list refuses ``os.system``), the sender gets ``ACK+DATAERR``, and the node keeps
  answering; without a cookie the same bytes *do* write the file (the control);
* a client with a wrong cookie or none is refused, the right one gets through;
* a node with a wrong cookie cannot join a convention, and two clusters with different
  cookies on one machine neither see nor reach each other;
* no cookie ever appears in anything a process printed or Thespian logged.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import pickle
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from thespian.system.transport.streamBuffer import ackDataErrMsg

from thespian_cluster.messages import Whereis
from thespian_cluster.security import (
    COOKIE_ENV,
    MAGIC,
    WireRejected,
    WireSerializer,
)
from thespian_cluster.testing.ports import free_port

HELPER = Path(__file__).with_name("_security_node.py")
COOKIE_A = "alpha-cookie-7f3c1e9b2d4a6085"
COOKIE_B = "bravo-cookie-0e8d2c4b6a9f1357"
STARTUP_TIMEOUT = 60.0  # generous: two cores, and another suite may be running
REPLY_TIMEOUT = 60.0
STOP_TIMEOUT = 45.0


# ---------------------------------------------------------------- process plumbing


def _free_port() -> int:
    return free_port()


class Proc:
    """One helper process: JSON replies from stdout, log lines from stderr."""

    def __init__(self, name: str, args: list[str], cookie: str | None, tmp: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k != COOKIE_ENV}
        if cookie is not None:
            env[COOKIE_ENV] = cookie
        self.name = name
        self.thespian_log = tmp / f"{name}-thespian.log"
        env.update(THESPLOG_FILE=str(self.thespian_log), THESPLOG_THRESHOLD="INFO")
        self.popen = subprocess.Popen(
            [sys.executable, str(HELPER), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
        self.replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.log: list[str] = []
        self._log_changed = threading.Condition()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.replies.put(json.loads(line))
        self.replies.put(None)  # end of output

    def _read_stderr(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            with self._log_changed:
                self.log.append(line)
                self._log_changed.notify_all()

    def reply(self, timeout: float = REPLY_TIMEOUT) -> dict[str, Any]:
        answer = self.replies.get(timeout=timeout)
        assert answer is not None, f"{self.name} exited early:\n{''.join(self.log)[-3000:]}"
        return answer

    def command(self, line: str) -> dict[str, Any]:
        assert self.popen.stdin is not None
        self.popen.stdin.write(line + "\n")
        self.popen.stdin.flush()
        return self.reply()

    def wait_for_log(self, pattern: str, timeout: float = REPLY_TIMEOUT) -> str:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._log_changed:
            while True:
                for line in self.log:
                    if regex.search(line):
                        return line
                left = deadline - time.monotonic()
                assert left > 0, f"{self.name}: no log line /{pattern}/:\n{''.join(self.log)}"
                self._log_changed.wait(left)

    def everything_written(self) -> str:
        text = "".join(self.log)
        for path in (self.thespian_log, Path(f"{self.thespian_log}.old")):
            if path.exists():
                text += path.read_text(errors="replace")
        return text

    def stop(self) -> None:
        """Ask to quit; if it will not, kill it and every process it adopted."""
        if self.popen.poll() is None and self.popen.stdin and not self.popen.stdin.closed:
            try:
                self.popen.stdin.write("quit\n")
                self.popen.stdin.close()  # a client, or a node past its loop, sees EOF
            except OSError:
                pass
        try:
            self.popen.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            for pid in [*_descendants(self.popen.pid), self.popen.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.popen.wait(STOP_TIMEOUT)


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parents[int(entry)] = int(handle.read().rpartition(")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


class Node:
    """A started node: its admin and Echo ports, and commands to its helper."""

    def __init__(self, proc: Proc, ready: dict[str, Any]) -> None:
        self.proc = proc
        self.admin_port: int = ready["admin_port"]
        self.echo_port: int = ready["echo_port"]

    def status(self) -> dict[str, Any]:
        answer = self.proc.command("status")
        assert answer["ok"], answer
        return answer

    def wait_for_attendees(self, expected: list[int]) -> None:
        """Poll the admin's status: joining has no event a client can wait on."""
        deadline = time.monotonic() + REPLY_TIMEOUT
        while (attendees := self.status()["attendees"]) != expected:
            assert time.monotonic() < deadline, f"attendees {attendees}, expected {expected}"
            time.sleep(0.05)


class Cluster:
    """Factory for nodes and clients of one test; stops all and checks for leaks after."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[Proc] = []

    def _spawn(self, name: str, args: list[str], cookie: str | None) -> Proc:
        proc = Proc(name, args, cookie, self.tmp)
        self.procs.append(proc)
        return proc

    def nodes(self, *specs: tuple[str, str | None]) -> list[Node]:
        """Start nodes (name, cookie) at once and wait until every one is ready."""
        procs = [self._spawn(n, ["node", "--port", str(_free_port())], c) for n, c in specs]
        return [Node(proc, proc.reply(STARTUP_TIMEOUT)) for proc in procs]

    def clients(self, node: Node, *cookies: str | None) -> list[dict[str, Any]]:
        """Run one client per cookie at once against ``node``'s Echo; their outcomes."""
        args = ["client", "--port", str(node.admin_port), "--target-port", str(node.echo_port)]
        procs = [self._spawn(f"client{i}", args, c) for i, c in enumerate(cookies)]
        return [proc.reply(STARTUP_TIMEOUT) for proc in procs]

    def close(self) -> None:
        with ThreadPoolExecutor(max_workers=max(1, len(self.procs))) as pool:
            list(pool.map(Proc.stop, self.procs))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(tmp_path)
    try:
        yield made
    finally:
        made.close()
    for proc in made.procs:  # requirement 4: nothing anyone wrote shows a cookie
        written = proc.everything_written()
        for cookie in (COOKIE_A, COOKIE_B):
            assert cookie not in written, f"{proc.name} leaked a cookie"


# ---------------------------------------------------------------- the exploit


class _WritesFile:
    """Unpickling this runs ``touch <path>``: the remote-code-execution payload."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return os.system, (f"touch {self.path}",)


def _send_raw(port: int, packet: bytes) -> bytes:
    """Frame ``packet`` as Thespian does, send it, return what the node answers."""
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=REPLY_TIMEOUT) as sock:
        sock.sendall(b"%d>" % len(packet) + packet)
        while len(answer) < len(ackDataErrMsg):
            chunk = sock.recv(256)
            if not chunk:
                break
            answer += chunk
    return answer


def test_exploit_works_without_cookie(cluster: Cluster, tmp_path: Path) -> None:
    """The control: stock Thespian runs the payload, so the tests below mean something."""
    (node,) = cluster.nodes(("open", None))
    marker = tmp_path / "pwned-open"
    _send_raw(node.admin_port, pickle.dumps(_WritesFile(marker)))
    assert marker.exists()


def test_exploit_refused_on_admin_and_actor_ports(cluster: Cluster, tmp_path: Path) -> None:
    (node,) = cluster.nodes(("guarded", COOKIE_A))
    for where, port in (("admin", node.admin_port), ("actor", node.echo_port)):
        payload = pickle.dumps(_WritesFile(tmp_path / f"pwned-{where}"))
        attempts = {
            "untagged": payload,
            "wrong cookie": WireSerializer(COOKIE_B).seal(payload),
            "forged tag": MAGIC + bytes(16) + payload,
            # An attacker who has the cookie still meets the allow-list.
            "right cookie": WireSerializer(COOKIE_A).seal(payload),
        }
        for attempt, packet in attempts.items():
            assert _send_raw(port, packet) == ackDataErrMsg, f"{where}: {attempt}"
        assert not (tmp_path / f"pwned-{where}").exists(), where
    node.proc.wait_for_log(r"dropped packet from 127\.0\.0\.1:\d+: untagged pickle")
    node.proc.wait_for_log(r"refused to unpickle posix\.system from 127\.0\.0\.1")
    assert node.proc.command("ping")["ok"], "the node must keep serving"
    assert not list(tmp_path.glob("pwned-*"))


# ---------------------------------------------------------------- clients and nodes


def test_client_needs_the_cookie(cluster: Cluster) -> None:
    (node,) = cluster.nodes(("server", COOKIE_A))
    wrong, missing, right = cluster.clients(node, COOKIE_B, None, COOKIE_A)
    assert right["ok"], right
    # Attaching sends QueryExists to the admin, which drops it: ActorSystem() gives up.
    assert not wrong["ok"], wrong
    assert not missing["ok"], missing
    node.proc.wait_for_log(r"dropped packet from [\d.]+:\d+: (bad tag|untagged)")
    assert node.proc.command("ping")["ok"]


def test_wrong_cookie_node_cannot_join_and_clusters_stay_apart(cluster: Cluster) -> None:
    leader_a, member_a, leader_b, member_b = cluster.nodes(
        ("leader-a", COOKIE_A),
        ("member-a", COOKIE_A),
        ("leader-b", COOKIE_B),
        ("member-b", COOKIE_B),
    )
    # member-b dials cluster A's leader by mistake: its registration is dropped.
    assert member_b.proc.command(f"join 127.0.0.1:{leader_a.admin_port}")["ok"]
    leader_a.proc.wait_for_log(r"dropped packet from [\d.]+:\d+: bad tag")
    assert member_a.proc.command(f"join 127.0.0.1:{leader_a.admin_port}")["ok"]
    leader_a.wait_for_attendees([member_a.admin_port])
    # Pointed at its own leader, the same node joins at once.
    assert member_b.proc.command(f"join 127.0.0.1:{leader_b.admin_port}")["ok"]
    leader_b.wait_for_attendees([member_b.admin_port])
    assert leader_a.status()["attendees"] == [member_a.admin_port]
    assert member_a.status()["attendees"] == [leader_a.admin_port]
    assert member_b.status()["leader"] == leader_b.admin_port
    # Actors are reachable inside a cluster, not across.
    assert member_a.proc.command(f"ask 127.0.0.1:{leader_a.echo_port}")["ok"]
    assert member_b.proc.command(f"ask 127.0.0.1:{leader_b.echo_port}")["ok"]
    assert not member_a.proc.command(f"ask 127.0.0.1:{leader_b.echo_port}")["ok"]
    assert not member_b.proc.command(f"ask 127.0.0.1:{leader_a.echo_port}")["ok"]


# ---------------------------------------------------------------- the serializer itself


@dataclass
class UserMessage:
    """A message type of "the user's": allowed only when its module is declared."""

    text: str
    when: datetime.datetime
    ident: uuid.UUID


def _global_ref(module: str, name: str) -> bytes:
    """A protocol-4 pickle of just the global ``module.name`` (STACK_GLOBAL)."""
    parts = [module.encode(), name.encode()]
    return b"\x80\x04" + b"".join(b"\x8c" + bytes([len(p)]) + p for p in parts) + b"\x93."


def test_serializer_seals_checks_and_restricts() -> None:
    wire = WireSerializer(COOKIE_A)
    values = {"a": [1, 2.5, "x"], "d": defaultdict(list, k=[1]), "t": datetime.timedelta(1)}
    assert wire.loads(wire.dumps(values)) == values
    request = Whereis(name=("svc", "eu"), kind="server")
    assert wire.loads(wire.dumps(request)) == request  # pydantic models of this package
    for ack in ("ACK", "ACK+DATAERR"):  # Thespian's untagged control packets
        assert wire.loads(pickle.dumps(ack)) == ack
    sealed = wire.dumps("hello")
    tampered = sealed[:-2] + b"X" + sealed[-1:]
    for bad in (tampered, WireSerializer(COOKIE_B).dumps("hello"), pickle.dumps("hello"), b"x"):
        with pytest.raises(WireRejected):
            wire.loads(bad)
    for gadget in (os.system, eval, getattr, subprocess.Popen, pickle.loads):
        with pytest.raises(WireRejected) as refusal:
            wire.loads(wire.seal(pickle.dumps(gadget)))
        assert COOKIE_A not in str(refusal.value)
    refused = [
        ("thespian_cluster.security", "pickle.loads"),  # a dotted walk to what it imports
        ("thespian.system.transport.TCPTransport", "socket"),  # a re-exported class
        ("thespian.actors", "ActorSystem"),  # acts when constructed: starts processes
        ("thespian.system.transport.TCPTransport", "TCPTransport"),  # binds a socket
        ("thespian.system.admin.convention", "ConventioneerAdmin"),  # machinery
        ("thespian_cluster.__main__", "main"),  # importing it would run it
    ]
    for module, name in refused:
        with pytest.raises(WireRejected):
            wire.loads(wire.seal(_global_ref(module, name)))
    assert COOKIE_A not in repr(wire)


def test_message_modules_extend_the_allow_list() -> None:
    message = UserMessage("hi", datetime.datetime.now(datetime.UTC), uuid.uuid4())
    with pytest.raises(WireRejected):
        WireSerializer(COOKIE_A).loads(WireSerializer(COOKIE_A).dumps(message))
    wire = WireSerializer(COOKIE_A, [UserMessage.__module__])
    assert wire.loads(wire.dumps(message)) == message
    for unsafe in ("os", "subprocess.sub", "__main__", "not a module", ""):
        with pytest.raises(ValueError):
            WireSerializer(COOKIE_A, [unsafe])
