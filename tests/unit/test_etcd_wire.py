"""The etcd client's reading of the gateway's dialect, on replies copied from etcd 3.5.1."""

from __future__ import annotations

import json

import pytest

from thespian_cluster.backends.etcd import (
    Compare,
    EtcdAuthError,
    EtcdCompacted,
    EtcdError,
    EtcdInvalidRequest,
    EtcdLeaseNotFound,
    EtcdProtocolError,
    EtcdUnavailable,
    KeyValue,
    error_from_reply,
    prefix_range_end,
)
from thespian_cluster.backends.etcd.client import _ChunkedJsonStream, _parse_reply

# (code, message) pairs as etcd 3.5.1's gateway sent them, and the type each must be.
MEASURED = [
    (14, "etcdserver: no leader", EtcdUnavailable),
    (2, "context deadline exceeded", EtcdUnavailable),  # a put to a member without quorum
    (4, "context deadline exceeded", EtcdUnavailable),  # Grpc-Timeout ran out
    (14, "etcdserver: request timed out", EtcdUnavailable),
    (11, "etcdserver: mvcc: required revision has been compacted", EtcdCompacted),
    (11, "etcdserver: mvcc: required revision is a future revision", EtcdInvalidRequest),
    (5, "etcdserver: requested lease not found", EtcdLeaseNotFound),
    (3, "etcdserver: authentication failed, invalid user ID or password", EtcdAuthError),
    (16, "etcdserver: invalid auth token", EtcdAuthError),
    (3, "etcdserver: user name is empty", EtcdAuthError),  # no token while auth is on
    (
        None,
        "rpc error: code = PermissionDenied desc = etcdserver: permission denied",
        EtcdAuthError,
    ),
    (3, "etcdserver: key is not provided", EtcdInvalidRequest),
]


@pytest.mark.parametrize(("code", "message", "kind"), MEASURED)
def test_each_measured_error_gets_its_type(code: int | None, message: str, kind: type) -> None:
    error = error_from_reply(code, message)
    assert type(error) is kind
    assert error.code == code and error.message == message


def test_a_write_without_an_answer_may_be_applied_but_not_one_refused_for_no_leader() -> None:
    timed_out = error_from_reply(14, "etcdserver: request timed out", write=True)
    no_leader = error_from_reply(14, "etcdserver: no leader", write=True)
    read = error_from_reply(14, "etcdserver: request timed out")
    assert isinstance(timed_out, EtcdUnavailable) and timed_out.maybe_applied
    assert isinstance(no_leader, EtcdUnavailable) and not no_leader.maybe_applied
    assert isinstance(read, EtcdUnavailable) and not read.maybe_applied


def test_a_unary_error_reply_and_a_stream_error_are_read_alike() -> None:
    unary = b'{"error":"etcdserver: no leader","code":14,"message":"etcdserver: no leader"}'
    with pytest.raises(EtcdUnavailable):
        _parse_reply(503, unary, stream=False, write=False)
    stream = (
        b'{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader",'
        b'"http_status":"Service Unavailable"}}\n'
    )
    with pytest.raises(EtcdUnavailable):
        _parse_reply(200, stream, stream=True, write=False)
    with pytest.raises(EtcdProtocolError):
        _parse_reply(502, b"<html>bad gateway</html>", stream=False, write=False)


def test_int64_fields_are_strings_and_zeros_are_omitted() -> None:
    # a DELETE event's kv: only key and mod_revision
    kv = KeyValue.from_json({"key": "Zm9v", "mod_revision": "6"})
    assert kv == KeyValue(b"foo", b"", 0, 6, 0, 0)
    full = KeyValue.from_json(
        {"key": "Zm9v", "create_revision": "2", "mod_revision": "5", "version": "2",
         "value": "cXV4", "lease": "7587862073453339915"}
    )  # fmt: skip
    assert full.value == b"qux" and full.lease == 7587862073453339915
    with pytest.raises(EtcdProtocolError):
        KeyValue.from_json({"key": "not base64!"})


def test_the_chunked_stream_survives_any_split_of_its_bytes() -> None:
    messages = [
        {"result": {"header": {"revision": "4"}, "created": True}},
        {"result": {"header": {"revision": "5"}, "events": [{"kv": {"key": "Zm9v"}}]}},
        {"result": {"header": {"raft_term": "2"}, "canceled": True, "compact_revision": "5"}},
    ]
    body = b"".join(json.dumps(m).encode() + b"\n" for m in messages)
    chunks = [body[:10], body[10:150], body[150:]]  # chunk edges inside messages
    wire = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"%x\r\n" % len(c) + c + b"\r\n" for c in chunks)
        + b"0\r\n\r\n"
    )
    stream = _ChunkedJsonStream()
    got = []
    for i in range(len(wire)):  # one byte at a time: the worst split there is
        stream.feed(wire[i : i + 1])
        while (message := stream.next_message()) is not None:
            got.append(message)
    assert got == messages
    assert stream.ended and stream.status == 200


def test_a_plain_error_response_is_one_message() -> None:
    body = b'{"error":"etcdserver: user name is empty","code":3}'
    stream = _ChunkedJsonStream()
    stream.feed(b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    assert stream.next_message() == json.loads(body)
    assert stream.ended and stream.status == 400


def test_prefix_range_end() -> None:
    assert prefix_range_end(b"names/") == b"names0"
    assert prefix_range_end(b"a\xff") == b"b"
    assert prefix_range_end(b"\xff\xff") == b"\0"  # no end: to the end of the keyspace


def test_compares_refuse_operands_of_the_wrong_kind() -> None:
    assert Compare("k", "create_revision", "==", 0).to_json() == {
        "key": "aw==", "target": "CREATE", "result": "EQUAL", "create_revision": 0,
    }  # fmt: skip
    with pytest.raises(ValueError):
        Compare("k", "mod_revision", "==", b"3").to_json()
    with pytest.raises(ValueError):
        Compare("k", "value", "==", 3).to_json()
    assert issubclass(EtcdUnavailable, EtcdError)
