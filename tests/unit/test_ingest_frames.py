"""The framed Ingest stream's format (rtvol/ingest_frames.py): frames out of arbitrary reads, the
length bound, the HELLO's fields."""

from __future__ import annotations

import re

import pytest

from rtvol.ingest_frames import (
    END,
    HEADER,
    UPDATES,
    FrameError,
    FrameReader,
    frame,
    hello,
    parse_hello,
    updates,
)
from rtvol.proto.v1 import features_pb2 as pb


def test_frames_come_out_whole_whatever_the_reads_cut() -> None:
    messages = [pb.IngestRequest(watermark_us=i) for i in range(1, 50)]
    wire = hello("k") + b"".join(updates(m) for m in messages) + frame(END)
    for step in (1, 3, 7, 64, len(wire)):
        reader, got = FrameReader(), []
        for at in range(0, len(wire), step):
            reader.feed(wire[at:at + step])
            while (f := reader.next()) is not None:
                got.append(f)
        assert reader.pending() == 0
        assert parse_hello(got[0][1]) == "k"
        assert [pb.IngestRequest.FromString(body) for kind, body in got[1:-1] if kind == UPDATES] == messages
        assert got[-1] == (END, b"")


def test_a_length_over_the_bound_is_refused_before_its_body_arrives() -> None:
    reader = FrameReader(max_frame_bytes=100)
    reader.feed(frame(UPDATES, b"x" * 99) + HEADER.pack(101))
    assert reader.next() == (UPDATES, b"x" * 99)
    with pytest.raises(FrameError, match=re.escape("frame.length: 101 bytes is over the limit of 100")) as e:
        reader.next()
    assert e.value.reason == "oversized_frame"


def test_an_empty_frame_is_refused() -> None:
    reader = FrameReader()
    reader.feed(HEADER.pack(0))
    with pytest.raises(FrameError, match=re.escape("frame.length: 0")):
        reader.next()


@pytest.mark.parametrize(("body", "field"), [
    (hello(version=2)[5:], "hello.version: 2 is not supported"),
    (hello(magic=b"GET / HT")[5:], "hello.magic"),
    (hello()[5:13], "hello.version: missing"),
    (hello()[5:] + b"\xff", "hello.api_key: not UTF-8"),
], ids=["version", "magic", "short", "key"])
def test_a_bad_hello_names_its_field(body: bytes, field: str) -> None:
    with pytest.raises(FrameError, match=re.escape(field)):
        parse_hello(body)
