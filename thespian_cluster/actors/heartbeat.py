"""Heartbeats as UDP datagrams, sent and answered by a thread inside NodeMonitor.

Why not Thespian messages: one costs ~1 ms of CPU on each side here, so a 2 Hz
full mesh of 50 nodes would eat a core. A datagram costs tens of microseconds, and a
thread answers it at once, whatever the actor is doing, so round-trip times are the
network's and not the actor loop's.

The wire:

* Every node's NodeMonitor listens on UDP ``(host, admin_port)``: the same number as
  its admin's TCP port (UDP and TCP ports are separate), so a peer's heartbeat
  address follows from its admin address and survives a NodeMonitor restart.
* Every ``interval`` it sends a ``PING`` to each peer from a socket *connected* to
  that peer; the peer answers ``ACK`` with the ping's sequence number and send time
  (the round-trip time) and its own name and incarnation (a restarted node at the
  same address is told apart at once). A ping received counts as life too.
* A connected UDP socket reports the peer's ICMP "port unreachable" as
  ``ECONNREFUSED``: nothing listens there. That is either a dead node or a
  NodeMonitor in the middle of a restart, so the thread then tries the peer's admin
  TCP port: refused means the node is gone (reported as *refused*); accepted means
  the node lives and its NodeMonitor is restarting (nothing reported).
* Packets are fixed binary structs, never pickles, with a 16-byte keyed BLAKE2b tag
  (key derived from the cluster cookie; an unkeyed digest without one). A packet
  with a bad tag or shape is dropped.

The thread only records observations; NodeMonitor drains them on its tick and
feeds them to the pure :class:`~thespian_cluster.core.membership.Membership`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import itertools
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Literal

from loguru import logger

MAGIC = b"TCH1"
PING, ACK = 1, 2
_HEAD = struct.Struct("!4sBQd16sB")  # magic, type, seq, send time, incarnation, name length
TAG_BYTES = 16
MAX_NAME_BYTES = 64
_PROBE_TIMEOUT = 0.2


def heartbeat_key(cookie: str | None) -> bytes | None:
    """The MAC key for heartbeats: derived from the cookie, never the cookie itself."""
    if cookie is None:
        return None
    return hashlib.blake2b(cookie.encode(), digest_size=32, person=b"tc-heartbeat").digest()


@dataclass(frozen=True, slots=True)
class Packet:
    kind: int
    seq: int
    sent: float
    incarnation: str
    name: str


class Codec:
    """Packs and checks heartbeat packets (see the module docstring)."""

    def __init__(self, key: bytes | None) -> None:
        self._mac = hashlib.blake2b(key=key or b"", digest_size=TAG_BYTES)

    def pack(self, packet: Packet) -> bytes:
        name = packet.name.encode()
        body = (
            _HEAD.pack(
                MAGIC,
                packet.kind,
                packet.seq,
                packet.sent,
                bytes.fromhex(packet.incarnation),
                len(name),
            )
            + name
        )
        mac = self._mac.copy()
        mac.update(body)
        return body + mac.digest()

    def unpack(self, data: bytes) -> Packet | None:
        """The packet, or None for anything that is not a well-formed, tagged one."""
        if len(data) < _HEAD.size + TAG_BYTES or len(data) > 512:
            return None
        body, tag = data[:-TAG_BYTES], data[-TAG_BYTES:]
        mac = self._mac.copy()
        mac.update(body)
        if not hmac.compare_digest(mac.digest(), tag):
            return None
        magic, kind, seq, sent, incarnation, size = _HEAD.unpack_from(body)
        if magic != MAGIC or kind not in (PING, ACK) or len(body) != _HEAD.size + size:
            return None
        try:
            name = body[_HEAD.size :].decode()
        except UnicodeDecodeError:
            return None
        return Packet(kind, seq, sent, incarnation.hex(), name)


@dataclass(frozen=True, slots=True)
class Peer:
    """A node to ping: its name and incarnation as we know them, and where it listens."""

    name: str
    incarnation: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Observation:
    """Something the thread saw: ``heard`` (with an rtt for an answered ping) or
    ``refused`` (the peer's admin port refused a connection)."""

    kind: Literal["heard", "refused"]
    name: str
    incarnation: str
    at: float  # time.monotonic()
    rtt: float | None = None


class HeartbeatAgent:
    """The heartbeat thread of one node; see the module docstring."""

    def __init__(
        self,
        name: str,
        incarnation: str,
        bind: tuple[str, int],
        interval: float,
        key: bytes | None,
    ) -> None:
        self.name = name
        self.incarnation = incarnation
        self.interval = interval
        self._codec = Codec(key)
        self._listen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._listen.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listen.bind(bind)
        self._listen.setblocking(False)
        self._lock = threading.Lock()
        self._observations: list[Observation] = []
        self._wanted: dict[str, Peer] = {}  # set by the actor
        self._ping_now = threading.Event()
        # A byte on this pair wakes the thread from select() (ping now, or stop).
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._stop = threading.Event()
        self._seq = itertools.count(1)
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self.sent = 0
        self.received = 0

    # ---- the actor's side ------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake()
        self._thread.join(timeout=2)
        for sock in (self._listen, self._wake_reader, self._wake_writer):
            sock.close()

    def set_peers(self, peers: list[Peer]) -> None:
        with self._lock:
            before, self._wanted = self._wanted, {p.name: p for p in peers}
        if any(before.get(p.name) != p for p in peers):
            self.ping_now()  # a new peer gets its first ping (and an rtt) at once

    def ping_now(self) -> None:
        """Ping every peer at once instead of at the next interval."""
        self._ping_now.set()
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"!")

    def drain(self) -> list[Observation]:
        with self._lock:
            seen, self._observations = self._observations, []
        return seen

    # ---- the thread ------------------------------------------------------------

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._listen, selectors.EVENT_READ, None)
        selector.register(self._wake_reader, selectors.EVENT_READ, "wake")
        links: dict[str, tuple[Peer, socket.socket]] = {}
        next_ping = time.monotonic()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_ping or self._ping_now.is_set():
                    self._ping_now.clear()
                    self._relink(selector, links)
                    for peer, link in list(links.values()):
                        self._ping(link, peer, now)
                    next_ping = now + self.interval
                for key, _ in selector.select(max(0.0, next_ping - time.monotonic())):
                    if key.data is None:
                        self._serve(self._listen)
                    elif key.data == "wake":
                        with contextlib.suppress(OSError):
                            self._wake_reader.recv(4096)
                    else:
                        peer, link = key.data
                        self._receive(link, peer)
        except Exception:  # the thread must not die silently: peers would see us hang
            logger.exception("heartbeat thread failed")
        finally:
            for _, link in links.values():
                link.close()
            selector.close()

    def _relink(
        self, selector: selectors.BaseSelector, links: dict[str, tuple[Peer, socket.socket]]
    ) -> None:
        """Open a connected socket per wanted peer; close those no longer wanted."""
        with self._lock:
            wanted = dict(self._wanted)
        for name, (peer, link) in list(links.items()):
            if wanted.get(name) != peer:
                selector.unregister(link)
                link.close()
                del links[name]
        for name, peer in wanted.items():
            if name not in links:
                link = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                link.setblocking(False)
                try:
                    link.connect((peer.host, peer.port))
                except OSError as exc:
                    logger.debug("heartbeat cannot reach {}: {}", peer.name, exc)
                    link.close()
                    continue
                links[name] = (peer, link)
                selector.register(link, selectors.EVENT_READ, (peer, link))

    def _ping(self, link: socket.socket, peer: Peer, now: float) -> None:
        packet = Packet(PING, next(self._seq), now, self.incarnation, self.name)
        try:
            link.send(self._codec.pack(packet))
            self.sent += 1
        except ConnectionRefusedError:
            self._check_refusal(peer)
        except OSError:
            pass  # unreachable network, full buffer: silence speaks for itself

    def _receive(self, link: socket.socket, peer: Peer) -> None:
        while True:
            try:
                data = link.recv(1024)
            except BlockingIOError:
                return
            except ConnectionRefusedError:
                self._check_refusal(peer)
                return
            except OSError:
                return
            packet = self._codec.unpack(data)
            if packet is None or packet.kind != ACK or packet.name != peer.name:
                continue
            self.received += 1
            now = time.monotonic()
            self._observe(
                Observation("heard", packet.name, packet.incarnation, now, now - packet.sent)
            )

    def _serve(self, listen: socket.socket) -> None:
        """Answer every waiting ping."""
        while True:
            try:
                data, source = listen.recvfrom(1024)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            packet = self._codec.unpack(data)
            if packet is None or packet.kind != PING:
                continue
            self.received += 1
            answer = Packet(ACK, packet.seq, packet.sent, self.incarnation, self.name)
            with contextlib.suppress(OSError):
                listen.sendto(self._codec.pack(answer), source)
                self.sent += 1
            self._observe(Observation("heard", packet.name, packet.incarnation, time.monotonic()))

    def _check_refusal(self, peer: Peer) -> None:
        """Nothing listens on the peer's heartbeat port: is its admin gone too?"""
        if admin_refuses(peer.host, peer.port):
            self._observe(Observation("refused", peer.name, peer.incarnation, time.monotonic()))

    def _observe(self, observation: Observation) -> None:
        with self._lock:
            self._observations.append(observation)


def admin_refuses(host: str, port: int, timeout: float = _PROBE_TIMEOUT) -> bool:
    """True if a TCP connection to ``host:port`` is refused (no process listens)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(timeout)
        code = probe.connect_ex((host, port))
    return code == errno.ECONNREFUSED
