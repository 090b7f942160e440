"""Certificate files read while a Secret volume swaps them (rtvol/tls.py)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from rtvol import tls


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
