"""Helper process for test_security.py: one Thespian actor system, or one client, per process.

The wire serializer is process-global and inherited by every forked actor, so each
cookie needs its own process. The cookie comes from ``THESPIAN_CLUSTER_COOKIE`` (never
from the command line, where ``ps`` would show it).

``node --port P``
    Starts a multiprocTCPBase system on admin port P with an ``Echo`` actor, prints
    ``{"ready": ..., "echo_port": ...}`` and then answers one JSON line on stdout per
    command line on stdin:

    ``ping``                 ask the local Echo actor
    ``status``               the admin's convention view (leader, attendee admin ports)
    ``join HOST:PORT``       join that convention leader (``updateCapability``)
    ``ask HOST:PORT``        ask a remote actor (e.g. another cluster's Echo)
    ``quit``                 shut the system down and exit

``client --port P [--target-port Q]``
    A script-style client: ``ActorSystem()`` attached to the admin on P, one ``ask`` of
    ``"hello"`` to the actor on port Q (default: the admin's status), prints the outcome.

Either way the process makes itself a *child subreaper*: Thespian detaches (and
``setsid``s) its admin, so without this the admin, the logger and the actors would be
re-parented to PID 1 when they outlive this process -- and a container's PID 1 may
never reap them. Here they come back to this process, which reaps them all (and kills
any that will not stop) before it exits: a test leaves no process behind.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import sys
import time
from typing import Any

from loguru import logger
from thespian.actors import Actor, ActorAddress, ActorExitRequest, ActorSystem
from thespian.system.messages.status import Thespian_StatusReq, Thespian_SystemStatus
from thespian.system.transport.TCPTransport import TCPTransport

from thespian_cluster.security import install_wire_security, resolve_cookie

ASK_TIMEOUT = 5.0
REAP_TIMEOUT = 20  # seconds for the system's processes to exit after shutdown
PR_SET_CHILD_SUBREAPER = 36


class Echo(Actor):
    """Answers every message with itself."""

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        if not isinstance(message, ActorExitRequest):
            self.send(sender, message)


def _address(spec: str) -> ActorAddress:
    return TCPTransport.getAddressFromString(spec)


def _port(address: ActorAddress) -> int:
    return int(address.addressDetails.sockname[1])


def _say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def _status(asys: ActorSystem) -> dict[str, Any]:
    reply = asys.ask(asys._systemBase.adminAddr, Thespian_StatusReq(), ASK_TIMEOUT)
    if not isinstance(reply, Thespian_SystemStatus):
        return {"ok": False, "reply": repr(reply)}
    leader = reply.conventionLeader
    return {
        "ok": True,
        "leader": _port(leader) if leader else None,
        "attendees": sorted(_port(address) for address, _ in reply.conventionAttendees),
    }


def _ask(asys: ActorSystem, target: ActorAddress, message: Any) -> dict[str, Any]:
    started = time.monotonic()
    try:
        reply = asys.ask(target, message, ASK_TIMEOUT)
    except Exception as exc:
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": reply == message, "reply": repr(reply), "s": time.monotonic() - started}


def run_node(port: int) -> None:
    asys = ActorSystem("multiprocTCPBase", {"Admin Port": port}, transientUnique=True)
    try:
        echo = asys.createActor(Echo)
        _say(ready=True, admin_port=port, echo_port=_port(echo))
        for line in sys.stdin:
            command, _, argument = line.strip().partition(" ")
            if command == "ping":
                _say(**_ask(asys, echo, "ping"))
            elif command == "status":
                _say(**_status(asys))
            elif command == "join":
                asys.updateCapability("Convention Address.IPv4", argument)
                _say(ok=True)
            elif command == "ask":
                _say(**_ask(asys, _address(argument), "hello"))
            elif command == "quit":
                break
            else:
                _say(ok=False, error=f"unknown command {command!r}")
    finally:
        asys.shutdown()


def run_client(port: int, target_port: int | None) -> None:
    try:
        asys = ActorSystem("multiprocTCPBase", {"Admin Port": port})
    except Exception as exc:  # a refused admin may already fail the attach
        _say(ok=False, error=f"attach: {type(exc).__name__}")
        return
    # Not shut down: that would stop the node's system, which this client only uses.
    if target_port is None:
        _say(**_status(asys))
    else:
        _say(**_ask(asys, _address(f"127.0.0.1:{target_port}"), "hello"))


def _become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        logger.warning("prctl(PR_SET_CHILD_SUBREAPER) failed: errno {}", ctypes.get_errno())


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    # "pid (comm) state ppid ...": comm may hold spaces, so split after ")".
                    fields = handle.read().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def _reap_all() -> None:
    """Wait for every child (adopted orphans included); kill the ones that overstay."""

    def overstayed(_signum: int, _frame: Any) -> None:
        raise TimeoutError

    previous = signal.signal(signal.SIGALRM, overstayed)
    signal.alarm(REAP_TIMEOUT)
    try:
        while True:
            os.waitpid(-1, 0)  # blocks until a child exits; ChildProcessError when none
    except ChildProcessError:
        pass
    except TimeoutError:
        stuck = _children(os.getpid())
        logger.warning("killing processes that did not exit: {}", stuck)
        for pid in stuck:
            os.kill(pid, signal.SIGKILL)
        for _ in stuck:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["node", "client"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--target-port", type=int)
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="DEBUG")  # everything, so a leaked cookie would show
    install_wire_security(resolve_cookie(None))
    _become_subreaper()
    try:
        if args.mode == "node":
            run_node(args.port)
        else:
            run_client(args.port, args.target_port)
    finally:
        _reap_all()


if __name__ == "__main__":
    main()
