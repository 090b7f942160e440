"""`rtvol serve|bench COMPONENT ...`: the rest of the arguments go to the component's own parser.

Components are imported by name: the shared library does not import services or benchmarks.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rtvol.cli.common import Commands


SERVICES = {"model": "rtvol.services.model.main", "feature": "rtvol.services.feature.main",
            "gateway": "rtvol.services.gateway.main",
            "embedded": "rtvol.services.embedded"}  # feature service + gateway in one process


BENCHES = {"model": "rtvol.loadtest.bench.model", "features": "rtvol.loadtest.bench.features",
           "gateway": "rtvol.loadtest.bench.gateway", "gpu": "rtvol.loadtest.bench.gpu",
           "pipeline": "rtvol.loadtest.bench.pipeline", "auth": "rtvol.loadtest.bench.auth",
           "ingest-devices": "rtvol.loadtest.bench.ingest_devices", "apply": "rtvol.loadtest.bench.apply"}


# what the service images leave out (.dockerignore): a command that needs it says so in one line
NOT_IN_IMAGES = ("rtvol.loadtest",)


def _component(table: dict[str, str]) -> Callable[[argparse.Namespace], None]:
    """Hand the remaining arguments to the chosen component's own ``main(argv)``."""
    def run(a: argparse.Namespace) -> None:
        importlib.import_module(table[a.component]).main(a.rest)
    return run


def _components_command(sub: Commands, name: str, table: dict[str, str], what: str) -> None:
    """`rtvol serve|bench COMPONENT ...`: the component parses the rest itself."""
    p = sub.add_parser(name, help=f"{what}: {'|'.join(table)} (args go to it; "
                                  f"try: rtvol {name} COMPONENT --help)")
    p.add_argument("component", choices=sorted(table))
    p.add_argument("rest", nargs=argparse.REMAINDER, help="the component's own arguments")
    p.set_defaults(run=_component(table))


def serve_command(sub: Commands) -> None:
    _components_command(sub, "serve", SERVICES, "run a service")


def bench_command(sub: Commands) -> None:
    _components_command(sub, "bench", BENCHES, "run a benchmark")
