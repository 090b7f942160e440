"""One grpc.health.v1 Check on a new channel (so a new TLS handshake each time)."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def health(target: str, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    """OK, or the status the call failed with (UNAVAILABLE: the handshake was refused)."""
    channel = (grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target))
    with channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.RpcError as e:
            return e.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK
