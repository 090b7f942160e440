"""A pipeline of writes sent as one pre-encoded RESP buffer: the feature store's write path.

Why not redis-py here: its pipeline packs every command and parses every reply in Python,
~20 µs of CPU a window and ~150 µs a call for the feature service's flush (docs/BENCHMARKS.md,
"The store write as one RESP buffer"; here ~3 and ~70). The caller frames the whole pipeline
into ``Frames`` (numpy fills the values in place); ``PipelineWriter`` sends it on a connection
of rtvol.redis_mget's pool and checks the replies in one pass, counting their lines instead
of walking them one by one. An error reply becomes the exception type of redis.exceptions
that redis-py raises for it (``reply_error``), so callers handle both paths alike.

The replies it reads are status or integer lines, or errors, with at most the LAST one a bulk
string without a CRLF inside (XADD's stream id): exactly what SET, HSET, EXPIRE and XADD
answer. Errors are redis-py's exception types (NOPERM: NoPermissionError, ...), the first one
raised after every reply has arrived, as redis-py's non-transactional pipeline does.
"""

from __future__ import annotations

import itertools

import numpy as np
from redis import exceptions as rx

from rtvol.redis_mget import Connections, MgetProtocol
from rtvol.resp import CRLF

# the error codes a pipeline of SET, HSET, EXPIRE and XADD can be answered with outside a
# cluster (which keeps redis-py), by the redis.exceptions type redis-py raises for each (its
# own table is private); an "ERR" reply is a ResponseError unless Redis refused the connection
ERROR_TYPES: dict[str, type[rx.RedisError]] = {
    "NOPERM": rx.NoPermissionError, "NOAUTH": rx.AuthenticationError, "WRONGPASS": rx.AuthenticationError,
    "OOM": rx.OutOfMemoryError, "READONLY": rx.ReadOnlyError, "LOADING": rx.BusyLoadingError,
    "MASTERDOWN": rx.MasterDownError}
ERR_TYPES: dict[str, type[rx.RedisError]] = {"max number of clients reached": rx.ConnectionError}


def reply_error(line: str) -> rx.RedisError:
    """The exception redis-py raises for an error reply (its line without the "-"): a known
    code's type with the message after the code, else a ResponseError with the whole line."""
    code, _, message = line.partition(" ")
    kind = ERR_TYPES.get(message, rx.ResponseError) if code == "ERR" else ERROR_TYPES.get(code)
    return kind(message) if kind is not None else rx.ResponseError(line)


class Frames:
    """A pipeline's bytes, assembled by numpy in one buffer reused from call to call.

    Why reused: a fresh buffer of a few hundred KB (100 windows and their checkpoints are
    ~500 KB) comes from mmap, and faulting its pages in cost more than everything else the
    write does (~5 µs a window on our 2-core box). The buffer is only written again once the
    reply to what was sent from it has arrived (Redis has read all of it) or its connection
    was aborted (nothing queued on it is sent); callers frame one pipeline at a time.
    """

    def __init__(self) -> None:
        self.buf = np.empty(1 << 20, np.uint8)
        self.n = 0
        self._layouts: dict[tuple[int, np.dtype, bytes], np.dtype] = {}  # a row's layout: ~5 µs to build

    def clear(self) -> None:
        self.n = 0

    def _reserve(self, size: int) -> None:
        """Room for ``size`` more bytes; a bigger buffer leaves views into the old one stale."""
        if self.n + size > len(self.buf):
            bigger = np.empty(max(2 * len(self.buf), self.n + size), np.uint8)
            bigger[:self.n] = self.buf[:self.n]
            self.buf = bigger

    def _take(self, size: int) -> np.ndarray:
        self._reserve(size)
        out = self.buf[self.n:self.n + size]
        self.n += size
        return out

    def raw(self, data: bytes) -> None:
        self._take(len(data))[:] = np.frombuffer(data, np.uint8)

    def rows(self, heads: list[bytes], body: np.dtype, tail: bytes) -> list[tuple[slice, np.ndarray]]:
        """One row per head: the head, a ``body`` to fill, ``tail``. Heads of one length share
        a layout and are written together (a run of stock ids with as many digits each is one
        numpy assignment); returns, per run, the rows it covers and their bodies (a strided
        view into the buffer) for the caller to fill."""
        lengths = list(map(len, heads))
        self._reserve(sum(lengths) + len(heads) * (body.itemsize + len(tail)))  # views stay valid
        cuts = [0, len(heads)]
        if min(lengths) != max(lengths):
            cuts[1:1] = (np.flatnonzero(np.diff(lengths)) + 1).tolist()
        return [(slice(a, b), self._run(heads[a:b], body, tail)) for a, b in itertools.pairwise(cuts)]

    def _run(self, heads: list[bytes], body: np.dtype, tail: bytes) -> np.ndarray:
        h = len(heads[0])
        row = self._layouts.get((h, body, tail))
        if row is None:
            k = len(tail)
            row = self._layouts[h, body, tail] = np.dtype({
                "names": ["head", "body", "tail"], "formats": [f"V{h}", body, f"V{k}"],
                "offsets": [0, h, h + body.itemsize], "itemsize": h + body.itemsize + k})
        block = self._take(len(heads) * row.itemsize).view(row)
        block["head"] = np.frombuffer(b"".join(heads), f"V{h}")
        block["tail"] = np.void(tail)
        return block["body"]

    def view(self) -> memoryview:
        return self.buf.data[:self.n]


class ReplyLines:
    """Completion check of ``replies`` pipelined replies (see the module docstring)."""

    def __init__(self, proto: MgetProtocol, replies: int) -> None:
        self.p, self.replies = proto, replies

    def complete(self) -> bool:
        buf, n = self.p.buf, self.p.n
        if n < 2 or buf[n - 2:n] != CRLF:
            return False
        lines = buf.count(CRLF, 0, n)
        if lines > self.replies + 1:
            raise ValueError(f"{lines} reply lines for {self.replies} commands")
        if lines == self.replies + 1:  # the last reply is a bulk string: its head and its data
            return True
        if lines < self.replies:
            return False
        last = buf.rfind(CRLF, 0, n - 2) + 2 if lines > 1 else 0
        return buf[last] != ord("$") or buf.startswith(b"$-1\r\n", last)  # a head waits for its data

    def first_error(self) -> Exception | None:
        buf, n = self.p.buf, self.p.n
        at = 0 if buf[0] == ord("-") else buf.find(b"\r\n-", 0, n) + 2  # no data line starts with "-"
        if at == 1:
            return None
        command = buf.count(CRLF, 0, at) + 1  # every reply before it is one line
        message = bytes(buf[at + 1:buf.find(CRLF, at, n)]).decode(errors="replace")
        err = reply_error(message)
        err.args = (f"Command # {command} of pipeline caused error: {err.args[0]}", *err.args[1:])
        return err


class PipelineWriter(Connections):
    """Sends pre-encoded pipelines; one per connection at a time."""

    async def execute(self, payload: bytes | memoryview, replies: int) -> None:
        """Send ``payload`` (``replies`` commands) and wait for every reply; raise the first error."""

        async def request(proto: MgetProtocol) -> Exception | None:
            lines = ReplyLines(proto, replies)
            await proto.request(payload, lines.complete, 64 + 8 * replies, self.endpoint.timeout_s)
            return lines.first_error()  # the connection stays usable: every reply was read

        if replies and (err := await self.use(request)) is not None:
            raise err
