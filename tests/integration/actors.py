"""Actors the integration tests create (importable by every forked actor process)."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from thespian.actors import Actor, ActorExitRequest

from thespian_cluster import Message, NormalExit, RegistryExitHook, SupervisedBy


class Worker(Actor):
    """Answers "info" with (pid, start time); "exit_normally" exits as OTP's normal."""

    def __init__(self) -> None:
        super().__init__()
        self.started = time.monotonic()
        self.supervised_by: SupervisedBy | None = None
        self.exit_asked = False

    def record_exit(self) -> None:
        """Note "<child id> <monotonic time>" in the node's exits.log (tests read it)."""
        node_dir = os.environ.get("THESPIAN_CLUSTER_NODE_DIR")
        if node_dir and self.supervised_by is not None:
            with open(os.path.join(node_dir, "exits.log"), "a") as log:
                log.write(f"{self.supervised_by.child_id} {time.monotonic()}\n")

    def exit_normally(self) -> None:
        assert self.supervised_by is not None
        self.send(self.supervised_by.supervisor, NormalExit(child_id=self.supervised_by.child_id))
        self.send(self.myAddress, ActorExitRequest())

    def receiveMessage(self, message: Any, sender: Any) -> None:
        if isinstance(message, ActorExitRequest):
            self.record_exit()
        elif isinstance(message, SupervisedBy):
            self.supervised_by = message
            if self.exit_asked:
                self.exit_normally()
        elif message == "info":
            self.send(sender, (os.getpid(), self.started))
        elif message == "exit_normally":
            # SupervisedBy and this request come from different senders: either may be first.
            self.exit_asked = True
            if self.supervised_by is not None:
                self.exit_normally()
        elif message == "block":
            time.sleep(3600)  # ignores everything, ActorExitRequest included


class HookedWorker(RegistryExitHook, Actor):
    """A worker that frees its names through the exit hook."""

    def receiveMessage(self, message: Any, sender: Any) -> None:
        super().receiveMessage(message, sender)
        if message == "info":
            self.send(sender, (os.getpid(), time.monotonic()))


class LoggingActor(Actor):
    """Logs through the standard logging module, as most Thespian actors do."""

    def receiveMessage(self, message: Any, sender: Any) -> None:
        if isinstance(message, str):
            logging.getLogger("user.actor").warning("user actor says %s", message)
            self.send(sender, "logged")


#: A FlakyWorker's fault switch, in the node's directory: an integer N makes the next N
#: starts fail (each one counts it down), "always" makes every start fail, no file none.
FLAKY_FILE = "flaky-starts"


class FlakyWorker(Worker):
    """A worker whose ``__init__`` raises while the node's FLAKY_FILE says so.

    Children start one at a time, so no two FlakyWorkers read the file at once.
    """

    def __init__(self) -> None:
        node_dir = os.environ.get("THESPIAN_CLUSTER_NODE_DIR", "")
        switch = os.path.join(node_dir, FLAKY_FILE)
        if node_dir and os.path.exists(switch):
            with open(switch) as handle:
                setting = handle.read().strip()
            if setting == "always":
                raise RuntimeError("FlakyWorker: told to fail every start")
            if int(setting) > 0:
                with open(switch, "w") as handle:
                    handle.write(str(int(setting) - 1))
                raise RuntimeError(f"FlakyWorker: told to fail {setting} more start(s)")
        super().__init__()


class BadConfigWorker(Worker):
    """A worker that cannot take its init message (a str): its start fails."""

    def receiveMessage(self, message: Any, sender: Any) -> None:
        if message == "configure":
            raise ValueError("BadConfigWorker cannot be configured")
        super().receiveMessage(message, sender)


class EventLog(Actor):
    """Keeps every protocol message it is sent, in order (events, replies);
    ``("send", to, message)`` sends ``message`` on its behalf (so replies land here);
    ``"events"`` answers the list so far."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Any] = []

    def receiveMessage(self, message: Any, sender: Any) -> None:
        if message == "events":
            self.send(sender, list(self.seen))
        elif isinstance(message, tuple) and len(message) == 3 and message[0] == "send":
            self.send(message[1], message[2])
        elif isinstance(message, Message):
            self.seen.append(message)
