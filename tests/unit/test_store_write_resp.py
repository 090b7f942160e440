"""The raw store write's RESP (rtvol.redis_write): the reply check is complete only once every
reply has arrived, however the bytes are cut, and gives the first error as redis-py's type;
the frames are the bytes a join of the pieces would give."""

from __future__ import annotations

import numpy as np
import pytest
from redis import exceptions as rx

from rtvol.redis_mget import MgetProtocol
from rtvol.redis_write import Frames, ReplyLines, reply_error

OK_REPLY = b":2\r\n:1\r\n+OK\r\n+OK\r\n$15\r\n1764655200000-0\r\n"  # HSET, EXPIRE, 2 SET, XADD


def _fed(reply: bytes, replies: int) -> tuple[ReplyLines, list[bool]]:
    """Feed ``reply`` one byte at a time; whether it was complete after each byte."""
    proto = MgetProtocol()
    lines, seen = ReplyLines(proto, replies), []
    for i in range(len(reply)):
        proto.buf[i:i + 1] = reply[i:i + 1]
        proto.n = i + 1
        seen.append(lines.complete())
    return lines, seen


@pytest.mark.parametrize("reply", [
    OK_REPLY,
    b":2\r\n:1\r\n+OK\r\n+OK\r\n$-1\r\n",
    b":2\r\n:1\r\n+OK\r\n+OK\r\n-ERR stream\r\n",
    b"-NOPERM no\r\n-NOPERM no\r\n-NOPERM no\r\n-NOPERM no\r\n-NOPERM no\r\n",
], ids=["ok", "nil", "xadd-error", "all-errors"])
def test_complete_only_at_the_last_byte(reply: bytes) -> None:
    _, seen = _fed(reply, 5)
    assert seen == [False] * (len(reply) - 1) + [True]


def test_no_error_in_a_good_reply() -> None:
    lines, _ = _fed(OK_REPLY, 5)
    assert lines.first_error() is None


def test_the_first_error_with_its_command_number_and_redis_py_type() -> None:
    lines, _ = _fed(b":2\r\n-NOPERM User x has no permissions\r\n+OK\r\n-ERR later\r\n$1\r\n1\r\n", 5)
    err = lines.first_error()
    assert isinstance(err, rx.NoPermissionError) and str(err).startswith("Command # 2 of pipeline")
    lines, _ = _fed(b"-WRONGTYPE Operation against a key\r\n:1\r\n", 2)
    err = lines.first_error()
    assert type(err) is rx.ResponseError and "Command # 1" in str(err) and "WRONGTYPE" in str(err)


def test_more_lines_than_replies_is_an_error() -> None:
    proto = MgetProtocol()
    proto.buf[:15] = b"+OK\r\n+OK\r\n+OK\r\n"
    proto.n = 15
    with pytest.raises(ValueError, match="3 reply lines for 1 commands"):
        ReplyLines(proto, 1).complete()


def test_frames_lay_out_rows_of_mixed_head_lengths_as_a_join_would() -> None:
    frames = Frames()
    frames.buf = np.empty(8, np.uint8)  # too small: it grows, and the views it returns stay valid
    frames.raw(b"*3\r\n")
    heads = [b"a", b"bc", b"de", b"f"]
    for rows, bodies in frames.rows(heads, np.dtype("<i4"), b"\r\n"):
        bodies[:] = np.arange(4)[rows] + 10
    assert bytes(frames.view()) == b"".join([b"*3\r\n"] + [
        h + (i + 10).to_bytes(4, "little") + b"\r\n" for i, h in enumerate(heads)])
    frames.clear()
    frames.raw(b"x")
    assert bytes(frames.view()) == b"x"


@pytest.mark.parametrize(("line", "kind", "message"), [
    ("NOPERM User x has no permissions", rx.NoPermissionError, "User x has no permissions"),
    ("OOM command not allowed", rx.OutOfMemoryError, "command not allowed"),
    ("READONLY You can't write against a read only replica.", rx.ReadOnlyError,
     "You can't write against a read only replica."),
    ("LOADING Redis is loading the dataset in memory", rx.BusyLoadingError,
     "Redis is loading the dataset in memory"),
    ("NOAUTH Authentication required.", rx.AuthenticationError, "Authentication required."),
    ("ERR max number of clients reached", rx.ConnectionError, "max number of clients reached"),
    ("ERR wrong number of arguments for 'hset' command", rx.ResponseError,
     "wrong number of arguments for 'hset' command"),
    ("WRONGTYPE Operation against a key", rx.ResponseError, "WRONGTYPE Operation against a key"),
])
def test_an_error_reply_is_the_exception_redis_py_raises_for_it(line: str, kind: type, message: str) -> None:
    err = reply_error(line)
    assert type(err) is kind and err.args == (message,)
