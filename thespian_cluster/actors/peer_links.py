"""Direct TCP links between RegistryDist actors, for the global scope's hot messages.

A Thespian message between two actors costs each end ~350-400 µs of CPU here: the
transport's handshake (data, then an ACK back), a fresh selector over every socket on
each turn of its loop, and the send path's bookkeeping. The same bytes on a plain
socket that the actor watches (``ThespianWatch``) cost ~50 µs an end. A global write
crosses RegistryDists three times (the write to the sequencer, its decision back, the
delta to every other replica), so those three message types travel on links:
:data:`LINKED`. ``python -m bench.write_path`` with and without ``--no-links``
measures the difference on the whole write path.

How a link works:

* every RegistryDist listens on an ephemeral port of its node's host and tells each
  peer RegistryDist it sees in the view, by Thespian
  (:class:`~thespian_cluster.global_messages.LinkOffer`), and answers every offer
  with its own, so a restarted RegistryDist learns every port again;
* a link is **one way**: the sender dials the receiver's port (non-blocking) and
  starts with a :class:`~thespian_cluster.global_messages.LinkHello` naming its own
  Thespian address, which the receiver then hands to the backend as the sender of
  every message that link carries;
* each message is one frame (:mod:`thespian_cluster.core.frames`) of the bytes
  Thespian's transport would have sent: with a cluster cookie, sealed and checked
  exactly like every other packet (:mod:`thespian_cluster.security`);
* until a link is up, or after it failed, :meth:`PeerLinks.send` returns False and
  the caller sends by Thespian as before. A link whose receiver closed it (its actor
  died) is seen before the next send, so that send goes by Thespian too. A link that
  cannot take a frame (the peer stopped reading, its host is cut off) keeps at most
  :data:`MAX_BACKLOG` bytes, then is closed and its backlog dropped.

A link has no acknowledgement: a frame written just before its receiver dies is lost
without a word, where Thespian would report a dead letter. That is why only the three
types above use links: the protocol already recovers from losing them (writes are
re-sent until decided, a replica with a hole asks for a snapshot). A client's request
(the Registry's ``Forwarded``) is re-sent by nobody, so it keeps Thespian's delivery.

Messages on one link arrive in the order they were sent. A link is dialled as soon as
the peer's port is known (and again after a failure, on the actor's timer), so it is
normally up before any traffic; while it is not, the three types go by Thespian,
and one sent by Thespian just before a link came up can arrive after later ones sent
on it. Deltas and decisions carry their own order (sequence numbers, op ids); writes
of one origin do not (the sequencer decides in arrival order), so in that window a
write sent without waiting for the previous one's answer can overtake it, as it can
when Thespian itself resends.
"""

from __future__ import annotations

import errno
import ipaddress
import select
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from loguru import logger
from thespian.actors import ActorAddress

from thespian_cluster.core.addresses import AddressKey, address_key
from thespian_cluster.core.frames import MAX_FRAME, FrameError, FrameReader, frame
from thespian_cluster.core.replica import Delta
from thespian_cluster.global_messages import Decisions, LinkHello, Writes

#: The message types that travel between RegistryDists on links when one is up.
LINKED: tuple[type, ...] = (Writes, Decisions, Delta)
#: The flush timer's wakeup payload (a link held bytes back).
FLUSH = "thespian_cluster.peer_links.flush"
#: Seconds before a link that held bytes back tries again.
FLUSH_AFTER = 0.005
#: Bytes a link may hold for a peer that does not read before it is closed.
MAX_BACKLOG = 8 * 1024 * 1024
#: Seconds a link may take to connect, and a failed peer waits before the next try.
CONNECT_TIMEOUT = 2.0
RETRY_AFTER = 1.0
#: Connections this actor accepts at once (every peer's link, with room for restarts),
#: and of those, how many may not have said hello yet, for how long, in how many bytes.
MAX_INCOMING = 256
MAX_STRANGERS = 32
HELLO_TIMEOUT = 2.0
MAX_HELLO = 64 * 1024
#: TCP keepalive of accepted links: a peer host that vanished is noticed in ~25 s.
_KEEPALIVE = (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))
_READ = 256 * 1024
_READS_PER_TURN = 16  # then the next turn: one busy link must not starve the actor


@dataclass
class _Outgoing:
    sock: socket.socket
    since: float
    up: bool = False
    backlog: bytearray = field(default_factory=bytearray)


@dataclass
class _Incoming:
    sock: socket.socket
    since: float
    # Until the hello, frames are small: a stranger must not make us buffer 64 MiB
    # before its first frame's tag is checked.
    reader: FrameReader = field(default_factory=lambda: FrameReader(MAX_HELLO))
    sender: Any = None  # the peer's Thespian address, from its hello


class PeerLinks:
    """One actor's links: a listener, links it dials, links dialled to it.

    ``codec`` has ``dumps``/``loads`` (this process's wire serializer); ``me`` is this
    actor's Thespian address, which peers use to answer by Thespian; ``accepts`` the
    message types it takes from links (anything else closes the link). Without
    ``host`` it only dials.
    """

    def __init__(
        self, host: str | None, me: Any, codec: Any, accepts: tuple[type, ...] = ()
    ) -> None:
        self._me = me
        self._codec = codec
        self._accepts = accepts
        self._listener: socket.socket | None = None
        self.port = 0
        if host is not None:
            self._listener = socket.create_server((host, 0), backlog=64)
            self._listener.setblocking(False)
            self.port = self._listener.getsockname()[1]
        self._ports: dict[AddressKey, int] = {}
        self._peers: dict[AddressKey, Any] = {}  # the addresses of _ports' keys
        self._out: dict[AddressKey, _Outgoing] = {}
        self._failed_at: dict[AddressKey, float] = {}
        self._in: dict[int, _Incoming] = {}
        self._counts = {"sent": 0, "received": 0, "by_thespian": 0}

    # ---- what the actor watches ---------------------------------------------------------

    def filenos(self) -> list[int]:
        """The sockets to watch for reading (the listener and every incoming link)."""
        listening = [] if self._listener is None else [self._listener.fileno()]
        return [*listening, *self._in]

    def stats(self) -> dict[str, int]:
        """What :class:`~thespian_cluster.global_messages.GlobalStatus` reports."""
        return {"up": sum(link.up for link in self._out.values()), **self._counts}

    @property
    def backlog(self) -> int:
        return sum(len(link.backlog) for link in self._out.values())

    # ---- peers ------------------------------------------------------------------------

    def learn(self, peer: Any, port: int) -> None:
        """``peer`` (a RegistryDist) listens for links on ``port`` of its host."""
        key = address_key(peer)
        if self._ports.get(key) != port:
            self._ports[key] = port
            self._peers[key] = peer
            self._close_out(key)  # a new port: a new life of that peer
            self._failed_at.pop(key, None)
            # Dialled now, not at the first message: a link up before the traffic
            # starts does not change paths under it (a Thespian send then a link one).
            self._dial(key, peer)

    def forget(self, peer: Any) -> None:
        """``peer`` left the view: close the link to it."""
        key = address_key(peer)
        self._ports.pop(key, None)
        self._peers.pop(key, None)
        self._failed_at.pop(key, None)
        self._close_out(key)
        for fd, incoming in list(self._in.items()):
            if incoming.sender is not None and address_key(incoming.sender) == key:
                self._close_in(fd)

    # ---- sending ----------------------------------------------------------------------

    def send(self, to: Any, message: Any) -> bool:
        """Send ``message`` to ``to`` on a link; False if there is none up (send it by
        Thespian then). Never blocks."""
        key = address_key(to)
        link = self._out.get(key)
        if link is None:
            self._dial(key, to)
        elif (link.up or self._connected(key, link)) and self._write(
            key, link, frame(self._codec.dumps(message))
        ):
            self._counts["sent"] += 1
            return True
        self._counts["by_thespian"] += 1
        return False

    def flush(self) -> None:
        """Write what links hold back (the peer's buffer was full), complete dials,
        dial again the peers whose link failed a while ago, and drop connections that
        never said hello. Called on the actor's timer."""
        for key, link in list(self._out.items()):
            if link.up and link.backlog:
                self._write(key, link, b"")
            elif not link.up:
                self._connected(key, link)
        for key, peer in list(self._peers.items()):
            if key not in self._out:
                self._dial(key, peer)
        now = time.monotonic()
        for fd, incoming in list(self._in.items()):
            if incoming.sender is None and now - incoming.since > HELLO_TIMEOUT:
                self._close_in(fd)

    def _dial(self, key: AddressKey, to: Any) -> None:
        port = self._ports.get(key)
        if port is None or time.monotonic() - self._failed_at.get(key, -RETRY_AFTER) < RETRY_AFTER:
            return
        host = _numeric_host(to)
        if host is None:
            return  # a host name or a non-TCP address: Thespian carries it
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex((host, port))
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self._failed(key, f"connect: {errno.errorcode.get(code, code)}")
            return
        link = _Outgoing(sock, time.monotonic())
        link.backlog += frame(self._codec.dumps(LinkHello(sender=self._me)))
        self._out[key] = link

    def _connected(self, key: AddressKey, link: _Outgoing) -> bool:
        """Has the dial completed? Then the link is up with its hello queued."""
        try:
            _, writable, _ = select.select([], [link.sock], [], 0)
        except (OSError, ValueError):
            writable = []
        if not writable:
            if time.monotonic() - link.since > CONNECT_TIMEOUT:
                self._close_out(key)
                self._failed(key, "connect timed out")
            return False
        error = link.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            self._close_out(key)
            self._failed(key, f"connect: {errno.errorcode.get(error, error)}")
            return False
        link.up = True
        return True

    def _write(self, key: AddressKey, link: _Outgoing, data: bytes) -> bool:
        if _closed_by_peer(link.sock):
            # The receiver never writes on a link: readable means it closed (its actor
            # died). A send now would vanish without an error; Thespian's reports it.
            self._close_out(key)
            self._failed(key, "closed by the peer")
            return False
        backlog = link.backlog
        if backlog:
            backlog += data
            if len(backlog) > MAX_BACKLOG:
                self._close_out(key)
                self._failed(key, f"the peer read nothing of {len(backlog)} bytes")
                return False
            pending: bytes | memoryview = memoryview(backlog)
        else:
            pending = data
        try:
            sent = link.sock.send(pending) if len(pending) else 0
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._close_out(key)
            self._failed(key, f"send: {exc}")
            return False
        finally:
            if isinstance(pending, memoryview):
                pending.release()  # a bytearray cannot shrink while a view is held
        if backlog:
            del backlog[:sent]
        elif sent < len(data):
            backlog += data[sent:]
        return True

    def _failed(self, key: AddressKey, why: str) -> None:
        self._failed_at[key] = time.monotonic()
        logger.debug("peer link to {} down: {}", key, why)

    def _close_out(self, key: AddressKey) -> None:
        link = self._out.pop(key, None)
        if link is not None:
            link.sock.close()

    # ---- receiving --------------------------------------------------------------------

    def readable(self, ready: Iterable[int]) -> list[tuple[Any, Any]]:
        """``(message, sender)`` for every whole message on the ready sockets."""
        got: list[tuple[Any, Any]] = []
        listener = None if self._listener is None else self._listener.fileno()
        for fd in ready:
            if fd == listener:
                self._accept()
            else:
                incoming = self._in.get(fd)
                if incoming is not None:
                    self._read(fd, incoming, got.append)
        return got

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                logger.warning("peer links: accept failed: {}", exc)
                return
            strangers = sum(1 for i in self._in.values() if i.sender is None)
            if len(self._in) >= MAX_INCOMING or strangers >= MAX_STRANGERS:
                sock.close()
                continue
            sock.setblocking(False)
            _keep_alive(sock)
            self._in[sock.fileno()] = _Incoming(sock, time.monotonic())

    def _read(self, fd: int, incoming: _Incoming, deliver: Callable[[Any], None]) -> None:
        for _ in range(_READS_PER_TURN):
            try:
                data = incoming.sock.recv(_READ)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self._close_in(fd)
                return
            try:
                for payload in incoming.reader.feed(data):
                    message = self._codec.loads(payload)
                    if incoming.sender is None:
                        if not isinstance(message, LinkHello) or not isinstance(
                            message.sender, ActorAddress
                        ):
                            raise FrameError("a link must start with a hello")
                        incoming.sender = message.sender
                        incoming.reader = incoming.reader.resized(MAX_FRAME)
                        self._close_older(fd, message.sender)
                    elif isinstance(message, self._accepts):
                        self._counts["received"] += 1
                        deliver((message, incoming.sender))
                    else:
                        raise FrameError(f"a {type(message).__name__} has no place on a link")
            except Exception as exc:  # a bad frame, a refused packet: drop the link
                logger.warning("peer link from {} closed: {}", incoming.sender, exc)
                self._close_in(fd)
                return

    def _close_older(self, fd: int, sender: Any) -> None:
        """A new hello from ``sender``: its older links to us are spent (it re-dialled)."""
        key = address_key(sender)
        for other, incoming in list(self._in.items()):
            if other != fd and incoming.sender is not None and address_key(incoming.sender) == key:
                self._close_in(other)

    def _close_in(self, fd: int) -> None:
        incoming = self._in.pop(fd, None)
        if incoming is not None:
            incoming.sock.close()

    def close(self) -> None:
        for key in list(self._out):
            self._close_out(key)
        for fd in list(self._in):
            self._close_in(fd)
        if self._listener is not None:
            self._listener.close()


def _keep_alive(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in _KEEPALIVE:
        if hasattr(socket, option):  # Linux names; elsewhere the system's defaults
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


def _numeric_host(address: Any) -> str | None:
    sockname = getattr(getattr(address, "addressDetails", None), "sockname", None)
    if not sockname:
        return None
    try:
        return str(ipaddress.IPv4Address(sockname[0]))
    except ValueError:
        return None
