"""API keys and roles, checked by every service: an ASGI wrapper here, gRPC handlers wrapped in rpc.py.

Identities hold one role: ``engine`` (trading engines: read signals), ``feeder`` (Ingest),
``operator`` (admin, metrics, docs) and ``service`` (one rtvol service calling another).
Each service names which roles may call what (a ``Rules``); health checks and probes stay
open so orchestrators need no credential.

Keys file (``--api-keys-file``, a Secret in the chart), one key a line, ``#`` comments:

    NAME ROLE sha256:HEX

Keys are 32 random bytes (`rtvol keys new`), so one sha256 is enough at rest: a slow KDF
protects guessable passwords, and 256 bits of entropy are not guessable. The file is
re-read when it changes (checked at most once a second), so keys rotate without a
restart; a file that no longer parses leaves the previous keys in force. A key arrives as
``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` (HTTP headers or gRPC metadata).
Refusals are 401/UNAUTHENTICATED (missing or unknown key) and 403/PERMISSION_DENIED (a
known key of another role), counted in rtvol_auth_failures_total{service,reason}.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import orjson
from prometheus_client import Counter

log = logging.getLogger(__name__)

ENGINE, FEEDER, OPERATOR, SERVICE = "engine", "feeder", "operator", "service"
ROLES = frozenset({ENGINE, FEEDER, OPERATOR, SERVICE})
OPEN: frozenset[str] = frozenset({"*"})  # no credential needed (health checks, probes)
PREFIX = "sha256:"
MAX_CACHED = 4096  # verified keys remembered (only valid ones: unknown keys never grow it)

FAILURES = Counter("rtvol_auth_failures", "Requests refused for a missing, unknown or wrong-role key",
                   ["service", "reason"])


class KeyFileError(ValueError):
    """A keys file that cannot be used; the message names the line."""


@dataclass(frozen=True)
class Identity:
    name: str
    role: str


def new_key() -> str:
    return secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return PREFIX + hashlib.sha256(key.encode()).hexdigest()


def parse(text: str, source: str = "keys") -> dict[str, Identity]:
    """``hash_key(key)`` -> identity, from a keys file's text."""
    found: dict[str, Identity] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 3:
            raise KeyFileError(f"{source}:{number}: expected 'NAME ROLE sha256:HEX'")
        name, role, digest = parts
        if role not in ROLES:
            raise KeyFileError(f"{source}:{number}: role '{role}' is not one of {sorted(ROLES)}")
        hexpart = digest.removeprefix(PREFIX)
        if not digest.startswith(PREFIX) or len(hexpart) != 64 or set(hexpart) - set("0123456789abcdef"):
            raise KeyFileError(f"{source}:{number}: hash must be sha256: and 64 lowercase hex digits")
        found[digest] = Identity(name, role)
    return found


class ApiKeys:
    """The keys of a file, re-read when the file changes."""

    def __init__(self, path: Path, recheck_s: float = 1.0) -> None:
        self.path, self.recheck_s = Path(path), recheck_s
        self._stamp = self._stat()
        self._by_hash = parse(self.path.read_text(), str(self.path))  # a bad file fails the start
        self._verified: dict[str, Identity] = {}
        self._next_check = time.monotonic() + recheck_s

    def _stat(self) -> tuple[int, int, int]:
        st = os.stat(self.path)  # follows a Secret volume's ..data symlink swap
        return st.st_mtime_ns, st.st_size, st.st_ino

    def _reload_if_changed(self) -> None:
        self._next_check = time.monotonic() + self.recheck_s
        try:
            stamp = self._stat()
            if stamp == self._stamp:
                return
            keys = parse(self.path.read_text(), str(self.path))
        except (OSError, KeyFileError) as e:
            log.error("keeping the previous API keys: %s", e)
            return
        self._stamp, self._by_hash, self._verified = stamp, keys, {}
        log.info("API keys reloaded from %s: %d keys", self.path, len(keys))

    def identify(self, key: str) -> Identity | None:
        if time.monotonic() >= self._next_check:
            self._reload_if_changed()
        found = self._verified.get(key)
        if found is None:
            found = self._by_hash.get(hash_key(key))
            if found is not None and len(self._verified) < MAX_CACHED:
                self._verified[key] = found
        return found


@dataclass(frozen=True)
class Rules:
    """Which roles may call what: exact paths or gRPC methods, then prefixes, then ``default``."""

    default: frozenset[str]
    exact: dict[str, frozenset[str]] = field(default_factory=dict)
    prefixes: tuple[tuple[str, frozenset[str]], ...] = ()

    def allowed(self, target: str) -> frozenset[str]:
        found = self.exact.get(target)
        if found is not None:
            return found
        for prefix, roles in self.prefixes:
            if target.startswith(prefix):
                return roles
        return self.default


GRPC_HEALTH = "/grpc.health.v1.Health/"
GRPC_REFLECTION = "/grpc.reflection."


def grpc_rules(default: frozenset[str], exact: dict[str, frozenset[str]] | None = None) -> Rules:
    """A gRPC service's rules: health open, reflection for operators, ``exact`` by full method."""
    return Rules(default, exact or {}, ((GRPC_HEALTH, OPEN), (GRPC_REFLECTION, frozenset({OPERATOR}))))


@dataclass(frozen=True)
class Denial:
    status: int  # HTTP
    code: grpc.StatusCode
    message: str


class Guard:
    """One service's decision: the caller's key against the roles a target allows, counted."""

    def __init__(self, service: str, keys: ApiKeys, rules: Rules) -> None:
        self.service, self.keys, self.rules = service, keys, rules
        self._failures = {r: FAILURES.labels(service, r) for r in ("missing", "invalid", "forbidden")}

    def check(self, target: str, key: str | None) -> Denial | None:
        allowed = self.rules.allowed(target)
        if allowed is OPEN:
            return None
        if not key:
            return self._deny("missing", 401, grpc.StatusCode.UNAUTHENTICATED,
                              "credential required: Authorization: Bearer KEY or X-API-Key: KEY")
        who = self.keys.identify(key)
        if who is None:
            return self._deny("invalid", 401, grpc.StatusCode.UNAUTHENTICATED, "unknown API key")
        if who.role not in allowed:
            needs = " or ".join(sorted(allowed))
            return self._deny("forbidden", 403, grpc.StatusCode.PERMISSION_DENIED,
                              f"role '{who.role}' may not call {target} (needs {needs})")
        return None

    def _deny(self, reason: str, status: int, code: grpc.StatusCode, message: str) -> Denial:
        self._failures[reason].inc()
        return Denial(status, code, message)


def key_from(pairs: Iterable[tuple[Any, Any]]) -> str | None:
    """The API key in HTTP headers (bytes pairs) or gRPC metadata (str pairs), else None."""
    for name, value in pairs:
        name = name.decode("latin-1") if isinstance(name, bytes) else name
        if len(name) not in (9, 13):  # len("x-api-key"), len("authorization"): skip the rest cheaply
            continue
        name = name.lower()
        value = value.decode("latin-1") if isinstance(value, bytes) else value
        if name == "x-api-key":
            return str(value).strip()
        if name == "authorization" and value[:7].lower() == "bearer ":
            return str(value[7:]).strip()
    return None


def metadata(key: str) -> list[tuple[str, str]]:
    """gRPC metadata carrying ``key`` (empty without one)."""
    return [("authorization", f"Bearer {key}")] if key else []


def read_key(path: str) -> str:
    """The key a client presents, from a file (a mounted Secret); '' for no path."""
    return Path(path).read_text().strip() if path else ""


ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
                   Awaitable[None]]


class HttpAuth:
    """ASGI wrapper around the whole app: refused requests never reach routing or validation."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app, self.guard = app, guard

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] == "http":
            denial = self.guard.check(scope["path"], key_from(scope["headers"]))
            if denial is not None:
                headers = [(b"content-type", b"application/json")]
                if denial.status == 401:
                    headers.append((b"www-authenticate", b'Bearer realm="rtvol"'))
                await send({"type": "http.response.start", "status": denial.status, "headers": headers})
                await send({"type": "http.response.body", "body": orjson.dumps({"error": denial.message})})
                return
        await self.app(scope, receive, send)


def guard(service: str, keys_file: str, rules: Rules) -> Guard | None:
    """The service's guard, or None when no keys file is configured (authentication off)."""
    return Guard(service, ApiKeys(Path(keys_file)), rules) if keys_file else None


def wrap_http(app: Any, g: Guard | None) -> Any:
    return HttpAuth(app, g) if g else app
