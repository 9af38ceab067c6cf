"""The OS side of a child actor: its pid, for ``brutal_kill`` and shutdown timeouts.

Thespian's multiproc bases fork each child from its parent's process and keep the
``multiprocessing.Process`` in the parent's actor manager (``_child_procs``). This is
Thespian 4.0.1 internals, read in one place so an upgrade has one place to mend.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any


def child_pid(actor: Any, child_address: Any) -> int | None:
    """The pid of ``actor``'s child at ``child_address``, or None if unknown."""
    manager = getattr(actor, "_myRef", None)
    for info in getattr(manager, "_child_procs", ()):
        for candidate in (getattr(info, "childRealAddr", None), info.childAddr):
            if candidate is not None and candidate == child_address:
                return int(info.childProc.pid)
    return None


def kill(pid: int) -> bool:
    """SIGKILL ``pid``; False if it was already gone."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def process_stats() -> Iterator[tuple[int, list[str]]]:
    """Every process's pid and its ``/proc/<pid>/stat`` fields after ``comm)``: state,
    ppid, pgrp, ... (Linux). A process that exits while being read is skipped."""
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        yield int(entry), fields


def live_processes_in_group(pgid: int) -> list[int]:
    """Pids in process group ``pgid`` that are not zombies (Linux ``/proc``).

    ``killpg(pgid, 0)`` is no test of a stopped node: a daemonized admin's zombie
    still answers it until PID 1 reaps it, which some containers never do.
    """
    return [
        pid
        for pid, fields in process_stats()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X")
    ]


def is_dead(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True


def pid_listening_on(port: int) -> int | None:
    """The pid whose socket listens on TCP ``port`` (Linux ``/proc``), or None.

    How tools find an actor's process from its address: every actor listens on the
    port of its ``ActorAddress``.
    """
    inodes = set()
    with open("/proc/net/tcp") as table:
        for row in table.readlines()[1:]:
            fields = row.split()
            if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":
                inodes.add(fields[9])
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return int(pid)
        except OSError:
            continue
    return None
