"""Certificate files read while a Secret volume swaps them (rtvol/tls.py)."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from rtvol import certs, tls


def test_a_pair_read_mid_swap_is_read_again() -> None:
    calls: list[int] = []

    def make() -> ssl.SSLContext:
        calls.append(1)
        if len(calls) < 3:  # the key of the next version beside the certificate of this one
            raise ssl.SSLError("KEY_VALUES_MISMATCH")
        return ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)

    assert isinstance(tls.consistent(make), ssl.SSLContext) and len(calls) == 3


def test_a_pair_that_never_agrees_fails() -> None:
    def make() -> ssl.SSLContext:
        raise ssl.SSLError("KEY_VALUES_MISMATCH")

    with pytest.raises(ssl.SSLError):
        tls.consistent(make, tries=2)


def test_files_that_could_not_be_used_count_as_changed_again(tmp_path: Path) -> None:
    cert = tmp_path / "tls.crt"
    cert.write_text("x")
    files = tls.FileStamps([str(cert)])
    assert not files.changed()
    files.forget()
    assert files.changed() and not files.changed()


def _pair(folder: Path) -> tuple[bytes, bytes]:
    """A new certificate and its key (PEM)."""
    _, pairs = certs.local_pki(folder)
    return Path(pairs["feature"].cert).read_bytes(), Path(pairs["feature"].key).read_bytes()


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_bad_https_files_are_read_and_logged_once_and_the_last_good_pair_serves(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_pem, key_pem = _pair(tmp_path / "first")
    cert.write_bytes(cert_pem)
    key.write_bytes(key_pem)
    server = tls.ServerTLS(str(cert), str(key))
    made: list[ssl.SSLContext] = []

    def make() -> ssl.SSLContext:
        made.append(server.ssl_context())
        return made[-1]

    good = tls.reloading(server.ssl_context(), make, server.files())
    assert good.sni_callback is not None
    hello = good.sni_callback

    def handshake() -> ssl.SSLContext:
        conn = SimpleNamespace(context=good)  # what the SNI callback may swap for the connection
        hello(conn, None, good)  # type: ignore[arg-type]
        return conn.context  # type: ignore[no-any-return]

    cert.write_bytes(b"not a certificate")  # a bad file that stays bad
    assert [handshake() for _ in range(3)] == [good] * 3
    assert made == [] and len(_errors(caplog)) == 1  # read (and failed) once, logged once
    assert "keeping the previous HTTPS certificate" in _errors(caplog)[0]

    cert_pem, key_pem = _pair(tmp_path / "second")  # the files change again: read again
    key.write_bytes(key_pem)
    cert.write_bytes(cert_pem)
    renewed = handshake()
    assert len(made) == 1 and renewed is made[0] and handshake() is renewed and len(made) == 1


def test_bad_grpc_files_are_read_and_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_pem, key_pem = _pair(tmp_path / "first")
    cert.write_bytes(cert_pem)
    key.write_bytes(key_pem)
    fetched: list[Callable[[], Any]] = []

    def credentials(_initial: Any, fetch: Callable[[], Any], **_: Any) -> None:
        fetched.append(fetch)  # grpcio calls it before every handshake

    monkeypatch.setattr(tls.grpc, "dynamic_ssl_server_credentials", credentials)
    tls.ServerTLS(str(cert), str(key)).grpc()
    fetch = fetched[0]
    assert fetch() is None  # unchanged: keep the current certificate
    key.unlink()
    key.mkdir()  # there, but unreadable as a file
    assert [fetch() for _ in range(3)] == [None] * 3
    assert len(_errors(caplog)) == 1 and "keeping the previous gRPC certificate" in _errors(caplog)[0]
    key.rmdir()
    key.write_bytes(key_pem)
    assert fetch() is not None and fetch() is None  # the good files once, then unchanged again
