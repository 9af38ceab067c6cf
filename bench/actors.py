"""The actors the benchmarks create (module level: actor processes import them by name)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from thespian.actors import Actor, ActorAddress, ActorSystemMessage

from thespian_cluster import AlreadyRegistered, Register, Registered, RegistryError


class Echo(Actor):
    """Sends every message back; answers ``("pgid",)`` with its process group."""

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        if message == ("pgid",):
            self.send(sender, os.getpgid(0))
        elif not isinstance(message, ActorSystemMessage):
            self.send(sender, message)


class BenchWorker(Actor):
    """An actor to register and kill: answers ``("pid",)`` with its pid."""

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        if message == ("pid",):
            self.send(sender, os.getpid())


@dataclass(frozen=True)
class PingPong:
    """Ask a :class:`Pinger` to do ``count`` sequential round trips with ``target``."""

    target: Any
    count: int


class Pinger(Actor):
    """Actor-to-actor round trips: ping, wait for the pong, ping again.

    Replies ``("pingpong", count, seconds)`` to whoever sent the :class:`PingPong`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.asker: Any = None
        self.target: Any = None
        self.left = 0
        self.count = 0
        self.started = 0.0

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        if isinstance(message, PingPong):
            self.asker, self.count, self.left = sender, message.count, message.count
            self.target = message.target
            self.started = time.perf_counter()
            self.send(self.target, "ping")
        elif message == "ping" and self.asker is not None:  # the pong
            self.left -= 1
            if self.left > 0:
                self.send(self.target, "ping")
            else:
                elapsed = time.perf_counter() - self.started
                self.send(self.asker, ("pingpong", self.count, elapsed))
                self.asker = None


@dataclass(frozen=True)
class Load:
    """Ask a :class:`Loader` to register ``count`` names, ``window`` requests in flight."""

    registry: Any
    owner: Any
    prefix: str
    start: int
    count: int
    window: int = 5
    scope: str = "local"


class Loader(Actor):
    """Registers names as fast as the Registry takes them, from inside the node.

    Replies ``("loaded", registered, refused, seconds)`` once every reply is in.
    """

    def __init__(self) -> None:
        super().__init__()
        self.job: Load | None = None
        self.asker: Any = None
        self.next = self.acked = self.refused = 0
        self.started = 0.0

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        if isinstance(message, Load):
            self.job, self.asker = message, sender
            self.next = self.acked = self.refused = 0
            self.started = time.perf_counter()
            for _ in range(min(message.window, message.count)):
                self._send_next()
        elif isinstance(message, Registered | AlreadyRegistered | RegistryError):
            if self.job is None:
                return
            self.acked += 1
            if not isinstance(message, Registered):
                self.refused += 1
            if self.next < self.job.count:
                self._send_next()
            elif self.acked >= self.job.count:
                elapsed = time.perf_counter() - self.started
                done = ("loaded", self.acked - self.refused, self.refused, elapsed)
                self.send(self.asker, done)
                self.job = None

    def _send_next(self) -> None:
        job = self.job
        assert job is not None
        name = f"{job.prefix}{job.start + self.next:07d}"
        self.send(
            job.registry,
            Register(name=name, address=job.owner, scope=job.scope),
        )
        self.next += 1


class EventRecorder(Actor):
    """Subscribes where it is told (``("subscribe", registry, request)``) and keeps the
    ``time.monotonic()`` at which each ``NameRegistered`` arrived; ``("times",)``
    answers ``{name: arrival}`` (one clock for every process of a host)."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: dict[Any, float] = {}

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        kind = type(message).__name__
        if kind == "NameRegistered":
            self.arrivals.setdefault(message.name, time.monotonic())
        elif isinstance(message, tuple) and message[:1] == ("subscribe",):
            self.send(message[1], message[2])
        elif message == ("times",):
            self.send(sender, dict(self.arrivals))
