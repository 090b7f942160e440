"""`rtvol feed|loadtest`: clients that drive the stack, market data in and requests out."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtvol.cli.common import CommandError, add, env_value, optional_path

if TYPE_CHECKING:
    from rtvol.cli.common import Commands
    from rtvol.tls import ClientTLS


def _buckets(text: str | None) -> range | None:
    if not text:
        return None
    first, _, count = text.partition(":")
    return range(int(first), int(first) + int(count))


def _feed(a: argparse.Namespace) -> None:
    import grpc

    from rtvol.ingest_frames import StreamRefused
    from rtvol.loadtest import feed
    from rtvol.loadtest.tickserver import TickServer
    from rtvol.training import optiver

    ticks = None
    if a.ws_port is not None:  # listening before the data loads: a taken port fails at once
        try:
            ticks = TickServer(a.ws_host, a.ws_port, a.ws_queue, a.ws_overflow).start()
        except ValueError as e:  # names the setting: --ws-overflow or --ws-queue
            raise CommandError(f"--ws-{e}") from e
        except OSError as e:
            raise CommandError(f"--ws-port {a.ws_port}: {e}") from e
    with tempfile.TemporaryDirectory(prefix="rtvol-feed-") as scratch:
        data = a.data if a.synthetic is None else _synthetic_session(a, Path(scratch))
        if data is None:
            raise CommandError("give --data DIR (Optiver layout) or --synthetic STOCKS")
        try:
            _, report = feed.run(a.target, data, _buckets(a.buckets), a.rate, a.batch, a.freeze_gc,
                                 a.metrics_port, feed.print_progress, ticks, a.ws_wait,
                                 a.ws_wait_timeout, a.ws_drain, *_caller(a), a.transport)
        except optiver.DataError as e:
            raise CommandError(str(e)) from e
        except (StreamRefused, OSError) as e:  # the framed stream's refusal or connection error
            if a.transport != "stream" or isinstance(e, FileNotFoundError):
                raise
            raise CommandError(f"feature service stream at {a.target}: {e}") from e
        except grpc.RpcError as e:  # unreachable or refusing: one line, not a traceback
            raise CommandError(f"feature service at {a.target}: {e.code().name}: {e.details()}") from e
    print(report.line())
    if a.report:
        import json

        a.report.parent.mkdir(parents=True, exist_ok=True)
        a.report.write_text(json.dumps(feed.report_dict(report), indent=2))


def _caller(a: argparse.Namespace) -> tuple[ClientTLS | None, str]:
    """How a client command reaches a secured service: (TLS settings, API key)."""
    from rtvol import auth
    from rtvol.tls import ClientTLS

    try:
        key = auth.read_key(a.api_key_file)
    except OSError as e:
        raise CommandError(f"--api-key-file: {e}") from e
    return (ClientTLS(a.tls_ca, a.tls_cert, a.tls_key) if a.tls_ca else None), key


def _add_caller(p: argparse.ArgumentParser, role: str) -> None:
    add(p, "api-key-file", f"file holding the {role} API key (when the service checks keys)", "")
    add(p, "tls-ca", "CA bundle that signed the service's certificate: call it over TLS", "")
    add(p, "tls-cert", "client certificate (mTLS)", "")
    add(p, "tls-key", "key of --tls-cert", "")


def _synthetic_session(a: argparse.Namespace, out: Path) -> Path:
    """A fresh synthetic market (rtvol.training.synth, the demo's generator) to feed: new ticks on
    every run unless --seed is given."""
    from rtvol.training import synth

    if a.data is not None:
        raise CommandError("--data and --synthetic exclude each other")
    if a.synthetic < 1 or a.synthetic_buckets < 1:
        raise CommandError("--synthetic and --synthetic-buckets must be >= 1")
    seed = a.seed if a.seed is not None else int.from_bytes(os.urandom(4), "little")
    cfg = synth.SynthConfig(stocks=a.synthetic, time_ids=max(3, a.synthetic_buckets), seed=seed)
    print(f"generating {cfg.stocks} stocks x {cfg.time_ids} buckets of synthetic ticks (seed {seed})")
    synth.write(synth.generate(cfg), out)
    return out


def _loadtest(a: argparse.Namespace) -> None:
    from rtvol.loadtest import fanout, report, run

    try:
        processes = fanout.processes_arg(a.processes)
    except ValueError as e:
        raise CommandError(f"--processes {a.processes!r}: {e}") from e
    if not a.target.startswith(("grpc://", "http://", "https://")):
        raise CommandError("--target must be grpc://HOST:PORT, http://HOST:PORT or https://HOST:PORT")
    stocks = [int(s) for s in a.stocks.split(",")] if a.stocks else list(range(8))
    plan = run.Plan(a.target, a.duration, stocks, a.ids_per_request, a.max_inflight, a.timeout, *_caller(a),
                    grpc_connections=a.grpc_connections, processes=processes)
    if a.sweep:
        if a.p99_target_ms is None:
            raise CommandError("--sweep needs --p99-target-ms")
        doc = run.sweep(plan, a.rate, a.p99_target_ms, a.out, a.sweep_steps)
        print(f"highest rate with p99 <= {a.p99_target_ms:g} ms: {doc['best_rate']:,.0f}/s "
              f"({a.out / 'sweep.json'})")
        return
    before = _scrape(a, plan.api_key)
    s = run.once(plan, a.rate, a.out)
    print(report.line(s))
    if before is not None:
        from rtvol.loadtest import server_metrics

        seen = server_metrics.delta(before, _scrape(a, plan.api_key))
        print(server_metrics.line(seen))
        (a.out / "server.json").write_text(json.dumps(seen, indent=2))
        s["files"].append(str(a.out / "server.json"))
    print("report: " + ", ".join(s["files"]))


def _scrape(a: argparse.Namespace, api_key: str) -> Any:
    """--server-metrics' histograms now (None without the option)."""
    if not a.server_metrics:
        return None
    from rtvol.loadtest import server_metrics

    try:
        return server_metrics.scrape(a.server_metrics, api_key)
    except OSError as e:
        raise CommandError(f"--server-metrics {a.server_metrics}: {e}") from e


def feed_command(sub: Commands) -> None:
    fd = sub.add_parser("feed", help="replay market data into the feature service",
                        description="Optiver-layout updates merged by event time, sent on one Ingest "
                                    "stream in column batches, paced by a token bucket.")
    optional_path(fd, "data", "Optiver-layout data directory (or --synthetic)")
    add(fd, "target", "feature service HOST:PORT; replicas: HOST:PORT,HOST:PORT,... in ordinal order "
         "(each gets the stocks it owns: stock id mod replicas)", "127.0.0.1:50052", env="feature-url")
    add(fd, "rate", "updates per second (0: as fast as possible)", "0", float, env="feed-rate")
    add(fd, "batch", "updates per message", "2000", int, env="feed-batch")
    fd.add_argument("--transport", choices=("grpc", "stream"), default="grpc",
                    help="grpc: the Ingest call (--target: the gRPC port); stream: the framed Ingest "
                         "stream (--target: the feature service's --stream-port), far less CPU a message")
    fd.add_argument("--synthetic", type=int, default=None, metavar="STOCKS",
                    help="instead of --data: generate a fresh synthetic market of STOCKS stocks "
                         "(the demo's generator) and feed it")
    fd.add_argument("--synthetic-buckets", type=int, default=10,
                    help="ten-minute buckets of ticks --synthetic generates (default 10)")
    fd.add_argument("--seed", type=int, default=None, help="--synthetic seed (default: random)")
    fd.add_argument("--buckets", default=None, help="FIRST:COUNT time_ids to replay (default: all)")
    fd.add_argument("--freeze-gc", action="store_true", help="gc.freeze() after loading the data")
    fd.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus metrics here")
    fd.add_argument("--report", type=Path, default=None, help="also write the final report as JSON")
    ws_port = env_value("ws-port")
    fd.add_argument("--ws-port", type=int, default=int(ws_port) if ws_port else None,
                    help="serve the raw ticks to WebSocket subscribers on this port (0: a free one), "
                         "ws://HOST:PORT/ticks?stocks=1,2&format=binary|json [env RTVOL_WS_PORT]")
    add(fd, "ws-host", "WebSocket listen address", "127.0.0.1")
    add(fd, "ws-queue", "frames a subscriber may have waiting before its overflow policy applies",
         "64", int)
    add(fd, "ws-overflow", "full subscriber queue: drop_oldest or disconnect (a subscriber may choose "
                            "with ?overflow=)", "drop_oldest")
    add(fd, "ws-wait", "wait for this many WebSocket subscribers before feeding", "0", int)
    add(fd, "ws-wait-timeout", "at most this long, seconds (then feed anyway)", "30", float)
    add(fd, "ws-drain", "when the feed ends, seconds subscribers get to take what is queued", "5", float)
    _add_caller(fd, "feeder's")
    fd.set_defaults(run=_feed)


def loadtest_command(sub: Commands) -> None:
    lt = sub.add_parser("loadtest", help="open-loop load on the gateway with latency reports",
                        description="Requests start on a fixed schedule; latency counts from the "
                                    "intended start. Writes report.json and PNG plots to --out.")
    add(lt, "target", "grpc://HOST:PORT, http://HOST:PORT or https://HOST:PORT", env="loadtest-target")
    add(lt, "rate", "requests per second (the first step with --sweep)", "200", float,
         env="loadtest-rate")
    add(lt, "duration", "seconds per run", "10", float, env="loadtest-duration")
    add(lt, "out", "report directory", "reports/loadtest", Path, env="loadtest-out")
    lt.add_argument("--stocks", default=None, help="comma-separated stock ids (default 0..7)")
    lt.add_argument("--ids-per-request", type=int, default=1, help="stock ids per request")
    lt.add_argument("--max-inflight", type=int, default=256,
                    help="in-flight bound, in all: shared out over --processes (over it: an error)")
    lt.add_argument("--timeout", type=float, default=2.0, help="per-request timeout, seconds")
    lt.add_argument("--grpc-connections", type=int, default=4,
                    help="gRPC connections the calls take turns on, in all (a gateway's workers share its "
                         "port by connection); shared out over --processes")
    lt.add_argument("--processes", default="1",
                    help="generator processes the schedule is split over, each with its own event loop and "
                         "connections (N, or auto: a quarter of the cores); the report gives the "
                         "generator's CPU a request and warns when a process nears a full core")
    lt.add_argument("--server-metrics", default="", metavar="URL",
                    help="the target's /metrics (e.g. http://127.0.0.1:8080/metrics): scraped before and "
                         "after the run, its handler time, event-loop lag and GC pauses over the run are "
                         "printed beside the client's figures and written to server.json")
    lt.add_argument("--sweep", action="store_true", help="raise the rate until p99 exceeds the target")
    lt.add_argument("--p99-target-ms", type=float, default=None, help="p99 target for --sweep")
    lt.add_argument("--sweep-steps", type=int, default=6, help="at most this many rates")
    _add_caller(lt, "engine's")
    lt.set_defaults(run=_loadtest)
