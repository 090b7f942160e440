"""The framed Ingest stream (the feature service's ``--stream-port``): its wire format and clients.

A frame is a 4-byte little-endian length, then that many bytes: one kind byte and the body.
A gRPC message costs Python grpc 55-100 µs of CPU at each end; a frame costs a few µs, so one
connection carries tens of thousands of single-update messages a second (docs/BENCHMARKS.md,
task FRAME). The client speaks first:

  HELLO   MAGIC, the protocol version (uint16 LE), the API key (UTF-8; empty without keys)
  UPDATES a serialized ``IngestRequest`` (any number of them)
  END     empty: asks for the summary of the UPDATES since the HELLO or the last END

and the service answers:

  READY   empty: the HELLO was accepted
  SUMMARY a serialized ``IngestSummary``, once the store and every watching gateway hold the
          windows the UPDATES changed (read-your-writes, as gRPC Ingest's answer)
  ERROR   UTF-8 text naming the field or the reason; the service then closes the connection
          (a frame it cannot read leaves the stream impossible to resynchronise)
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import Iterable

from rtvol.proto.v1 import features_pb2 as pb

HEADER = struct.Struct("<I")
VERSION_FIELD = struct.Struct("<H")
MAGIC = b"RTVOLING"
VERSION = 1
HELLO, READY, UPDATES, END, SUMMARY, ERROR = b"H", b"R", b"U", b"E", b"S", b"X"
MAX_FRAME_BYTES = 16 << 20  # the service's default bound (a setting there)


class FrameError(ValueError):
    """A frame the reader cannot accept; ``reason`` is the counter label."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class StreamRefused(RuntimeError):
    """The service answered an ERROR frame (its text is the message)."""


def frame(kind: bytes, body: bytes = b"") -> bytes:
    return HEADER.pack(len(body) + 1) + kind + body


def hello(api_key: str = "", version: int = VERSION, magic: bytes = MAGIC) -> bytes:
    return frame(HELLO, magic + VERSION_FIELD.pack(version) + api_key.encode())


def updates(request: pb.IngestRequest | bytes) -> bytes:
    return frame(UPDATES, request if isinstance(request, bytes) else request.SerializeToString())


def parse_hello(body: bytes) -> str:
    """The API key of a HELLO body; FrameError naming the field that is wrong."""
    if body[:len(MAGIC)] != MAGIC:
        raise FrameError("hello.magic: not an rtvol ingest stream", "hello_magic")
    rest = body[len(MAGIC):]
    if len(rest) < VERSION_FIELD.size:
        raise FrameError("hello.version: missing", "hello_version")
    (version,) = VERSION_FIELD.unpack_from(rest)
    if version != VERSION:
        raise FrameError(f"hello.version: {version} is not supported (this service speaks {VERSION})",
                         "hello_version")
    try:
        return rest[VERSION_FIELD.size:].decode()
    except UnicodeDecodeError as e:
        raise FrameError(f"hello.api_key: not UTF-8 ({e.reason})", "hello_key") from None


class FrameReader:
    """Complete frames out of the bytes read so far; a partial frame waits for the rest."""

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.buffer = bytearray()
        self.pos = 0

    def feed(self, data: bytes) -> None:
        if self.pos:  # drop what was read: the buffer holds at most one partial frame and a read
            del self.buffer[:self.pos]
            self.pos = 0
        self.buffer += data

    def next(self) -> tuple[bytes, bytes] | None:
        """(kind, body) of the next complete frame, or None; FrameError for a length over the
        bound or an empty frame (nothing after it can be trusted)."""
        buf, pos = self.buffer, self.pos
        if len(buf) - pos < HEADER.size:
            return None
        (n,) = HEADER.unpack_from(buf, pos)
        if n > self.max_frame_bytes:
            raise FrameError(f"frame.length: {n} bytes is over the limit of {self.max_frame_bytes}",
                             "oversized_frame")
        if n == 0:
            raise FrameError("frame.length: 0 (a frame has at least its kind byte)", "empty_frame")
        end = pos + HEADER.size + n
        if len(buf) < end:
            return None
        self.pos = end
        return bytes(buf[pos + 4:pos + 5]), bytes(buf[pos + 5:end])

    def pending(self) -> int:
        """Bytes read and not yet taken as frames."""
        return len(self.buffer) - self.pos


def _summary_or_error(kind: bytes, body: bytes, expected: bytes) -> bytes:
    if kind == ERROR:
        raise StreamRefused(body.decode(errors="replace"))
    if kind != expected:
        raise StreamRefused(f"unexpected frame kind {kind!r} (expected {expected!r})")
    return body


class BlockingClient:
    """A plain socket: each message is its own ``sendall``, as a tick feed's would be."""

    def __init__(self, host: str, port: int, api_key: str = "", ssl_context: ssl.SSLContext | None = None,
                 timeout_s: float = 30.0) -> None:
        raw = socket.create_connection((host, port), timeout=timeout_s)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = ssl_context.wrap_socket(raw, server_hostname=host) if ssl_context else raw
        self.reader = FrameReader()
        try:
            self.sock.sendall(hello(api_key))
            self._expect(READY)
        except BaseException:
            self.sock.close()
            raise

    def _expect(self, kind: bytes) -> bytes:
        while (got := self.reader.next()) is None:
            data = self.sock.recv(65536)
            if not data:
                raise StreamRefused("the service closed the connection")
            self.reader.feed(data)
        return _summary_or_error(*got, kind)

    def send(self, request: pb.IngestRequest | bytes) -> None:
        self.sock.sendall(updates(request))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def end(self) -> pb.IngestSummary:
        """The summary of what was sent since the last end (read-your-writes once it is here)."""
        self.sock.sendall(frame(END))
        return pb.IngestSummary.FromString(self._expect(SUMMARY))

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """asyncio streams: writes are buffered until ``drain`` (the feed pump's token bucket paces)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stream, self.writer, self.frames = reader, writer, FrameReader()

    @classmethod
    async def connect(cls, host: str, port: int, api_key: str = "",
                      ssl_context: ssl.SSLContext | None = None) -> AsyncClient:
        reader, writer = await asyncio.open_connection(host, port, ssl=ssl_context,
                                                       server_hostname=host if ssl_context else None)
        client = cls(reader, writer)
        try:
            writer.write(hello(api_key))
            await client._expect(READY)
        except BaseException:
            await client.close()
            raise
        return client

    async def _expect(self, kind: bytes) -> bytes:
        while (got := self.frames.next()) is None:
            data = await self.stream.read(65536)
            if not data:
                raise StreamRefused("the service closed the connection")
            self.frames.feed(data)
        return _summary_or_error(*got, kind)

    async def send(self, requests: Iterable[pb.IngestRequest | bytes]) -> None:
        self.writer.writelines([updates(r) for r in requests])
        try:
            await self.writer.drain()
        except ConnectionError:  # the service closed it: say why when it did with an ERROR frame
            await self._expect(READY)  # raises the ERROR frame's text, or that the service closed
            raise

    async def end(self) -> pb.IngestSummary:
        self.writer.write(frame(END))
        return pb.IngestSummary.FromString(await self._expect(SUMMARY))

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):  # the service closed first
            await self.writer.wait_closed()
