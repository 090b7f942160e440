"""`rtvol train|evaluate|export|promote|shadow`: build, score, compile and roll out model versions."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rtvol.cli.common import CommandError, add, optional_path

if TYPE_CHECKING:
    from rtvol.cli.common import Commands
    from rtvol.training.dataset import Dataset


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


def train_command(sub: Commands) -> None:
    train = sub.add_parser("train", help="train baselines, the MLP and the CNN, export to the "
                                         "repository",
                           description="Split by time_id (train/validation/test; the "
                                       "validation time_ids' first half early-stops the CNN, "
                                       "LightGBM and the MLP, the later half fits the "
                                       "ensemble's weights), fit naive, HAR and LightGBM "
                                       "baselines, an MLP on LightGBM's aggregates and the "
                                       "multi-task CNN, and export a new model version (ONNX, "
                                       "parity-checked) and rtvol_ensemble on it: CNN + "
                                       "LightGBM + MLP (+ HAR) in one ONNX graph.")
    add(train, "data", "Optiver-layout data directory", type=Path)
    add(train, "repo", "model repository", type=Path, env="model-repository")
    add(train, "epochs", "maximum CNN and MLP epochs (early stopping on the validation time_ids' "
                          "first half)", "60", int)
    add(train, "device", "cpu or cuda: where the CNN trains and the windows are built (cuda: the "
                          "feature service's Triton kernels)", "cpu")
    add(train, "seed", "random seed", "0", int)
    add(train, "model", "model name in the repository", "rtvol_cnn")
    train.add_argument("--report", type=Path, default=None,
                       help="also evaluate the new version and write this report.json")
    train.set_defaults(run=_train)


def evaluate_command(sub: Commands) -> None:
    ev = sub.add_parser(
        "evaluate", help="score all models on held-out time_ids, with bootstrap intervals",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Prints a table of each model's RMSPE with a bootstrap confidence interval\n"
                    "(held-out time_ids resampled with replacement, not rows: buckets of one\n"
                    "time_id share the market) and the paired differences CNN - LightGBM,\n"
                    "MLP - LightGBM and ensemble - each member. Writes report.json, a PNG of\n"
                    "predicted vs realized RV and REPORT_intervals.png (intervals as error\n"
                    "bars) beside it.\n\n"
                    "--seeds S1,S2,...: for each seed, synthetic data (--stocks x --time-ids,\n"
                    "that seed) and a model trained with that seed, under --work/seed<S>/\n"
                    "(reused when already there); per-seed rows plus the across-seed summary.",
        epilog="Example: rtvol evaluate --seeds 0,1,2 --work runs/seeds --out reports/seeds.json")
    add(ev, "data", "Optiver-layout data directory (not with --seeds)", type=Path,
         required=False)
    add(ev, "repo", "model repository (not with --seeds)", type=Path, env="model-repository",
         required=False)
    add(ev, "out", "report JSON path", "report.json", Path, env="report")
    add(ev, "model", "model name in the repository", "rtvol_cnn")
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
                    help="--seeds: maximum CNN and MLP epochs when training (default 60)")
    ev.set_defaults(run=_evaluate)


def export_command(sub: Commands) -> None:
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
    add(ex, "repo", "model repository", type=Path, env="model-repository")
    add(ex, "model", "model name in the repository", "rtvol_cnn")
    ex.add_argument("--version", type=int, default=None, help="model version (default: latest)")
    ex.add_argument("--tensorrt", action="store_true", help="build a TensorRT engine (needs a GPU)")
    ex.add_argument("--int8", action="store_true", help="INT8 engine with entropy calibration")
    optional_path(ex, "calibration-data", "Optiver-layout data for INT8 calibration windows", env="data")
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
    add(p, "repo", "model repository", "models", Path, env="model-repository")
    return p


def promote_command(sub: Commands) -> None:
    pr = _policy_parser(sub, "promote", "serve a model version (the repository's version policy)",
                        "Pin the version the sidecar and the gateway's tier 2 serve. Refuses a version "
                        "that does not exist or fails its digest check. A version running in shadow "
                        "stops being a shadow once promoted. 'latest' removes the pin: the newest "
                        "version that passes its digest check is served.")
    pr.add_argument("version", type=_version_arg, help="version number, or 'latest'")
    pr.set_defaults(run=_set_policy)


def shadow_command(sub: Commands) -> None:
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
