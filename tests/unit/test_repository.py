"""Model repository: Triton layout, versions, atomic writes, metadata round trip."""

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from rtvol import repository as repo_mod
from rtvol.training.export import SERVING


def test_round_trip(tmp_path: Path) -> None:
    v1 = repo_mod.write_version(tmp_path, "m", b"onnx-1", {"params": 7}, SERVING)
    extra = tmp_path / "x.txt"
    extra.write_text("hello")
    v2 = repo_mod.write_version(tmp_path, "m", b"onnx-2", {"params": 8}, SERVING,
                                {"baselines/x.txt": extra})
    assert (v1, v2) == (1, 2)
    assert repo_mod.versions(tmp_path, "m") == [1, 2] and repo_mod.models(tmp_path) == ["m"]
    assert repo_mod.resolve(tmp_path, "m") == 2
    digest_1 = hashlib.sha256(b"onnx-1").hexdigest()
    assert repo_mod.read_metadata(tmp_path, "m", 1) == {"params": 7, "model": "m", "version": 1,
                                                         "files": {"model.onnx": digest_1}}
    assert repo_mod.read_metadata(tmp_path, "m", 2)["files"].keys() == {"model.onnx", "baselines/x.txt"}
    assert (tmp_path / "m" / "2" / "model.onnx").read_bytes() == b"onnx-2"
    assert (tmp_path / "m" / "2" / "baselines" / "x.txt").read_text() == "hello"
    config = (tmp_path / "m" / "config.pbtxt").read_text()
    assert 'name: "m"' in config and "max_batch_size: 1024" in config
    assert 'name: "window"' in config and "dims: [ 50, 12 ]" in config
    assert "max_queue_delay_microseconds: 100" in config
    assert not [p for p in (tmp_path / "m").iterdir() if p.name.startswith(".")]  # no staging
    # readable by servers running under another uid (containers without fsGroup)
    assert (tmp_path / "m" / "2").stat().st_mode & 0o777 == 0o755


def test_missing_model_and_version(tmp_path: Path) -> None:
    with pytest.raises(repo_mod.RepositoryError, match="model 'nope' not found"):
        repo_mod.resolve(tmp_path, "nope")
    repo_mod.write_version(tmp_path, "m", b"x", {}, SERVING)
    with pytest.raises(repo_mod.RepositoryError, match="has no version 5"):
        repo_mod.resolve(tmp_path, "m", 5)


def test_incomplete_version_is_invisible(tmp_path: Path) -> None:
    repo_mod.write_version(tmp_path, "m", b"x", {}, SERVING)
    (tmp_path / "m" / "7").mkdir()  # e.g. a copy in progress: no model.onnx yet
    assert repo_mod.versions(tmp_path, "m") == [1]


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        repo_mod.write_version(tmp_path, "m", b"x", {}, SERVING,
                               {"baselines/missing": tmp_path / "does-not-exist"})
    assert list((tmp_path / "m").iterdir()) == []


def test_trained_version_metadata(tiny_repo: Path) -> None:
    meta = repo_mod.read_metadata(tiny_repo, repo_mod.DEFAULT_MODEL)
    from rtvol.features.spec import spec_hash

    assert meta["feature_spec_hash"] == spec_hash()
    assert 0 < meta["params"] <= 2_000_000
    assert len(meta["normalisation"]["mean"]) == 12
    assert meta["onnx_parity_max_abs_diff"] <= 1e-4
    json.dumps(meta)  # plain JSON all the way down


@pytest.fixture
def sealed(tmp_path: Path) -> Path:
    extra = tmp_path / "x.txt"
    extra.write_text("hello")
    repo_mod.write_version(tmp_path / "r", "m", b"onnx", {}, SERVING, {"baselines/x.txt": extra})
    repo_mod.verify(tmp_path / "r", "m", 1)  # as written: it verifies
    return tmp_path / "r" / "m" / "1"


@pytest.mark.parametrize(("tamper", "reason"), [
    (lambda v: (v / "model.onnx").write_bytes(b"onnx-swapped"), "digest_mismatch"),
    (lambda v: (v / "baselines" / "x.txt").write_text("hellO"), "digest_mismatch"),
    (lambda v: (v / "baselines" / "x.txt").unlink(), "missing_file"),
    (lambda v: (v / "model.plan").write_bytes(b"engine"), "unexpected_file"),
    (lambda v: (v / "metadata.json").write_text(json.dumps({"model": "m"})), "no_digest"),
])
def test_a_tampered_version_does_not_verify(sealed: Path, tamper: Any, reason: str) -> None:
    tamper(sealed)
    with pytest.raises(repo_mod.IntegrityError) as e:
        repo_mod.verify(sealed.parent.parent, "m", 1)
    assert e.value.reason == reason


def test_seal_records_a_new_file(sealed: Path) -> None:
    (sealed / "model.plan").write_bytes(b"engine")
    digests = repo_mod.seal(sealed.parent.parent, "m", 1)
    assert digests["model.plan"] == hashlib.sha256(b"engine").hexdigest()
    repo_mod.verify(sealed.parent.parent, "m", 1)
    assert sorted(p.name for p in sealed.parent.iterdir()) == ["1", "config.pbtxt"]  # no temporary left
