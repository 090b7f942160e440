"""Which version of a model is served and which runs in shadow.

    <repo>/<model>/version_policy.json    {"serve": 3, "shadow": 4}   (both optional)

No file (or a key left out): the newest version that passes its digest check is served and
nothing runs in shadow. ``serve`` pins the served version (`rtvol promote`); ``shadow`` names
a version the sidecar keeps loaded beside it, which the gateway sends every tier-1 batch to
and scores but never serves (`rtvol shadow`). The file is written atomically (renamed into
place), so a server polling the repository reads the old policy or the new one.

A file of our own rather than config.pbtxt's ``version_policy``: Triton has no notion of a
shadow version, and `rtvol train` rewrites config.pbtxt with every new version, which would
silently undo a promotion. A stock Triton server ignores the file and serves the latest version.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from rtvol import repository
from rtvol.repository import IntegrityError, RepositoryError

log = logging.getLogger(__name__)
POLICY_FILE = "version_policy.json"
ROLES = ("serve", "shadow")


@dataclass(frozen=True)
class VersionPolicy:
    serve: int | None = None  # None: the newest version that verifies
    shadow: int | None = None  # None: no shadow


def policy_path(repo: Path, name: str) -> Path:
    return Path(repo) / name / POLICY_FILE


def read_policy(repo: Path, name: str) -> VersionPolicy:
    """The model's policy (the default when there is no file); RepositoryError when malformed."""
    path = policy_path(repo, name)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return VersionPolicy()
    except (OSError, ValueError) as e:
        raise RepositoryError(f"{path}: unreadable version policy ({e})") from e
    if not isinstance(raw, dict) or set(raw) - set(ROLES):
        raise RepositoryError(f"{path}: expected an object with keys {list(ROLES)}, got {raw!r}")
    for role in ROLES:
        value = raw.get(role)
        if value is not None and (type(value) is not int or value < 1):
            raise RepositoryError(f"{path}: '{role}' must be a version number >= 1 or null, got {value!r}")
    return VersionPolicy(raw.get("serve"), raw.get("shadow"))


def write_policy(repo: Path, name: str, policy: VersionPolicy) -> None:
    repository.write_atomic(policy_path(repo, name),
                            json.dumps({"serve": policy.serve, "shadow": policy.shadow}) + "\n")


def _checked(repo: Path, name: str, version: int) -> None:
    """RepositoryError naming the version unless it exists and its files match their digests."""
    if version not in repository.versions(repo, name):
        raise RepositoryError(f"model '{name}' has no version {version} in {repo} "
                              f"(has {repository.versions(repo, name)})")
    try:
        repository.verify(repo, name, version)
    except IntegrityError as e:
        raise IntegrityError(f"model '{name}' version {version} fails its digest check: {e}",
                             e.reason) from e


def _current(repo: Path, name: str) -> VersionPolicy:
    """The policy to change: a malformed file is replaced, not kept."""
    try:
        return read_policy(repo, name)
    except RepositoryError:
        return VersionPolicy()


def promote(repo: Path, name: str, version: int | None) -> VersionPolicy:
    """Serve ``version`` (None: back to the newest verified one); a shadow of that version ends."""
    if version is not None:
        _checked(repo, name, version)
    old = _current(repo, name)
    policy = VersionPolicy(version, None if old.shadow == version else old.shadow)
    write_policy(repo, name, policy)
    return policy


def set_shadow(repo: Path, name: str, version: int | None) -> VersionPolicy:
    """Run ``version`` in shadow (None: no shadow)."""
    old = _current(repo, name)
    if version is not None:
        _checked(repo, name, version)
        if version == old.serve:
            raise RepositoryError(f"model '{name}' version {version} is the served version, not a shadow")
    policy = replace(old, shadow=version)
    write_policy(repo, name, policy)
    return policy


@dataclass(frozen=True)
class Targets:
    """What a server should have loaded for one model."""

    serve: int | None
    shadow: int | None


Refuse = Callable[[int, RepositoryError], None]


def select(repo: Path, name: str, serving: int | None, shadowing: int | None, refuse: Refuse) -> Targets:
    """Apply the policy to what is loaded now (``serving``, ``shadowing``; None: nothing). A
    version not loaded yet must verify, else ``refuse`` is told and it is not taken: a pinned
    version that fails keeps the one served (or, with none, the newest that verifies). Without
    a pin, the newest version that verifies, looking no further back than the one served; a
    version deleted from the repository still rolls back to an older one. Raises
    RepositoryError when the policy file is malformed (keep what is loaded)."""
    policy = read_policy(repo, name)

    def usable(version: int, loaded: int | None) -> bool:
        if version == loaded:
            return True  # verified when it was loaded
        try:
            _checked(repo, name, version)
        except RepositoryError as e:
            refuse(version, e)
            return False
        return True

    def newest() -> int | None:
        for version in reversed(repository.versions(repo, name)):
            if usable(version, serving):  # the one served is usable: never further back
                return version
        return None

    if policy.serve is None:
        serve = newest()
    elif usable(policy.serve, serving):
        serve = policy.serve
    else:
        serve = serving if serving is not None else newest()
    shadow = policy.shadow
    if shadow is not None and (shadow == serve or not usable(shadow, shadowing)):
        shadow = None
    return Targets(serve, shadow)


class Refusals:
    """Versions refused by `select` and malformed policies, each logged and counted
    (``count(model, reason)``) once while its reason stays the same: the repository is polled
    every few seconds."""

    POLICY = 0  # the key of a model's policy file among its versions

    def __init__(self, count: Callable[[str, str], None]) -> None:
        self.count = count
        self.reasons: dict[tuple[str, int], str] = {}  # (model, version or POLICY) -> reason

    def _once(self, name: str, version: int, reason: str, what: str, error: RepositoryError) -> None:
        if self.reasons.get((name, version)) == reason:
            return
        self.reasons[(name, version)] = reason
        self.count(name, reason)
        log.error("refusing %s %s (%s): %s", name, what, reason, error)

    def refuser(self, name: str) -> Refuse:
        def refuse(version: int, error: RepositoryError) -> None:
            reason = getattr(error, "reason", "not_found")  # not an IntegrityError: a missing pin
            self._once(name, version, reason, f"version {version}", error)
        return refuse

    def follow(self, repo: Path, name: str, serving: int | None, shadowing: int | None) -> Targets | None:
        """`select`, with refusals logged and counted once; None when the policy file is
        malformed (reason bad_policy): keep what is loaded."""
        try:
            targets = select(repo, name, serving, shadowing, self.refuser(name))
        except RepositoryError as e:
            self._once(name, self.POLICY, "bad_policy", "its version policy (keeping the loaded versions)", e)
            return None
        for version in (self.POLICY, targets.serve, targets.shadow):
            if version is not None:
                self.reasons.pop((name, version), None)
        return targets
