"""Settings shared by every service: pydantic-settings with the RTVOL_ prefix.

Build settings in ``main`` (never at import time). A service subclasses
:class:`ServiceSettings`, and :func:`load` applies command-line flags over the
environment (flags win), e.g. ``--metrics-port 9102`` over ``RTVOL_METRICS_PORT``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, Self, TypeVar

from pydantic import ValidationError, model_validator
from pydantic_settings import BaseSettings, CliApp, SettingsConfigDict

from rtvol.eventloop import EventLoop


class SecuritySettings(BaseSettings):
    """Credentials and TLS (rtvol/auth.py, rtvol/tls.py); all empty: open plaintext, the local default."""

    # use_attribute_docstrings: the docstring under each field is its `--help` text
    model_config = SettingsConfigDict(env_prefix="RTVOL_", cli_kebab_case=True,
                                      cli_implicit_flags=True, extra="ignore",
                                      use_attribute_docstrings=True)

    api_keys_file: str = ""
    """Keys callers must present ('NAME ROLE sha256:HEX' lines, re-read on change); empty: no auth."""
    api_key_file: str = ""
    """File holding the API key this service presents to the services it calls."""
    tls_cert: str = ""
    """PEM certificate (chain) every listener serves, also the mTLS client certificate; empty: plaintext."""
    tls_key: str = ""
    """PEM private key of --tls-cert."""
    tls_client_ca: str = ""
    """PEM CA bundle: gRPC callers must present a certificate it signed (mTLS); empty: none asked."""
    tls_ca: str = ""
    """PEM CA bundle trusted for the services this one calls (gRPC, rediss://); set: those calls use TLS."""
    redis_password_file: str = ""
    """File holding the Redis password of the --redis-url user (a mounted Secret), not in the URL."""
    grpc_reflection: bool = True
    """Serve gRPC reflection (operators only when auth is on)."""


class ServiceSettings(SecuritySettings):
    # every number a service takes is finite (NaN and inf are refused, naming the setting)
    model_config = SettingsConfigDict(allow_inf_nan=False)

    host: str = "127.0.0.1"
    """Address the servers bind (0.0.0.0 in a container)."""
    metrics_port: int = 0
    """Prometheus /metrics port; 0: no metrics endpoint."""
    health_port: int = 0
    """Plaintext port with only grpc.health.v1, for kubelet gRPC probes (they cannot speak TLS); 0: none."""
    log_level: str = "INFO"
    """DEBUG, INFO, WARNING or ERROR."""
    drain_seconds: float = 5.0
    """On SIGTERM: stop taking new work, finish in-flight requests for at most this long."""
    freeze_gc: bool = False
    """gc.freeze() after warm-up, so long-lived objects leave the collector's generations."""
    event_loop: EventLoop = "uvloop"
    """uvloop (libuv, lower cost a loop turn) or asyncio (the standard library's selector loop)."""

    @model_validator(mode="after")
    def _no_negative_seconds_or_rates(self) -> Self:
        """Every float setting is a duration, rate, factor or bound: a negative one is a typo
        that would, e.g., time every call out at once."""
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, float) and value < 0:
                raise ValueError(f"{name} ({value:g}) must not be negative")
        return self


S = TypeVar("S", bound=BaseSettings)


def load(cls: type[S], argv: Sequence[str] | None, prog: str) -> S:
    """Settings from the environment, overridden by ``argv`` flags; `--help` describes them."""
    cls.model_config["cli_prog_name"] = prog
    try:
        return CliApp.run(cls, cli_args=list(argv or []))
    except ValidationError as e:  # one line naming each setting, no traceback; 2: as argparse
        print(f"{prog}: " + "; ".join(_problem(err) for err in e.errors()), file=sys.stderr)
        raise SystemExit(2) from None


def _problem(err: Any) -> str:
    """'setting: why (got VALUE)'; a rule over several settings already names them."""
    if not err["loc"]:
        return str(err["msg"]).removeprefix("Value error, ")
    return f"{'.'.join(map(str, err['loc']))}: {err['msg']} (got {err['input']!r})"
