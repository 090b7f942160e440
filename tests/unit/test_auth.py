"""API keys and roles (rtvol/auth.py): the keys file, rotation without restart, decisions, counting."""

from __future__ import annotations

import os
import re
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY

from rtvol import auth

RULES = auth.Rules(frozenset({auth.ENGINE}), {"/open": auth.OPEN, "/ops": frozenset({auth.OPERATOR})})


def failures(service: str, reason: str) -> float:
    labels = {"service": service, "reason": reason}
    return REGISTRY.get_sample_value("rtvol_auth_failures_total", labels) or 0.0


def write_keys(path: Path, *entries: tuple[str, str, str]) -> None:
    path.write_text("# test keys\n" + "".join(f"{n} {r} {auth.hash_key(k)}\n" for n, r, k in entries))


@pytest.mark.parametrize(("text", "error"), [
    ("alice engine", "expected 'NAME ROLE sha256:HEX'"),
    ("alice admin sha256:" + "0" * 64, "role 'admin'"),
    ("alice engine md5:" + "0" * 32, "hash must be sha256: and 64 lowercase hex"),
    ("alice engine sha256:" + "g" * 64, "hash must be sha256: and 64 lowercase hex"),
])
def test_a_malformed_line_is_named(text: str, error: str) -> None:
    with pytest.raises(auth.KeyFileError, match=f"keys:1: {re.escape(error)}"):
        auth.parse(text)


def test_keys_are_found_by_hash_and_rotate_without_restart(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    write_keys(path, ("alice", "engine", "k-alice"))
    keys = auth.ApiKeys(path, recheck_s=0)
    assert keys.identify("k-alice") == auth.Identity("alice", "engine")
    assert keys.identify("k-bob") is None
    write_keys(path, ("bob", "feeder", "k-bob"))  # rotated: alice's key is gone
    os.utime(path, ns=(1, 1))  # a different mtime even within the filesystem's timestamp resolution
    assert keys.identify("k-bob") == auth.Identity("bob", "feeder")
    assert keys.identify("k-alice") is None  # the verified-keys cache went with the old file


def test_a_broken_rewrite_keeps_the_previous_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    write_keys(path, ("alice", "engine", "k-alice"))
    keys = auth.ApiKeys(path, recheck_s=0)
    path.write_text("half a line")
    assert keys.identify("k-alice") == auth.Identity("alice", "engine")
    path.unlink()
    assert keys.identify("k-alice") == auth.Identity("alice", "engine")


def test_a_bad_file_fails_the_start(tmp_path: Path) -> None:
    (tmp_path / "keys").write_text("alice engine nohash\n")
    with pytest.raises(auth.KeyFileError, match=":1:"):
        auth.guard("test", str(tmp_path / "keys"), RULES)
    assert auth.guard("test", "", RULES) is None  # no file configured: no authentication


def test_decisions_and_their_counters(tmp_path: Path) -> None:
    write_keys(tmp_path / "keys", ("alice", "engine", "k-alice"), ("ops", "operator", "k-ops"))
    guard = auth.guard("unit", str(tmp_path / "keys"), RULES)
    assert guard is not None
    before = {r: failures("unit", r) for r in ("missing", "invalid", "forbidden")}
    assert guard.check("/v1/predict", "k-alice") is None
    assert guard.check("/open", None) is None
    assert guard.check("/ops", "k-ops") is None
    missing = guard.check("/v1/predict", None)
    invalid = guard.check("/v1/predict", "k-nobody")
    forbidden = guard.check("/ops", "k-alice")
    assert missing and (missing.status, missing.code) == (401, grpc.StatusCode.UNAUTHENTICATED)
    assert invalid and (invalid.status, invalid.code) == (401, grpc.StatusCode.UNAUTHENTICATED)
    assert forbidden and (forbidden.status, forbidden.code) == (403, grpc.StatusCode.PERMISSION_DENIED)
    assert forbidden.message == "role 'engine' may not call /ops (needs operator)"
    counted = {r: failures("unit", r) - before[r] for r in before}
    assert counted == {"missing": 1, "invalid": 1, "forbidden": 1}


@pytest.mark.parametrize(("pairs", "key"), [
    ([(b"authorization", b"Bearer abc")], "abc"),
    ([(b"Authorization", b"bearer  abc ")], "abc"),
    ([("x-api-key", "abc")], "abc"),
    ([("user-agent", "x"), ("authorization", "Basic abc")], None),
    ([], None),
])
def test_the_key_is_taken_from_headers_or_metadata(pairs: list[tuple[object, object]],
                                                   key: str | None) -> None:
    assert auth.key_from(pairs) == key


def test_grpc_rules_open_health_and_keep_reflection_for_operators() -> None:
    rules = auth.grpc_rules(frozenset({auth.SERVICE}), {"/x.S/Ingest": frozenset({auth.FEEDER})})
    assert rules.allowed("/grpc.health.v1.Health/Check") is auth.OPEN
    assert rules.allowed("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo") == {auth.OPERATOR}
    assert rules.allowed("/x.S/Ingest") == {auth.FEEDER}
    assert rules.allowed("/x.S/Get") == {auth.SERVICE}
