"""A pipeline of writes sent as one pre-encoded RESP buffer: the feature store's write path.

Why not redis-py here: its pipeline packs every command and parses every reply in Python,
~30 µs of CPU a window and ~180 µs a call for the feature service's flush (docs/BENCHMARKS.md,
"The store write as one RESP buffer"). The caller builds the whole buffer (numpy for the
values); this sends it on a connection of rtvol.redis_mget's pool and checks the replies in
one pass: it counts their lines instead of walking them one by one.

The replies it reads are status or integer lines, or errors, with at most the LAST one a bulk
string without a CRLF inside (XADD's stream id): exactly what SET, HSET, EXPIRE and XADD
answer. Errors are redis-py's exception types (NOPERM: NoPermissionError, ...), the first one
raised after every reply has arrived, as redis-py's non-transactional pipeline does.
"""

from __future__ import annotations

from redis._parsers.base import BaseParser

from rtvol.redis_mget import CRLF, Connections, MgetProtocol


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
        err = BaseParser.parse_error(message)
        err.args = (f"Command # {command} of pipeline caused error: {err.args[0]}", *err.args[1:])
        return err


class PipelineWriter(Connections):
    """Sends pre-encoded pipelines; one per connection at a time."""

    async def execute(self, payload: bytes, replies: int) -> None:
        """Send ``payload`` (``replies`` commands) and wait for every reply; raise the first error."""

        async def request(proto: MgetProtocol) -> Exception | None:
            lines = ReplyLines(proto, replies)
            await proto.request(payload, lines.complete, 64 + 8 * replies, self.endpoint.timeout_s)
            return lines.first_error()  # the connection stays usable: every reply was read

        if replies and (err := await self.use(request)) is not None:
            raise err
