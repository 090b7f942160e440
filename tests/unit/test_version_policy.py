"""Version policy: which version is served and which runs in shadow; promote and shadow refuse
a version that is missing or fails its digest check; the rule the sidecar and gateway follow."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtvol import cli
from rtvol import version_policy as vp
from rtvol.repository import IntegrityError, RepositoryError, write_version
from rtvol.training.export import SERVING

M = "m"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    for n in (1, 2, 3):
        write_version(tmp_path, M, f"onnx-{n}".encode(), {}, SERVING)
    return tmp_path


def tamper(repo: Path, version: int) -> None:
    (repo / M / str(version) / "model.onnx").write_bytes(b"swapped")


class Refused:
    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []

    def __call__(self, version: int, error: RepositoryError) -> None:
        self.calls.append((version, getattr(error, "reason", "not_found")))


def select(repo: Path, serving: int | None = None, shadowing: int | None = None,
           refused: Refused | None = None) -> tuple[int | None, int | None]:
    t = vp.select(repo, M, serving, shadowing, refused or Refused())
    return t.serve, t.shadow


def test_no_policy_serves_the_newest_verified_version_and_no_shadow(repo: Path) -> None:
    assert vp.read_policy(repo, M) == vp.VersionPolicy()
    assert select(repo) == (3, None)
    tamper(repo, 3)
    refused = Refused()
    assert select(repo, refused=refused) == (2, None)
    assert refused.calls == [(3, "digest_mismatch")]
    # never further back than the version served; a deleted served version rolls back
    assert select(repo, serving=2) == (2, None)


def test_promote_pins_the_served_version_and_shadow_runs_beside_it(repo: Path) -> None:
    assert vp.promote(repo, M, 1) == vp.VersionPolicy(1, None)
    assert vp.set_shadow(repo, M, 3) == vp.VersionPolicy(1, 3)
    assert vp.read_policy(repo, M) == vp.VersionPolicy(1, 3)
    assert select(repo, serving=3) == (1, 3)
    # the shadow promoted: it is served, and no longer a shadow
    assert vp.promote(repo, M, 3) == vp.VersionPolicy(3, None)
    assert select(repo, serving=1, shadowing=3) == (3, None)
    assert vp.set_shadow(repo, M, 2) == vp.VersionPolicy(3, 2)
    assert vp.set_shadow(repo, M, None) == vp.VersionPolicy(3, None)
    assert vp.promote(repo, M, None) == vp.VersionPolicy(None, None)  # back to the newest
    assert not [p for p in (repo / M).iterdir() if p.name.startswith(".")]  # written atomically


def test_promote_and_shadow_refuse_a_missing_or_tampered_version(repo: Path) -> None:
    vp.promote(repo, M, 2)
    with pytest.raises(RepositoryError, match="has no version 9"):
        vp.promote(repo, M, 9)
    tamper(repo, 3)
    with pytest.raises(IntegrityError, match=r"version 3 fails its digest check.*model\.onnx"):
        vp.promote(repo, M, 3)
    with pytest.raises(IntegrityError, match="version 3 fails its digest check"):
        vp.set_shadow(repo, M, 3)
    with pytest.raises(RepositoryError, match="version 2 is the served version"):
        vp.set_shadow(repo, M, 2)
    assert vp.read_policy(repo, M) == vp.VersionPolicy(2, None)  # unchanged


def test_a_pinned_version_that_fails_later_keeps_the_one_served(repo: Path) -> None:
    vp.promote(repo, M, 1)
    vp.set_shadow(repo, M, 2)
    tamper(repo, 1)
    tamper(repo, 2)
    refused = Refused()
    assert select(repo, serving=3, refused=refused) == (3, None)
    assert refused.calls == [(1, "digest_mismatch"), (2, "digest_mismatch")]
    assert select(repo, refused=Refused()) == (3, None)  # nothing served yet: the newest verified
    # once loaded, a version is not hashed again at every poll
    assert select(repo, serving=1, shadowing=2) == (1, 2)


def test_a_malformed_policy_is_an_error_naming_the_file(repo: Path) -> None:
    for text in ("{", '{"serve": "2"}', '{"serve": 0}', '{"serve": true}', '{"latest": 1}', "[2]"):
        vp.policy_path(repo, M).write_text(text)
        with pytest.raises(RepositoryError, match=r"version_policy\.json"):
            vp.read_policy(repo, M)
    refusals = vp.Refusals(lambda model, why: counted.append((model, why)))
    counted: list[tuple[str, str]] = []
    assert refusals.follow(repo, M, 1, None) is None  # keep what is loaded
    assert refusals.follow(repo, M, 1, None) is None
    assert counted == [(M, "bad_policy")]  # counted once
    assert vp.promote(repo, M, 2) == vp.VersionPolicy(2, None)  # promote replaces it
    assert refusals.follow(repo, M, 1, None) == vp.Targets(2, None)


def test_cli_promote_and_shadow(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = ["--repo", str(repo)]
    assert cli.main(["promote", M, "2", *r]) == 0
    assert cli.main(["shadow", M, "3", *r]) == 0
    assert "serving version 2, version 3 in shadow" in capsys.readouterr().out
    tamper(repo, 1)
    assert cli.main(["promote", M, "1", *r]) == 2
    assert "version 1 fails its digest check" in capsys.readouterr().err
    assert cli.main(["promote", M, "7", *r]) == 2
    assert "has no version 7" in capsys.readouterr().err
    assert cli.main(["shadow", M, *r]) == 2  # neither a version nor --clear
    assert cli.main(["shadow", M, "--clear", *r]) == 0
    assert cli.main(["promote", M, "latest", *r]) == 0
    assert vp.read_policy(repo, M) == vp.VersionPolicy(None, None)
    with pytest.raises(SystemExit):
        cli.main(["promote", M, "two", *r])
