"""core.frames: payloads survive any chunking of the stream; a bad length is refused."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from thespian_cluster.core.frames import HEADER, FrameError, FrameReader, frame


@given(
    payloads=st.lists(st.binary(max_size=300), max_size=20),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
)
def test_payloads_come_back_whole_and_in_order_however_the_stream_is_cut(
    payloads: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(frame(p) for p in payloads)
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    reader = FrameReader()
    got: list[bytes] = []
    for start, end in itertools.pairwise(points):
        got += reader.feed(stream[start:end])
    assert got == payloads
    assert reader.buffered == 0


def test_a_partial_frame_waits_for_the_rest() -> None:
    reader = FrameReader()
    data = frame(b"hello")
    assert reader.feed(data[:-1]) == []
    assert reader.buffered == len(data) - 1
    assert reader.feed(data[-1:]) == [b"hello"]


def test_a_length_above_the_limit_is_refused_before_its_bytes_arrive() -> None:
    reader = FrameReader(max_frame=10)
    assert reader.feed(frame(b"0123456789")) == [b"0123456789"]
    with pytest.raises(FrameError, match="11 bytes"):
        reader.feed(frame(b"x" * 11)[:HEADER])
