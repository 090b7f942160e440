"""TLS for every listener and every call between services, from PEM files (Secrets in the chart).

Servers: ``--tls-cert``/``--tls-key`` make every gRPC and HTTP listener TLS-only (plaintext is
refused); ``--tls-client-ca`` also makes gRPC listeners demand a client certificate signed by
that CA (mTLS between the gateway, feature service and sidecar). Clients: ``--tls-ca`` makes
calls to other services TLS, verified against that CA, presenting ``--tls-cert`` as the
client certificate when one is set. A Unix socket stays plaintext: it never leaves the host
and its file permissions guard it.

Rotation: servers read the certificate, key and client CA again when one of the files changes
(cert-manager renews a Secret volume's files in place), at the next handshake: gRPC through
grpcio's dynamic server credentials, HTTPS (uvicorn, /metrics) by swapping the handshake's
SSLContext. Clients read theirs once, at start (grpcio has no dynamic channel credentials).
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc

from rtvol.config import SecuritySettings

log = logging.getLogger(__name__)
T = TypeVar("T")


def _read(path: str) -> bytes | None:
    return Path(path).read_bytes() if path else None


@dataclass(frozen=True)
class ServerTLS:
    cert: str
    key: str
    client_ca: str = ""

    def files(self) -> FileStamps:
        return FileStamps([self.cert, self.key, self.client_ca])

    def _grpc_config(self) -> Any:
        key, cert = _read(self.key), _read(self.cert)
        assert key is not None and cert is not None
        return grpc.ssl_server_certificate_configuration([(key, cert)], _read(self.client_ca))

    def grpc(self) -> grpc.ServerCredentials:
        """Credentials that read the files again at the first handshake after they change."""
        files = self.files()

        def fetch() -> Any:  # grpcio calls this before every handshake; None: keep the current one
            return files.reload(self._grpc_config, "gRPC certificate", (OSError, RuntimeError))

        return grpc.dynamic_ssl_server_credentials(self._grpc_config(), fetch,
                                                   require_client_authentication=bool(self.client_ca))

    def uvicorn(self) -> dict[str, Any]:
        """uvicorn.Config arguments: engines call HTTP with API keys, so no client certificate;
        the context follows the files (reloading)."""
        def factory(_config: Any, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
            files = self.files()  # stamped before the read: a swap during the read counts as a change
            return reloading(consistent(default), default, files)

        return {"ssl_certfile": self.cert, "ssl_keyfile": self.key, "ssl_context_factory": factory}

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def _listener_context(self) -> ssl.SSLContext:
        ctx = self.ssl_context()
        if self.client_ca:  # mTLS, as the gRPC listeners
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(self.client_ca)
        return ctx

    def listener(self) -> ssl.SSLContext:
        """A context for a plain TCP listener (the feature service's framed Ingest stream):
        a client certificate demanded when a client CA is set; follows the files (reloading)."""
        files = self.files()  # stamped before the read: a swap during the read counts as a change
        return reloading(consistent(self._listener_context), self._listener_context, files)

    def prometheus(self) -> dict[str, Any]:
        """prometheus_client.start_http_server arguments."""
        return {"certfile": self.cert, "keyfile": self.key}

    def follow(self, ctx: ssl.SSLContext) -> None:
        """Make a context built from these files (prometheus_client's) follow their changes."""
        files = self.files()
        files.forget()  # ctx was read before this stamp: a swap in between shows at the first handshake
        reloading(ctx, self.ssl_context, files)


class FileStamps:
    """Notices when files change: mtime, size and inode, following a Secret volume's symlinks
    (its ..data link is swapped on update, so every file gets a new inode)."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = [p for p in paths if p]
        self.stamp = self._stat()

    def _stat(self) -> list[tuple[int, int, int]]:
        return [(st.st_mtime_ns, st.st_size, st.st_ino) for st in map(os.stat, self.paths)]

    def forget(self) -> None:
        """The files could not be used: report them changed at the next look."""
        self.stamp = []

    def changed(self) -> bool:
        """True once per change (the caller then reads the files)."""
        try:
            stamp = self._stat()
        except OSError:  # a file missing mid-swap: look again at the next handshake
            return False
        if stamp == self.stamp:
            return False
        self.stamp = stamp
        return True

    def reload(self, make: Callable[[], T], what: str, errors: tuple[type[Exception], ...]) -> T | None:
        """``make()`` when the files have changed since the last look, else None (keep the
        current ``what``). Files ``make`` fails on (``errors``) are logged once: their stamps
        are kept, so they are read again only once they change again (a swap that completes,
        or new files), not at every handshake while they stay bad."""
        if not self.changed():
            return None
        try:
            made = make()
        except errors as e:
            log.error("keeping the previous %s: %s", what, e)
            return None
        log.info("%s reloaded from %s", what, self.paths[0])
        return made


def consistent(make: Callable[[], ssl.SSLContext], tries: int = 5) -> ssl.SSLContext:
    """``make()``, read again when it fails: a certificate and its key read while a Secret
    volume swaps them can come from two versions (a mismatch a moment later resolves)."""
    for _ in range(tries - 1):
        try:
            return make()
        except ssl.SSLError as e:
            log.warning("certificate and key disagree, reading them again: %s", e)
            time.sleep(0.05)
    return make()


def reloading(ctx: ssl.SSLContext, make: Callable[[], ssl.SSLContext], files: FileStamps) -> ssl.SSLContext:
    """``ctx`` (a server context) handing each new handshake a context made again by ``make``
    once ``files`` have changed: the SNI callback runs on every ClientHello and may replace the
    connection's context."""
    current = ctx

    def on_hello(conn: ssl.SSLObject | ssl.SSLSocket, _name: str | None, _ctx: ssl.SSLContext) -> None:
        nonlocal current
        current = files.reload(make, "HTTPS certificate", (OSError, ssl.SSLError)) or current
        if current is not ctx:
            conn.context = current

    ctx.sni_callback = on_hello
    return ctx


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


def metrics(s: SecuritySettings) -> ServerTLS | None:
    """rtvol.telemetry.start_metrics's ``tls``: the Prometheus port is HTTPS when the service is TLS."""
    return server(s)


def redis(url: str, s: SecuritySettings) -> dict[str, Any]:
    """redis-py client arguments for ``url`` from the settings: the password file, and for
    rediss:// the CA (and client certificate)."""
    found = client(s)
    options = found.redis() if found and url.startswith("rediss://") else {}
    if s.redis_password_file:
        options["password"] = Path(s.redis_password_file).read_text().strip()
    return options
