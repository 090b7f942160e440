"""The Watch stream's shape in one process: what the feature service's ``WindowFeed.stream``
is, and what a gateway in the same process (`rtvol serve embedded`) follows instead of the
Watch RPC. One definition, so the two services (which never import each other) agree."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from rtvol.proto.v1 import features_pb2 as pb

# (acknowledgements in, windows as their newest rows, (shard index, shard count)) -> batches out
WatchStream = Callable[[AsyncIterator[pb.WatchAck], bool, tuple[int, int]], AsyncIterator[pb.WindowBatch]]
