"""`rtvol up|down|status|supervise`: the whole stack as local processes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from rtvol.cli.common import CommandError, add, env_value, optional_path

if TYPE_CHECKING:
    from rtvol.cli.common import Commands
    from rtvol.stack import Ports


RUN_DIR = ("run-dir", "run directory: logs, pids, stack.json", "runs/local", Path)


def _ports(a: argparse.Namespace) -> Ports:
    from dataclasses import replace

    from rtvol.stack import Ports

    ports = Ports.free() if a.free_ports else Ports.from_base(a.base_port) if a.base_port else Ports()
    return replace(ports, gateway=a.gateway_port) if a.gateway_port else ports


def _up(a: argparse.Namespace) -> None:
    from rtvol import stack

    stocks = a.stocks
    if stocks is None:
        if a.data is None:
            stocks = 128
        else:
            from rtvol.training import optiver

            try:
                stocks = max(optiver.stock_ids(a.data)) + 1
            except optiver.DataError as e:
                raise CommandError(str(e)) from e
    ports = _ports(a)
    try:
        comps = stack.up(a.run_dir, a.repo, ports, stocks, a.backend, a.timeout, a.no_redis, a.tls,
                         a.gateway_workers)
    except (stack.StackError, FileNotFoundError) as e:
        raise CommandError(str(e)) from e
    for c in comps:
        print(f"{c.name:8} pid {c.pid:<7} {c.target}")
    if not any(c.name == "redis" for c in comps):
        print(f"{'--no-redis' if a.no_redis else 'no redis-server binary'}: feature service and gateway "
              "in one process, sharing its in-process feature store")
    scheme = "https" if a.tls else "http"
    print(f"gateway: {scheme}://127.0.0.1:{ports.gateway} grpc://127.0.0.1:{ports.gateway_grpc}; "
          f"feature service 127.0.0.1:{ports.feature} (framed Ingest stream "
          f"127.0.0.1:{ports.feature_stream}); "
          f"logs and pids in {a.run_dir}")
    if a.tls:
        pki = a.run_dir / "pki"
        print(f"TLS everywhere, CA {pki}/ca.pem; clients: --tls-ca {pki}/ca.pem --tls-cert {pki}/client.pem "
              f"--tls-key {pki}/client.key (mTLS to the feature service and sidecar)")


def _down(a: argparse.Namespace) -> None:
    from rtvol import stack

    result = stack.down(a.run_dir, a.timeout)
    if not result:
        print(f"no stack recorded in {a.run_dir}")
    for name, how in result.items():
        print(f"{name:8} {how}")


def _status(a: argparse.Namespace) -> None:
    from rtvol import stack

    rows = stack.status(a.run_dir)
    if not rows:
        raise CommandError(f"no stack recorded in {a.run_dir} (rtvol up)")
    print(f"{'component':10} {'pid':>7} {'port':>6}  {'running':8} {'health':8} {'restarts':>8}  target")
    for c, running, healthy in rows:
        print(f"{c.name:10} {c.pid:>7} {c.port:>6}  {'yes' if running else 'NO':8} "
              f"{'ok' if healthy else 'DOWN':8} {c.restarts:>8}  {c.target}")
    sup = stack.supervisor(a.run_dir)
    print(f"supervisor pid {sup} (restarts a component that dies)" if sup else
          "supervisor NOT running: a component that dies stays down")
    if not all(h for _, _, h in rows):
        raise CommandError("some components are not healthy (see their logs in the run directory)")


def _supervise(a: argparse.Namespace) -> None:
    import logging

    from rtvol import supervisor

    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    supervisor.run(a.run_dir)


def up_command(sub: Commands) -> None:
    upp = sub.add_parser("up", help="start the whole stack as local processes",
                         description="redis-server, feature service, model sidecar, gateway; each ready "
                                     "before the next starts. Without redis-server (or with --no-redis) "
                                     "the feature service and gateway share one process and its "
                                     "in-process feature store.")
    add(upp, *RUN_DIR)
    add(upp, "repo", "model repository", "models", Path, env="model-repository")
    optional_path(upp, "data", "Optiver-layout data: the stock universe is sized from it")
    upp.add_argument("--stocks", type=int, default=None, help="stock universe size (default: from --data, "
                                                              "else 128)")
    upp.add_argument("--gateway-port", type=int, default=None, help="gateway HTTP port (default 8080)")
    upp.add_argument("--base-port", type=int, default=None,
                     help="use 8 consecutive ports from here instead of the defaults")
    upp.add_argument("--free-ports", action="store_true", help="pick free loopback ports (tests)")
    upp.add_argument("--no-redis", action="store_true",
                     default=(env_value("no-redis") or "").lower() in ("1", "true", "yes"),
                     help="no redis-server even when installed: feature service and gateway in one process "
                          "with the in-process store (the default without the binary) [env RTVOL_NO_REDIS]")
    upp.add_argument("--tls", action="store_true",
                     default=(env_value("up-tls") or "").lower() in ("1", "true", "yes"),
                     help="a fresh local CA and certificates in RUN_DIR/pki; every listener TLS-only, mTLS "
                          "between gateway, feature service and sidecar [env RTVOL_UP_TLS]")
    upp.add_argument("--gateway-workers", type=int, default=1,
                     help="gateway worker processes (default 1: the stack's processes share this machine's "
                          "cores, and each worker infers every changed window; 0 = one per core)")
    add(upp, "backend", "model sidecar backend", "auto", env="model-backend")
    add(upp, "timeout", "readiness deadline per component, seconds", "90", float, env="up-timeout")
    upp.set_defaults(run=_up)


def down_command(sub: Commands) -> None:
    downp = sub.add_parser("down", help="stop the local stack (SIGTERM, then SIGKILL after --timeout)")
    add(downp, *RUN_DIR)
    add(downp, "timeout", "seconds to wait for each component to drain", "15", float, env="down-timeout")
    downp.set_defaults(run=_down)


def status_command(sub: Commands) -> None:
    st = sub.add_parser("status", help="each component's pid, port and health (exit 2 when unhealthy)")
    add(st, *RUN_DIR)
    st.set_defaults(run=_status)


def supervise_command(sub: Commands) -> None:
    sv = sub.add_parser("supervise", help="restart the components of a stack that die (`up` starts this)")
    add(sv, *RUN_DIR)
    sv.set_defaults(run=_supervise)
