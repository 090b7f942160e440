"""TLS for every listener and every call between services, from PEM files (Secrets in the chart).

Servers: ``--tls-cert``/``--tls-key`` make every gRPC and HTTP listener TLS-only (plaintext is
refused); ``--tls-client-ca`` also makes gRPC listeners demand a client certificate signed by
that CA (mTLS between the gateway, feature service and sidecar). Clients: ``--tls-ca`` makes
calls to other services TLS, verified against that CA, presenting ``--tls-cert`` as the
client certificate when one is set. A Unix socket stays plaintext: it never leaves the host
and its file permissions guard it.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from rtvol.config import SecuritySettings


def _read(path: str) -> bytes | None:
    return Path(path).read_bytes() if path else None


@dataclass(frozen=True)
class ServerTLS:
    cert: str
    key: str
    client_ca: str = ""

    def grpc(self) -> grpc.ServerCredentials:
        key, cert = _read(self.key), _read(self.cert)
        assert key is not None and cert is not None
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=_read(self.client_ca),
                                           require_client_auth=bool(self.client_ca))

    def uvicorn(self) -> dict[str, Any]:
        """uvicorn.Config arguments: engines call HTTP with API keys, so no client certificate."""
        return {"ssl_certfile": self.cert, "ssl_keyfile": self.key}

    def prometheus(self) -> dict[str, Any]:
        """prometheus_client.start_http_server arguments."""
        return {"certfile": self.cert, "keyfile": self.key}


@dataclass(frozen=True)
class ClientTLS:
    ca: str
    cert: str = ""
    key: str = ""

    def grpc(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(_read(self.ca), _read(self.key), _read(self.cert))

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca)
        if self.cert:
            ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def redis(self) -> dict[str, Any]:
        """redis-py arguments for a rediss:// URL."""
        return {"ssl_ca_certs": self.ca, "ssl_certfile": self.cert or None, "ssl_keyfile": self.key or None}


def server(s: SecuritySettings) -> ServerTLS | None:
    if bool(s.tls_cert) != bool(s.tls_key):
        raise SystemExit("--tls-cert and --tls-key go together")
    if s.tls_client_ca and not s.tls_cert:
        raise SystemExit("--tls-client-ca needs --tls-cert and --tls-key")
    return ServerTLS(s.tls_cert, s.tls_key, s.tls_client_ca) if s.tls_cert else None


def client(s: SecuritySettings) -> ClientTLS | None:
    return ClientTLS(s.tls_ca, s.tls_cert, s.tls_key) if s.tls_ca else None


def channel(target: str, tls: ClientTLS | None, options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
    """An asyncio channel to ``target``: TLS when ``tls`` is given, except to a Unix socket."""
    if tls is None or target.startswith("unix:"):
        return grpc.aio.insecure_channel(target, options=list(options))
    return grpc.aio.secure_channel(target, tls.grpc(), options=list(options))


def sync_channel(target: str, tls: ClientTLS | None, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
    if tls is None or target.startswith("unix:"):
        return grpc.insecure_channel(target, options=list(options))
    return grpc.secure_channel(target, tls.grpc(), options=list(options))


def metrics(s: SecuritySettings) -> dict[str, Any] | None:
    """rtvol.telemetry.start_metrics's ``tls``: the Prometheus port is HTTPS when the service is TLS."""
    found = server(s)
    return found.prometheus() if found else None


def redis(url: str, s: SecuritySettings) -> dict[str, Any]:
    """redis-py client arguments for ``url`` from the settings: the password file, and for
    rediss:// the CA (and client certificate)."""
    found = client(s)
    options = found.redis() if found and url.startswith("rediss://") else {}
    if s.redis_password_file:
        options["password"] = Path(s.redis_password_file).read_text().strip()
    return options
