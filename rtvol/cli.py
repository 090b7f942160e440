"""The `rtvol` command. Imports stay inside handlers so `rtvol --help` starts fast.

Every flag falls back to an RTVOL_* environment variable (named in its help); flags win.
Service commands (`serve`, `bench`) forward their arguments to the component's own parser.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from training.dataset import Dataset


class CommandError(Exception):
    """A user-facing failure: printed without a traceback, exit status 2."""


def _env(flag: str, default: str | None = None) -> str | None:
    return os.environ.get("RTVOL_" + flag.upper().replace("-", "_"), default)


def _add(p: argparse.ArgumentParser, flag: str, help: str, default: str | None = None,
         type: Callable[[str], object] = str, env: str | None = None) -> None:
    """--flag with an RTVOL_<ENV> fallback; required when neither flag, env nor default."""
    env_name = env or flag
    value = _env(env_name, default)
    p.add_argument(f"--{flag}", type=type, default=None if value is None else type(value),
                   required=value is None,
                   help=f"{help} [env RTVOL_{env_name.upper().replace('-', '_')}"
                        + (f"; default {default}]" if default is not None else "]"))


# ---- handlers ---------------------------------------------------------------------------

def _synth(a: argparse.Namespace) -> None:
    from tqdm import tqdm

    from training import synth

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


def _load(data: Path) -> Dataset:
    from training import dataset, optiver

    try:
        return dataset.load(data)
    except optiver.DataError as e:
        raise CommandError(str(e)) from e


def _train(a: argparse.Namespace) -> None:
    from training import train

    if a.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise CommandError("--device cuda: no CUDA device visible to torch")
    data = _load(a.data)
    cfg = train.TrainConfig(epochs=a.epochs, seed=a.seed, device=a.device)
    version = train.run(data, a.repo, cfg, name=a.model)
    print(f"exported {a.model} version {version} to {a.repo}")
    if a.report:
        _evaluate_and_print(data, a.repo, a.model, version, a.report)


def _evaluate_and_print(data: Dataset, repo: Path, model: str, version: int | None,
                        out: Path) -> None:
    from rtvol.repository import RepositoryError
    from training import evaluate

    try:
        report = evaluate.evaluate(data, repo, model, version)
    except (RepositoryError, evaluate.EvaluationError) as e:
        raise CommandError(str(e)) from e
    print(evaluate.table(report))
    png = evaluate.write(report, out)
    print(f"report: {out}\nplot:   {png}")


def _evaluate(a: argparse.Namespace) -> None:
    _evaluate_and_print(_load(a.data), a.repo, a.model, a.version, a.out)


def _export(a: argparse.Namespace) -> None:
    from training import tensorrt_export

    try:
        print(tensorrt_export.run(a.repo, a.model, a.version, a.tensorrt or a.int8, a.int8,
                                  a.calibration_data))
    except tensorrt_export.ExportError as e:
        raise CommandError(str(e)) from e


def _forward(module: str) -> Callable[[argparse.Namespace], None]:
    """Hand the remaining arguments to ``module``'s own ``main(argv)``."""
    def run(a: argparse.Namespace) -> None:
        importlib.import_module(module).main(a.rest)
    return run


SERVICES = {"model": "services.model.main", "feature": "services.feature.main",
            "gateway": "services.gateway.main"}
BENCHES = {"model": "services.model.bench", "features": "services.feature.bench"}


def _dispatch(table: dict[str, str]) -> Callable[[argparse.Namespace], None]:
    def run(a: argparse.Namespace) -> None:
        try:
            module = importlib.import_module(table[a.component])
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith(table[a.component].rsplit(".", 1)[0]):
                raise CommandError(f"'{a.component}' is not built yet") from e
            raise
        module.main(a.rest)
    return run


# ---- parser -----------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtvol", description="Real-time volatility signals: data, training, serving.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Typical loop: rtvol data synth --out data && rtvol train --data data "
               "--repo models && rtvol evaluate --data data --repo models --out report.json")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="data tools").add_subparsers(dest="data_command",
                                                                   required=True, metavar="TOOL")
    synth = data.add_parser("synth", help="write a synthetic dataset in Optiver's layout",
                            description="Generate book/trade parquet partitions, train.csv and "
                                        "oracle.csv. Deterministic by --seed.")
    _add(synth, "out", "output directory", type=Path, env="data")
    _add(synth, "stocks", "number of stocks", "40", int)
    _add(synth, "time-ids", "number of 10-minute buckets per stock", "600", int)
    _add(synth, "seed", "random seed", "0", int)
    synth.set_defaults(run=_synth)

    train = sub.add_parser("train", help="train baselines and the CNN, export to the repository",
                           description="Split by time_id (train/validation/test), fit naive, "
                                       "HAR and LightGBM baselines and the multi-task CNN, "
                                       "and export a new model version (ONNX, parity-checked).")
    _add(train, "data", "Optiver-layout data directory", type=Path)
    _add(train, "repo", "model repository", type=Path, env="model-repository")
    _add(train, "epochs", "maximum CNN epochs (early stopping on validation)", "60", int)
    _add(train, "device", "cpu or cuda", "cpu")
    _add(train, "seed", "random seed", "0", int)
    _add(train, "model", "model name in the repository", "rtvol_cnn")
    train.add_argument("--report", type=Path, default=None,
                       help="also evaluate the new version and write this report.json")
    train.set_defaults(run=_train)

    ev = sub.add_parser("evaluate", help="score all models on held-out time_ids",
                        description="Prints a table; writes report.json and a PNG of predicted "
                                    "vs realized RV beside it.")
    _add(ev, "data", "Optiver-layout data directory", type=Path)
    _add(ev, "repo", "model repository", type=Path, env="model-repository")
    _add(ev, "out", "report JSON path", "report.json", Path, env="report")
    _add(ev, "model", "model name in the repository", "rtvol_cnn")
    ev.add_argument("--version", type=int, default=None, help="model version (default: latest)")
    ev.set_defaults(run=_evaluate)

    ex = sub.add_parser("export", help="re-validate a version's ONNX; build TensorRT engines",
                        description="Without --tensorrt: check that ONNX Runtime loads the version, "
                                    "batch 1..max_batch_size runs and outputs are finite. With "
                                    "--tensorrt: also build model.plan beside the ONNX (fp16, or "
                                    "INT8 calibrated on 512 training windows with --int8).")
    _add(ex, "repo", "model repository", type=Path, env="model-repository")
    _add(ex, "model", "model name in the repository", "rtvol_cnn")
    ex.add_argument("--version", type=int, default=None, help="model version (default: latest)")
    ex.add_argument("--tensorrt", action="store_true", help="build a TensorRT engine (needs a GPU)")
    ex.add_argument("--int8", action="store_true", help="INT8 engine with entropy calibration")
    data_env = _env("data")
    ex.add_argument("--calibration-data", type=Path, default=Path(data_env) if data_env else None,
                    help="Optiver-layout data for INT8 calibration windows [env RTVOL_DATA]")
    ex.set_defaults(run=_export)

    for name, table, helptext in (("serve", SERVICES, "run a service"),
                                  ("bench", BENCHES, "run a benchmark")):
        p = sub.add_parser(name, help=f"{helptext}: {'|'.join(table)} (args go to it; "
                                      "try: rtvol " + name + " COMPONENT --help)", add_help=True)
        p.add_argument("component", choices=sorted(table))
        p.add_argument("rest", nargs=argparse.REMAINDER, help="the component's own arguments")
        p.set_defaults(run=_dispatch(table))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except CommandError as e:
        print(f"rtvol: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
