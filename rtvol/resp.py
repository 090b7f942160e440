"""RESP (the Redis protocol) encoding shared by the store's own reader and writer and the
store's framing of its writes (rtvol.redis_mget, rtvol.redis_write, rtvol.featurestore).
No redis import: the store's module stays importable without it."""

from __future__ import annotations

CRLF = b"\r\n"


def bulk(arg: bytes) -> bytes:
    """``arg`` as a RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(arg), arg)


def resp_command(*args: bytes) -> bytes:
    """A command as a RESP array of bulk strings."""
    return b"*%d\r\n" % len(args) + b"".join(map(bulk, args))
