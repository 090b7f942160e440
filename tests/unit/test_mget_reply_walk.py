"""The MGET reply walk (rtvol.redis_mget): any mix of values and nils, cut anywhere by the
network, completes exactly at the reply's last byte and finds every value."""

from __future__ import annotations

import asyncio

import hiredis
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis import exceptions as rx

from rtvol.redis_mget import ArrayWalk, MgetProtocol
from rtvol.resp import resp_command

SIZE = 24  # the "expected" value size of these tests


def _encode(values: list[bytes | None]) -> bytes:
    return b"*%d\r\n" % len(values) + b"".join(b"$-1\r\n" if v is None else b"$%d\r\n%s\r\n" % (len(v), v)
                                               for v in values)


async def _feed(wire: bytes, cuts: list[int], count: int) -> tuple[ArrayWalk, list[bool]]:
    """Deliver ``wire`` in pieces cut at ``cuts`` the way the event loop does; the done flag
    after each piece."""
    proto = MgetProtocol()
    walk = ArrayWalk(proto, count, b"$%d\r\n" % SIZE)
    done = proto.begin(walk.step, 0)
    flags = []
    for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        while a < b:
            into = proto.get_buffer(b - a)
            k = min(len(into), b - a)
            into[:k] = wire[a:a + k]
            proto.buffer_updated(k)
            a += k
        flags.append(done.done())
    return walk, flags


value = st.one_of(st.none(), st.binary(min_size=SIZE, max_size=SIZE),
                  st.binary(max_size=3 * SIZE),
                  st.just(b"ab\r\n$5\r\n" * 3))  # CRLF and RESP-looking bytes inside a value


@settings(max_examples=300, deadline=None)
@given(values=st.lists(value, max_size=40), data=st.data())
def test_any_reply_cut_anywhere_completes_at_its_end_with_every_value(values: list[bytes | None],
                                                                       data: st.DataObject) -> None:
    wire = _encode(values)
    oracle = hiredis.Reader()
    oracle.feed(wire)
    assert oracle.gets() == values  # the wire is what Redis would send
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, len(wire) - 1)), max_size=12))))
    cuts = [c for c in cuts if c < len(wire)]
    walk, flags = asyncio.run(_feed(wire, cuts, len(values)))
    assert flags[-1] and not any(flags[:-1])  # complete at the last byte, never before
    reply = walk.reply()
    assert [None if v is None else bytes(v) for v in reply.values()] == values
    rec = reply.records(np.dtype(f"V{SIZE}"))
    if values and all(v is not None and len(v) == SIZE for v in values):
        assert rec is not None and [r.tobytes() for r in rec] == values
    else:
        assert rec is None


def test_all_present_replies_take_the_vectorised_check_and_agree_with_the_walk() -> None:
    values = [bytes([i]) * SIZE for i in range(100)]
    wire = _encode(values)
    at_boundaries = [len(b"*100\r\n") + k * len(_encode(values[:1])[4:]) for k in (10, 50)]
    whole, flags = asyncio.run(_feed(wire, [], 100))
    pieces, flags2 = asyncio.run(_feed(wire, at_boundaries, 100))  # pieces end in CRLF: walked
    assert whole.uniform and not pieces.uniform and flags == [True] and flags2 == [False, False, True]
    for walk in (whole, pieces):
        rec = walk.reply().records(np.dtype(f"V{SIZE}"))
        assert rec is not None and [r.tobytes() for r in rec] == values


def test_an_error_reply_is_a_response_error() -> None:
    walk, flags = asyncio.run(_feed(b"-NOPERM this user has no permissions to run 'mget'\r\n", [7], 3))
    assert flags == [False, True] and walk.error is not None and walk.error.startswith("NOPERM")


def test_garbage_fails_the_connection_with_a_connection_error() -> None:
    async def run() -> None:
        proto = MgetProtocol()
        walk = ArrayWalk(proto, 1, b"$%d\r\n" % SIZE)
        done = proto.begin(walk.step, 0)
        into = proto.get_buffer(16)
        into[:7] = b"+OK\r\n\r\n"
        proto.buffer_updated(7)
        with pytest.raises(rx.ConnectionError, match="expected an array"):
            await done
        assert proto.lost is not None

    asyncio.run(run())


def test_commands_are_encoded_as_resp_arrays() -> None:
    assert resp_command(b"SELECT", b"3") == b"*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n"


def test_the_timeout_bounds_silence_not_the_whole_reply() -> None:
    """As redis-py's socket_timeout: a large reply that keeps coming may take longer than the
    timeout in all; a server that stops sending fails the call (and the connection)."""
    import socket

    values = [bytes([i]) * SIZE for i in range(40)]
    wire = _encode(values)

    async def run() -> None:
        ours, theirs = socket.socketpair()
        theirs.setblocking(False)
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(MgetProtocol, sock=ours)
        walk = ArrayWalk(proto, len(values), b"$%d\r\n" % SIZE)
        call = asyncio.ensure_future(proto.request(b"MGET ...", walk.step, 0, idle_timeout_s=0.15))
        started = loop.time()
        for piece in np.array_split(np.frombuffer(wire, np.uint8), 20):  # 20 pieces, 20 ms apart
            await asyncio.sleep(0.02)
            theirs.send(piece.tobytes())
        await asyncio.wait_for(call, 5)
        assert loop.time() - started > 0.15 and walk.reply().records(np.dtype(f"V{SIZE}")) is not None

        walk = ArrayWalk(proto, len(values), b"$%d\r\n" % SIZE)
        call = asyncio.ensure_future(proto.request(b"MGET ...", walk.step, 0, idle_timeout_s=0.15))
        theirs.send(wire[:100])  # then silence
        with pytest.raises(rx.TimeoutError, match=r"no reply bytes for 0\.15 s"):
            await asyncio.wait_for(call, 5)
        assert proto.lost is not None  # a half-read connection is never reused
        theirs.close()

    asyncio.run(run())
