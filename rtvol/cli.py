"""The `rtvol` command. Imports stay inside handlers so `rtvol --help` starts fast.

Every flag falls back to an RTVOL_* environment variable (named in its help); flags win.
Service commands (`serve`, `bench`) forward their arguments to the component's own parser.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rtvol.stack import Ports
    from rtvol.tls import ClientTLS
    from rtvol.training.dataset import Dataset

    Commands = argparse._SubParsersAction[argparse.ArgumentParser]


class CommandError(Exception):
    """A user-facing failure: printed without a traceback, exit status 2."""


def _env(flag: str, default: str | None = None) -> str | None:
    return os.environ.get("RTVOL_" + flag.upper().replace("-", "_"), default)


def _add(p: argparse.ArgumentParser, flag: str, help: str, default: str | None = None,
         type: Callable[[str], object] = str, env: str | None = None,
         required: bool = True) -> None:
    """--flag with an RTVOL_<ENV> fallback; required (unless told otherwise) when neither
    flag, env nor default."""
    env_name = env or flag
    value = _env(env_name, default)
    p.add_argument(f"--{flag}", type=type, default=None if value is None else type(value),
                   required=required and value is None,
                   help=f"{help} [env RTVOL_{env_name.upper().replace('-', '_')}"
                        + (f"; default {default}]" if default is not None else "]"))


# ---- handlers ---------------------------------------------------------------------------

def _synth(a: argparse.Namespace) -> None:
    from tqdm import tqdm

    from rtvol.training import synth

    cfg = synth.SynthConfig(stocks=a.stocks, time_ids=a.time_ids, seed=a.seed)
    if cfg.stocks < 1 or cfg.time_ids < 3:
        raise CommandError("--stocks must be >= 1 and --time-ids >= 3")
    chunks = -(-cfg.time_ids // cfg.chunk_time_ids)
    started = time.time()
    with tqdm(total=chunks, desc="synth", unit="chunk") as bar:
        gen = synth.generate(cfg, progress=lambda _: bar.update())
    synth.write(gen, a.out)
    rows = sum(t.num_rows for t in gen.book.values())
    print(f"wrote {a.out}: {cfg.stocks} stocks x {cfg.time_ids} time_ids, {rows:,} book rows, "
          f"seed {cfg.seed} ({time.time() - started:.0f} s)")


def _from_ticklog(a: argparse.Namespace) -> None:
    # by name, like `serve`: the shared library does not import services
    ticklog = importlib.import_module("rtvol.services.feature.ticklog")
    try:
        stocks = ticklog.to_optiver(a.ticklog, a.out)
    except ticklog.TickLogError as e:
        raise CommandError(str(e)) from e
    print(f"wrote {a.out}: {stocks} stocks in Optiver's layout (rtvol train --data {a.out})")


def _load(data: Path, device: str = "cpu") -> Dataset:
    from rtvol.training import dataset, optiver

    try:
        return dataset.load(data, device=device)
    except optiver.DataError as e:
        raise CommandError(str(e)) from e


def _train(a: argparse.Namespace) -> None:
    from rtvol.training import train

    if a.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise CommandError("--device cuda: no CUDA device visible to torch")
    data = _load(a.data, a.device)
    cfg = train.TrainConfig(epochs=a.epochs, seed=a.seed, device=a.device)
    version = train.run(data, a.repo, cfg, name=a.model)
    print(f"exported {a.model} version {version} to {a.repo}")
    if a.report:
        _evaluate_and_print(data, a.repo, a.model, version, a.report)


def _evaluate_and_print(data: Dataset, repo: Path, model: str, version: int | None,
                        out: Path, draws: int | None = None, level: float | None = None) -> None:
    from rtvol.repository import RepositoryError
    from rtvol.training import evaluate, intervals

    try:
        report = evaluate.evaluate(data, repo, model, version, draws or intervals.DEFAULT_DRAWS,
                                   level or intervals.DEFAULT_LEVEL)
    except (RepositoryError, evaluate.EvaluationError, ValueError) as e:
        raise CommandError(str(e)) from e
    print(evaluate.table(report))
    plots = evaluate.write(report, out)
    print(f"report: {out}\nplots:  {', '.join(map(str, plots))}")


def _seed_list(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--seeds: comma-separated integers, got {text!r}") from e


def _evaluate_seeds(a: argparse.Namespace) -> None:
    from rtvol.repository import RepositoryError
    from rtvol.training import evaluate, seeds

    plan = seeds.SeedPlan(a.work, a.stocks, a.time_ids, a.epochs, a.bootstrap, a.level, a.model)
    try:
        result = seeds.run(a.seeds, plan)
    except (RepositoryError, evaluate.EvaluationError, seeds.SeedsError, ValueError) as e:
        raise CommandError(str(e)) from e
    print(seeds.table(result))
    png = seeds.write(result, a.out)
    print(f"report: {a.out}\nplot:   {png}")


def _evaluate(a: argparse.Namespace) -> None:
    if a.seeds:
        return _evaluate_seeds(a)
    if a.data is None or a.repo is None:
        raise CommandError("evaluate needs --data and --repo (or --seeds with --work)")
    _evaluate_and_print(_load(a.data), a.repo, a.model, a.version, a.out, a.bootstrap, a.level)


def _export(a: argparse.Namespace) -> None:
    from rtvol.training import tensorrt_export

    try:
        print(tensorrt_export.run(a.repo, a.model, a.version, a.tensorrt or a.int8, a.int8,
                                  a.calibration_data))
    except tensorrt_export.ExportError as e:
        raise CommandError(str(e)) from e
    if a.compile:
        _compile(a.repo, a.model, a.version, a.precision.split(","))


def _compile(repo: Path, model: str, version: int | None, precisions: list[str]) -> None:
    import torch

    from rtvol import repository
    from rtvol.services.model.backends.cuda_graph import export_compiled
    from rtvol.services.model.backends.packed import PRECISIONS
    from rtvol.training.tensorrt_export import max_batch_size

    if unknown := [p for p in precisions if p not in PRECISIONS]:
        raise CommandError(f"--precision {','.join(unknown)}: choose from {','.join(PRECISIONS)}")
    if not torch.cuda.is_available():
        raise CommandError("--compile builds kernels for this machine's GPU: torch sees no CUDA device")
    v = repository.resolve(repo, model, version)
    vdir = repository.version_dir(repo, model, v)
    for precision in precisions:
        start = time.perf_counter()
        folder = export_compiled(vdir, precision, max_batch_size(repo, model))
        print(f"{precision} kernels for {torch.cuda.get_device_name()} compiled in "
              f"{time.perf_counter() - start:.0f} s: {folder}")
    repository.seal(repo, model, v)  # the sidecar serves the kernels only once their digests are recorded


def _version_arg(text: str) -> int | None:
    if text == "latest":
        return None
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a version number >= 1 or 'latest', got {text!r}")
    return int(text)


def _set_policy(a: argparse.Namespace) -> None:
    from rtvol import repository, version_policy

    try:
        if a.command == "promote":
            policy = version_policy.promote(a.repo, a.model, a.version)
        else:
            policy = version_policy.set_shadow(a.repo, a.model, None if a.clear else a.version)
    except repository.RepositoryError as e:
        raise CommandError(str(e)) from e
    served = "the newest verified version" if policy.serve is None else f"version {policy.serve}"
    shadow = "no shadow" if policy.shadow is None else f"version {policy.shadow} in shadow"
    print(f"{a.model}: serving {served}, {shadow} ({version_policy.policy_path(a.repo, a.model)}; "
          "the sidecar and gateway follow within their poll interval)")


def _new_key(a: argparse.Namespace) -> None:
    from rtvol import auth

    if a.role not in auth.ROLES or not a.name.isprintable() or " " in a.name or not a.name:
        raise CommandError(f"NAME must be one word and ROLE one of {sorted(auth.ROLES)}")
    key = auth.new_key()
    line = f"{a.name} {a.role} {auth.hash_key(key)}\n"
    if a.key_out:
        fd = os.open(a.key_out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never overwrite a key
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
    else:
        print(key)
    if a.keys_file:
        with open(a.keys_file, "a") as f:
            f.write(line)
    else:
        print(line, end="")


SERVICES = {"model": "rtvol.services.model.main", "feature": "rtvol.services.feature.main",
            "gateway": "rtvol.services.gateway.main",
            "embedded": "rtvol.services.embedded"}  # feature service + gateway in one process
BENCHES = {"model": "rtvol.loadtest.bench.model", "features": "rtvol.loadtest.bench.features",
           "gateway": "rtvol.loadtest.bench.gateway", "gpu": "rtvol.loadtest.bench.gpu",
           "pipeline": "rtvol.loadtest.bench.pipeline", "auth": "rtvol.loadtest.bench.auth",
           "ingest-devices": "rtvol.loadtest.bench.ingest_devices"}
# what the service images leave out (.dockerignore): a command that needs it says so in one line
NOT_IN_IMAGES = ("rtvol.loadtest",)


def _component(table: dict[str, str]) -> Callable[[argparse.Namespace], None]:
    """Hand the remaining arguments to the chosen component's own ``main(argv)``."""
    def run(a: argparse.Namespace) -> None:
        importlib.import_module(table[a.component]).main(a.rest)
    return run


# ---- local stack, feed, load ------------------------------------------------------------

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
          f"feature service 127.0.0.1:{ports.feature}; logs and pids in {a.run_dir}")
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


def _buckets(text: str | None) -> range | None:
    if not text:
        return None
    first, _, count = text.partition(":")
    return range(int(first), int(first) + int(count))


def _feed(a: argparse.Namespace) -> None:
    import grpc

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
                                 a.ws_wait_timeout, a.ws_drain, *_caller(a))
        except optiver.DataError as e:
            raise CommandError(str(e)) from e
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
    _add(p, "api-key-file", f"file holding the {role} API key (when the service checks keys)", "")
    _add(p, "tls-ca", "CA bundle that signed the service's certificate: call it over TLS", "")
    _add(p, "tls-cert", "client certificate (mTLS)", "")
    _add(p, "tls-key", "key of --tls-cert", "")


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
    from rtvol.loadtest import report, run

    if not a.target.startswith(("grpc://", "http://", "https://")):
        raise CommandError("--target must be grpc://HOST:PORT, http://HOST:PORT or https://HOST:PORT")
    stocks = [int(s) for s in a.stocks.split(",")] if a.stocks else list(range(8))
    plan = run.Plan(a.target, a.duration, stocks, a.ids_per_request, a.max_inflight, a.timeout, *_caller(a),
                    grpc_connections=a.grpc_connections)
    if a.sweep:
        if a.p99_target_ms is None:
            raise CommandError("--sweep needs --p99-target-ms")
        doc = run.sweep(plan, a.rate, a.p99_target_ms, a.out, a.sweep_steps)
        print(f"highest rate with p99 <= {a.p99_target_ms:g} ms: {doc['best_rate']:,.0f}/s "
              f"({a.out / 'sweep.json'})")
        return
    s = run.once(plan, a.rate, a.out)
    print(report.line(s))
    print("report: " + ", ".join(s["files"]))


# ---- parser: one function per command ----------------------------------------------------

def _optional_path(p: argparse.ArgumentParser, flag: str, help: str, env: str | None = None) -> None:
    """--flag PATH, None when neither the flag nor its RTVOL_<ENV> variable is given."""
    env_name = env or flag
    value = _env(env_name)
    p.add_argument(f"--{flag}", type=Path, default=Path(value) if value else None,
                   help=f"{help} [env RTVOL_{env_name.upper().replace('-', '_')}]")


def _data_command(sub: Commands) -> None:
    tools = sub.add_parser("data", help="data tools").add_subparsers(dest="data_command", required=True,
                                                                     metavar="TOOL")
    synth = tools.add_parser("synth", help="write a synthetic dataset in Optiver's layout",
                             description="Generate book/trade parquet partitions, train.csv and "
                                         "oracle.csv. Deterministic by --seed.")
    _add(synth, "out", "output directory", type=Path, env="data")
    _add(synth, "stocks", "number of stocks", "40", int)
    _add(synth, "time-ids", "number of 10-minute buckets per stock", "600", int)
    _add(synth, "seed", "random seed", "0", int)
    synth.set_defaults(run=_synth)
    ft = tools.add_parser(
        "from-ticklog", help="turn the feature service's tick log into training data",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Convert a tick log (the ticks-*.arrow files the feature service writes with\n"
                    "--ticklog-dir) into Optiver's layout: book/trade parquet per stock and train.csv,\n"
                    "which `rtvol train --data OUT` reads.",
        epilog="Only complete files are read: a file still being written (.arrow.part) is skipped,\n"
               "so stop the feature service (it closes its file) or wait for it to rotate. Each\n"
               "bucket's target is the realized volatility of the next bucket, so a stock's last\n"
               "logged bucket gets no row in train.csv.\n\nExample:\n"
               "  rtvol serve feature --ticklog-dir ticks ...\n"
               "  rtvol data from-ticklog --ticklog ticks --out data/live\n"
               "  rtvol train --data data/live --repo models")
    _add(ft, "ticklog", "tick-log directory (the feature service's --ticklog-dir)", type=Path,
         env="ticklog-dir")
    _add(ft, "out", "output directory (Optiver's layout)", type=Path, env="data")
    ft.set_defaults(run=_from_ticklog)


def _train_command(sub: Commands) -> None:
    train = sub.add_parser("train", help="train baselines and the CNN, export to the repository",
                           description="Split by time_id (train/validation/test), fit naive, "
                                       "HAR and LightGBM baselines and the multi-task CNN, "
                                       "and export a new model version (ONNX, parity-checked) "
                                       "and rtvol_ensemble on it: CNN + LightGBM (+ HAR) in one "
                                       "ONNX graph, weights fit on the validation time_ids.")
    _add(train, "data", "Optiver-layout data directory", type=Path)
    _add(train, "repo", "model repository", type=Path, env="model-repository")
    _add(train, "epochs", "maximum CNN epochs (early stopping on validation)", "60", int)
    _add(train, "device", "cpu or cuda: where the CNN trains and the windows are built (cuda: the "
                          "feature service's Triton kernels)", "cpu")
    _add(train, "seed", "random seed", "0", int)
    _add(train, "model", "model name in the repository", "rtvol_cnn")
    train.add_argument("--report", type=Path, default=None,
                       help="also evaluate the new version and write this report.json")
    train.set_defaults(run=_train)


def _evaluate_command(sub: Commands) -> None:
    ev = sub.add_parser(
        "evaluate", help="score all models on held-out time_ids, with bootstrap intervals",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Prints a table of each model's RMSPE with a bootstrap confidence interval\n"
                    "(held-out time_ids resampled with replacement, not rows: buckets of one\n"
                    "time_id share the market) and the paired differences CNN - LightGBM and\n"
                    "ensemble - each member. Writes report.json, a PNG of predicted vs realized\n"
                    "RV and REPORT_intervals.png (intervals as error bars) beside it.\n\n"
                    "--seeds S1,S2,...: for each seed, synthetic data (--stocks x --time-ids,\n"
                    "that seed) and a model trained with that seed, under --work/seed<S>/\n"
                    "(reused when already there); per-seed rows plus the across-seed summary.",
        epilog="Example: rtvol evaluate --seeds 0,1,2 --work runs/seeds --out reports/seeds.json")
    _add(ev, "data", "Optiver-layout data directory (not with --seeds)", type=Path,
         required=False)
    _add(ev, "repo", "model repository (not with --seeds)", type=Path, env="model-repository",
         required=False)
    _add(ev, "out", "report JSON path", "report.json", Path, env="report")
    _add(ev, "model", "model name in the repository", "rtvol_cnn")
    ev.add_argument("--version", type=int, default=None, help="model version (default: latest)")
    ev.add_argument("--bootstrap", type=int, default=2000,
                    help="bootstrap draws over time_ids (default 2000)")
    ev.add_argument("--level", type=float, default=0.95, help="confidence level (default 0.95)")
    ev.add_argument("--seeds", type=_seed_list, default=None,
                    help="comma-separated seeds: data generated and a model trained per seed")
    ev.add_argument("--work", type=Path, default=Path("runs/seeds"),
                    help="--seeds: folder for each seed's data and models (default runs/seeds)")
    ev.add_argument("--stocks", type=int, default=50, help="--seeds: stocks (default 50)")
    ev.add_argument("--time-ids", type=int, default=800, help="--seeds: time_ids (default 800)")
    ev.add_argument("--epochs", type=int, default=60,
                    help="--seeds: maximum CNN epochs when training (default 60)")
    ev.set_defaults(run=_evaluate)


def _export_command(sub: Commands) -> None:
    ex = sub.add_parser("export", help="re-validate a version's ONNX; build TensorRT engines, GPU kernels",
                        description="Without --tensorrt: check that ONNX Runtime loads the version, "
                                    "batch 1..max_batch_size runs and outputs are finite. With "
                                    "--tensorrt: also build model.plan beside the ONNX (fp16, or "
                                    "INT8 calibrated on 512 training windows with --int8). With "
                                    "--compile: also build the sidecar's CUDA-graph kernels for "
                                    "this GPU, so it loads them at start instead of compiling. Then "
                                    "record the sha256 of each file of the version in its metadata.json "
                                    "(the sidecar serves only versions whose files match); a version "
                                    "whose files no longer match what was recorded is refused.")
    _add(ex, "repo", "model repository", type=Path, env="model-repository")
    _add(ex, "model", "model name in the repository", "rtvol_cnn")
    ex.add_argument("--version", type=int, default=None, help="model version (default: latest)")
    ex.add_argument("--tensorrt", action="store_true", help="build a TensorRT engine (needs a GPU)")
    ex.add_argument("--int8", action="store_true", help="INT8 engine with entropy calibration")
    _optional_path(ex, "calibration-data", "Optiver-layout data for INT8 calibration windows", env="data")
    ex.add_argument("--compile", action="store_true",
                    help="also compile the CUDA-graph backend's kernels for this GPU and store "
                         "TorchInductor's cache of them in <version>/compiled/: the sidecar then "
                         "starts in seconds instead of compiling at every start (needs the kind "
                         "of GPU it will serve on)")
    ex.add_argument("--precision", default="fp16",
                    help="--compile: the sidecar's --precision values to build, comma-separated "
                         "(fp16, bf16, fp32; default fp16)")
    ex.set_defaults(run=_export)


def _policy_parser(sub: Commands, name: str, help: str, description: str) -> argparse.ArgumentParser:
    """`rtvol promote|shadow MODEL ...`: both change the model's version policy."""
    p = sub.add_parser(name, help=help, description=description + " Written atomically to "
                       "<repo>/MODEL/version_policy.json; the sidecar and the gateway follow it within "
                       "their poll interval (2 s), without a restart.")
    p.add_argument("model", help="model name in the repository, e.g. rtvol_cnn")
    _add(p, "repo", "model repository", "models", Path, env="model-repository")
    return p


def _promote_command(sub: Commands) -> None:
    pr = _policy_parser(sub, "promote", "serve a model version (the repository's version policy)",
                        "Pin the version the sidecar and the gateway's tier 2 serve. Refuses a version "
                        "that does not exist or fails its digest check. A version running in shadow "
                        "stops being a shadow once promoted. 'latest' removes the pin: the newest "
                        "version that passes its digest check is served.")
    pr.add_argument("version", type=_version_arg, help="version number, or 'latest'")
    pr.set_defaults(run=_set_policy)


def _shadow_command(sub: Commands) -> None:
    sh = _policy_parser(sub, "shadow", "run a model version in shadow: computed and scored, not served",
                        "The sidecar keeps VERSION loaded beside the served one, and the gateway sends "
                        "every tier-1 batch to it as well, off the signal path: its signals are scored "
                        "live (role=shadow) and never served. Refuses a version that does not exist, "
                        "fails its digest check or is the served one. --clear ends the shadow.")
    sh.add_argument("version", type=_version_arg, nargs="?", default=None, help="version number")
    sh.add_argument("--clear", action="store_true", help="no shadow version")
    sh.set_defaults(run=_shadow)


def _shadow(a: argparse.Namespace) -> None:
    if a.clear == (a.version is not None):
        raise CommandError("rtvol shadow: give a VERSION or --clear (not both)")
    _set_policy(a)


def _keys_command(sub: Commands) -> None:
    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="keys_command", required=True,
                                                                  metavar="TOOL")
    nk = keys.add_parser("new", help="make an API key and its keys-file line",
                         description="A random 256-bit key for NAME with ROLE (engine: read signals, "
                                     "feeder: Ingest, operator: admin and metrics, service: one rtvol "
                                     "service calling another). Prints the key, or writes it to a new "
                                     "file (mode 600), and prints the 'NAME ROLE sha256:HEX' line for the "
                                     "services' --api-keys-file, or appends it there. Only the hash is "
                                     "kept at rest; a lost key is replaced, not recovered.")
    nk.add_argument("name", help="who holds the key (one word)")
    nk.add_argument("role", help="engine | feeder | operator | service")
    nk.add_argument("--key-out", type=Path, default=None, help="write the key to this new file")
    nk.add_argument("--keys-file", type=Path, default=None, help="append the hashed line to this file")
    nk.set_defaults(run=_new_key)


RUN_DIR = ("run-dir", "run directory: logs, pids, stack.json", "runs/local", Path)


def _up_command(sub: Commands) -> None:
    upp = sub.add_parser("up", help="start the whole stack as local processes",
                         description="redis-server, feature service, model sidecar, gateway; each ready "
                                     "before the next starts. Without redis-server (or with --no-redis) "
                                     "the feature service and gateway share one process and its "
                                     "in-process feature store.")
    _add(upp, *RUN_DIR)
    _add(upp, "repo", "model repository", "models", Path, env="model-repository")
    _optional_path(upp, "data", "Optiver-layout data: the stock universe is sized from it")
    upp.add_argument("--stocks", type=int, default=None, help="stock universe size (default: from --data, "
                                                              "else 128)")
    upp.add_argument("--gateway-port", type=int, default=None, help="gateway HTTP port (default 8080)")
    upp.add_argument("--base-port", type=int, default=None,
                     help="use 7 consecutive ports from here instead of the defaults")
    upp.add_argument("--free-ports", action="store_true", help="pick free loopback ports (tests)")
    upp.add_argument("--no-redis", action="store_true",
                     default=(_env("no-redis") or "").lower() in ("1", "true", "yes"),
                     help="no redis-server even when installed: feature service and gateway in one process "
                          "with the in-process store (the default without the binary) [env RTVOL_NO_REDIS]")
    upp.add_argument("--tls", action="store_true",
                     default=(_env("up-tls") or "").lower() in ("1", "true", "yes"),
                     help="a fresh local CA and certificates in RUN_DIR/pki; every listener TLS-only, mTLS "
                          "between gateway, feature service and sidecar [env RTVOL_UP_TLS]")
    upp.add_argument("--gateway-workers", type=int, default=1,
                     help="gateway worker processes (default 1: the stack's processes share this machine's "
                          "cores, and each worker infers every changed window; 0 = one per core)")
    _add(upp, "backend", "model sidecar backend", "auto", env="model-backend")
    _add(upp, "timeout", "readiness deadline per component, seconds", "90", float, env="up-timeout")
    upp.set_defaults(run=_up)


def _down_command(sub: Commands) -> None:
    downp = sub.add_parser("down", help="stop the local stack (SIGTERM, then SIGKILL after --timeout)")
    _add(downp, *RUN_DIR)
    _add(downp, "timeout", "seconds to wait for each component to drain", "15", float, env="down-timeout")
    downp.set_defaults(run=_down)


def _status_command(sub: Commands) -> None:
    st = sub.add_parser("status", help="each component's pid, port and health (exit 2 when unhealthy)")
    _add(st, *RUN_DIR)
    st.set_defaults(run=_status)


def _supervise_command(sub: Commands) -> None:
    sv = sub.add_parser("supervise", help="restart the components of a stack that die (`up` starts this)")
    _add(sv, *RUN_DIR)
    sv.set_defaults(run=_supervise)


def _feed_command(sub: Commands) -> None:
    fd = sub.add_parser("feed", help="replay market data into the feature service",
                        description="Optiver-layout updates merged by event time, sent on one Ingest "
                                    "stream in column batches, paced by a token bucket.")
    _optional_path(fd, "data", "Optiver-layout data directory (or --synthetic)")
    _add(fd, "target", "feature service HOST:PORT; replicas: HOST:PORT,HOST:PORT,... in ordinal order "
         "(each gets the stocks it owns: stock id mod replicas)", "127.0.0.1:50052", env="feature-url")
    _add(fd, "rate", "updates per second (0: as fast as possible)", "0", float, env="feed-rate")
    _add(fd, "batch", "updates per message", "2000", int, env="feed-batch")
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
    ws_port = _env("ws-port")
    fd.add_argument("--ws-port", type=int, default=int(ws_port) if ws_port else None,
                    help="serve the raw ticks to WebSocket subscribers on this port (0: a free one), "
                         "ws://HOST:PORT/ticks?stocks=1,2&format=binary|json [env RTVOL_WS_PORT]")
    _add(fd, "ws-host", "WebSocket listen address", "127.0.0.1")
    _add(fd, "ws-queue", "frames a subscriber may have waiting before its overflow policy applies",
         "64", int)
    _add(fd, "ws-overflow", "full subscriber queue: drop_oldest or disconnect (a subscriber may choose "
                            "with ?overflow=)", "drop_oldest")
    _add(fd, "ws-wait", "wait for this many WebSocket subscribers before feeding", "0", int)
    _add(fd, "ws-wait-timeout", "at most this long, seconds (then feed anyway)", "30", float)
    _add(fd, "ws-drain", "when the feed ends, seconds subscribers get to take what is queued", "5", float)
    _add_caller(fd, "feeder's")
    fd.set_defaults(run=_feed)


def _loadtest_command(sub: Commands) -> None:
    lt = sub.add_parser("loadtest", help="open-loop load on the gateway with latency reports",
                        description="Requests start on a fixed schedule; latency counts from the "
                                    "intended start. Writes report.json and PNG plots to --out.")
    _add(lt, "target", "grpc://HOST:PORT, http://HOST:PORT or https://HOST:PORT", env="loadtest-target")
    _add(lt, "rate", "requests per second (the first step with --sweep)", "200", float,
         env="loadtest-rate")
    _add(lt, "duration", "seconds per run", "10", float, env="loadtest-duration")
    _add(lt, "out", "report directory", "reports/loadtest", Path, env="loadtest-out")
    lt.add_argument("--stocks", default=None, help="comma-separated stock ids (default 0..7)")
    lt.add_argument("--ids-per-request", type=int, default=1, help="stock ids per request")
    lt.add_argument("--max-inflight", type=int, default=256, help="in-flight bound (over it: an error)")
    lt.add_argument("--timeout", type=float, default=2.0, help="per-request timeout, seconds")
    lt.add_argument("--grpc-connections", type=int, default=4,
                    help="gRPC connections the calls take turns on (a gateway's workers share its port "
                         "by connection)")
    lt.add_argument("--sweep", action="store_true", help="raise the rate until p99 exceeds the target")
    lt.add_argument("--p99-target-ms", type=float, default=None, help="p99 target for --sweep")
    lt.add_argument("--sweep-steps", type=int, default=6, help="at most this many rates")
    _add_caller(lt, "engine's")
    lt.set_defaults(run=_loadtest)


def _components_command(sub: Commands, name: str, table: dict[str, str], what: str) -> None:
    """`rtvol serve|bench COMPONENT ...`: the component parses the rest itself."""
    p = sub.add_parser(name, help=f"{what}: {'|'.join(table)} (args go to it; "
                                  f"try: rtvol {name} COMPONENT --help)")
    p.add_argument("component", choices=sorted(table))
    p.add_argument("rest", nargs=argparse.REMAINDER, help="the component's own arguments")
    p.set_defaults(run=_component(table))


def _serve_command(sub: Commands) -> None:
    _components_command(sub, "serve", SERVICES, "run a service")


def _bench_command(sub: Commands) -> None:
    _components_command(sub, "bench", BENCHES, "run a benchmark")


COMMANDS = (_data_command, _train_command, _evaluate_command, _export_command, _promote_command,
            _shadow_command, _keys_command, _up_command,
            _down_command, _status_command, _supervise_command, _feed_command, _loadtest_command,
            _serve_command, _bench_command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtvol", description="Real-time volatility signals: data, training, serving.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Typical loop: rtvol data synth --out data && rtvol train --data data "
               "--repo models && rtvol evaluate --data data --repo models --out report.json")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in COMMANDS:
        add_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except CommandError as e:
        print(f"rtvol: error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        if e.name not in NOT_IN_IMAGES:
            raise
        print(f"rtvol: error: `rtvol {args.command}` needs {e.name}, which is not installed here "
              "(the container images carry the services only): run it from a source checkout",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
