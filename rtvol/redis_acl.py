"""Least-privilege Redis users, one per service (ACL rules, Redis 7 selectors).

The feature service writes feature windows, the change stream and the volatility estimate,
and publishes alerts; the gateway only reads them (``%R~``: read-only key access) and keeps
its shared signal cache (rtvol:signals:*, HSET/HGET). Neither may run admin or dangerous
commands (FLUSHDB, CONFIG, KEYS over the server, ...). charts/rtvol renders the same rules
(templates/redis.yaml); tests/unit/test_chart.py holds the two equal.
"""

from __future__ import annotations

FEATURE = "resetkeys ~rtvol:* resetchannels &rtvol:* -@all +@connection +@read +@write -@dangerous +publish"
GATEWAY = "resetkeys %R~rtvol:* %RW~rtvol:signals:* resetchannels -@all +@connection +@read -@dangerous +hset"
USERS = {"rtvol-feature": FEATURE, "rtvol-gateway": GATEWAY}


def setuser(name: str, password: str) -> list[str]:
    """The ACL SETUSER command that creates (or resets) ``name`` with its rules and password."""
    return ["ACL", "SETUSER", name, "reset", "on", f">{password}", *USERS[name].split()]
