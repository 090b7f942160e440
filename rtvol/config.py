"""Settings shared by every service: pydantic-settings with the RTVOL_ prefix.

Build settings in ``main`` (never at import time). A service subclasses
:class:`ServiceSettings`, and :func:`load` applies command-line flags over the
environment (flags win), e.g. ``--metrics-port 9102`` over ``RTVOL_METRICS_PORT``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from pydantic_settings import BaseSettings, CliApp, SettingsConfigDict


class ServiceSettings(BaseSettings):
    # use_attribute_docstrings: the docstring under each field is its `--help` text
    model_config = SettingsConfigDict(env_prefix="RTVOL_", cli_kebab_case=True,
                                      cli_implicit_flags=True, extra="ignore",
                                      use_attribute_docstrings=True)

    host: str = "127.0.0.1"
    """Address the servers bind (0.0.0.0 in a container)."""
    metrics_port: int = 0
    """Prometheus /metrics port; 0: no metrics endpoint."""
    log_level: str = "INFO"
    """DEBUG, INFO, WARNING or ERROR."""
    drain_seconds: float = 5.0
    """On SIGTERM: stop taking new work, finish in-flight requests for at most this long."""
    freeze_gc: bool = False
    """gc.freeze() after warm-up, so long-lived objects leave the collector's generations."""


S = TypeVar("S", bound=BaseSettings)


def load(cls: type[S], argv: Sequence[str] | None, prog: str) -> S:
    """Settings from the environment, overridden by ``argv`` flags; `--help` describes them."""
    cls.model_config["cli_prog_name"] = prog
    return CliApp.run(cls, cli_args=list(argv or []))
