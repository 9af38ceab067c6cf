"""actors.peer_links on real loopback sockets: order, the cookie, refusals, back-pressure."""

from __future__ import annotations

import pickle
import select
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from thespian.actors import ActorAddress
from thespian.system.transport.IPBase import TCPv4ActorAddress

from thespian_cluster.actors import peer_links
from thespian_cluster.actors.peer_links import LINKED, PeerLinks
from thespian_cluster.core import replica as core
from thespian_cluster.core.frames import frame
from thespian_cluster.global_messages import LinkHello, NewerTerm
from thespian_cluster.security import WireSerializer

TERM = core.Term(1, core.NodeId("a", "i"))
COOKIE = "a cookie of sixteen bytes or more"


def _address(port: int) -> ActorAddress:
    return ActorAddress(TCPv4ActorAddress("127.0.0.1", port))


def _delta(seq: int) -> core.Delta:
    return core.Delta(TERM, seq, ())


def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


class Receiver:
    """A listening PeerLinks alone, read by ``pump()`` (which says how many sockets it
    watches: the listener plus the links dialled to it)."""

    def __init__(self, codec: Any = pickle) -> None:
        self.links = PeerLinks("127.0.0.1", _address(41002), codec, accepts=LINKED)
        self.got: list[Any] = []

    def pump(self) -> int:
        ready, _, _ = select.select(self.links.filenos(), [], [], 0.05)
        self.got += self.links.readable(ready)
        return len(self.links.filenos())


class Pair:
    """``a`` sends to ``b``: ``b_address`` is the Thespian address ``a`` knows b by."""

    def __init__(self, codec_a: Any = pickle, codec_b: Any = pickle) -> None:
        self.a_address = _address(41001)
        self.a = PeerLinks("127.0.0.1", self.a_address, codec_a, accepts=LINKED)
        self.b = PeerLinks("127.0.0.1", _address(41002), codec_b, accepts=LINKED)
        self.b_address = _address(self.b.port)  # links dial the address's IP
        self.a.learn(self.b_address, self.b.port)
        self.got: list[tuple[Any, Any]] = []

    def pump(self, timeout: float = 0.05) -> None:
        """Let ``b`` read whatever is ready."""
        ready, _, _ = select.select(self.b.filenos(), [], [], timeout)
        self.got += self.b.readable(ready)

    def send_when_up(self, message: Any) -> None:
        _until(lambda: self.a.send(self.b_address, message))

    def close(self) -> None:
        self.a.close()
        self.b.close()


@pytest.fixture
def pair() -> Iterator[Pair]:
    links = Pair()
    yield links
    links.close()


def test_messages_arrive_in_order_with_the_senders_address(pair: Pair) -> None:
    pair.send_when_up(_delta(1))  # dialled when the port was learned: up at once here
    for seq in range(2, 200):
        assert pair.a.send(pair.b_address, _delta(seq))
    _until(lambda: (pair.pump(), len(pair.got) == 199)[1])
    assert [m.first_seq for m, _ in pair.got] == list(range(1, 200))
    assert all(sender == pair.a_address for _, sender in pair.got)


def test_a_link_is_sealed_with_the_cookie_and_a_stranger_is_dropped() -> None:
    sealed = Pair(WireSerializer(COOKIE), WireSerializer(COOKIE))
    other = Pair(WireSerializer("another cookie, also long enough"), WireSerializer(COOKIE))
    try:
        sealed.send_when_up(_delta(1))
        _until(lambda: (sealed.pump(), len(sealed.got) == 1)[1])
        other.send_when_up(_delta(1))
        _until(lambda: (other.pump(), len(other.b.filenos()) == 2)[1])  # accepted
        _until(lambda: (other.pump(), len(other.b.filenos()) == 1)[1])  # then dropped
        assert other.got == []
    finally:
        sealed.close()
        other.close()


def test_a_message_type_links_do_not_carry_closes_the_link(pair: Pair) -> None:
    pair.send_when_up(_delta(1))
    pair.a.send(pair.b_address, NewerTerm(term=TERM))
    pair.a.send(pair.b_address, _delta(2))
    _until(lambda: (pair.pump(), len(pair.b.filenos()) == 1 and pair.got != [])[1])
    assert [m.first_seq for m, _ in pair.got] == [1]  # nothing after the refused one


@pytest.mark.parametrize(
    "first",
    [pickle.dumps(_delta(1)), pickle.dumps(LinkHello(sender="not an address"))],
    ids=["no hello", "a hello without an address"],
)
def test_a_link_must_start_with_a_hello_naming_an_actor(first: bytes) -> None:
    receiver = Receiver()
    raw = socket.create_connection(("127.0.0.1", receiver.links.port))
    try:
        raw.sendall(frame(first) + frame(pickle.dumps(_delta(2))))
        _until(lambda: receiver.pump() == 2)  # accepted
        _until(lambda: receiver.pump() == 1)  # then dropped
        assert receiver.got == []
    finally:
        raw.close()
        receiver.links.close()


def test_a_stranger_that_never_says_hello_is_dropped_and_may_not_send_a_big_frame() -> None:
    receiver = Receiver()
    silent = socket.create_connection(("127.0.0.1", receiver.links.port))
    big = socket.create_connection(("127.0.0.1", receiver.links.port))
    try:
        big.sendall(frame(b"x" * (peer_links.MAX_HELLO + 1))[:64])  # only the length
        _until(lambda: receiver.pump() == 3)  # both accepted
        _until(lambda: receiver.pump() == 2)  # the oversized first frame: dropped at once
        deadline = time.monotonic() + peer_links.HELLO_TIMEOUT + 5
        while receiver.pump() != 1:  # the silent one: dropped by the timer after the hello
            receiver.links.flush()  # deadline
            assert time.monotonic() < deadline
    finally:
        silent.close()
        big.close()
        receiver.links.close()


def test_a_peer_that_reads_nothing_costs_a_bounded_backlog_then_the_link(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peer_links, "MAX_BACKLOG", 256 * 1024)
    pair.send_when_up(_delta(1))
    big = core.Delta(TERM, 2, tuple(core.DropName("name", f"n{i}") for i in range(2000)))
    sent = 0
    while pair.a.send(pair.b_address, big):  # b never reads: kernel buffers, then ours
        sent += 1
        assert pair.a.backlog <= 256 * 1024 + len(pickle.dumps(big)) + 8
        assert sent < 10_000
    assert pair.a.backlog == 0  # the link was closed with its backlog
    assert pair.a.send(pair.b_address, _delta(3)) is False  # and is not redialled at once


def test_a_peer_nobody_listens_for_gets_every_message_by_thespian() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nobody listens there now
    links = PeerLinks(None, _address(41003), pickle)
    try:
        target = _address(port)
        links.learn(target, port)  # dialled at once: refused
        for seq in range(50):
            assert links.send(target, _delta(seq)) is False
        assert links.stats() == {"up": 0, "sent": 0, "received": 0, "by_thespian": 50}
    finally:
        links.close()


def test_a_sealed_receiver_refuses_a_bare_pickle_hello() -> None:
    receiver = Receiver(WireSerializer(COOKIE))
    raw = socket.create_connection(("127.0.0.1", receiver.links.port))
    try:
        hello = pickle.dumps(LinkHello(sender=_address(41001)))
        raw.sendall(frame(hello) + frame(pickle.dumps(_delta(1))))
        _until(lambda: receiver.pump() == 2)
        _until(lambda: receiver.pump() == 1)
        assert receiver.got == []
    finally:
        raw.close()
        receiver.links.close()


def test_a_link_its_receiver_closed_is_seen_before_the_next_send(pair: Pair) -> None:
    pair.send_when_up(_delta(1))
    _until(lambda: (pair.pump(), len(pair.got) == 1)[1])
    pair.b.close()  # its actor died: the kernel closes its end
    _until(lambda: pair.a.send(pair.b_address, _delta(2)) is False)
    assert pair.a.stats()["up"] == 0
    assert pair.a.send(pair.b_address, _delta(3)) is False  # Thespian's, until a new life
