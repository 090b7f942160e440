"""`rtvol evaluate`: every model on the held-out time_ids, as a table, JSON and a plot.

It scores the exported artifacts (model.onnx through ONNX Runtime, the saved baselines),
not in-memory copies, so the numbers describe what is served.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from rtvol import repository
from rtvol.features.spec import DIRECTIONS, spec_hash
from rtvol.training import baselines, export
from rtvol.training.cnn import INPUT, OUTPUTS
from rtvol.training.dataset import Dataset
from rtvol.training.train import TrainConfig, split


class EvaluationError(RuntimeError):
    pass


def _cnn(version_dir: Path, windows: np.ndarray) -> dict[str, np.ndarray]:
    session = export.onnx_session((version_dir / repository.MODEL_FILE).read_bytes(), threads=2)
    outs = [session.run(list(OUTPUTS), {INPUT: windows[i:i + 4096]})
            for i in range(0, len(windows), 4096)]
    return {name: np.concatenate([o[k] for o in outs]) for k, name in enumerate(OUTPUTS)}


def evaluate(data: Dataset, repo: Path, name: str = repository.DEFAULT_MODEL,
             version: int | None = None) -> dict[str, Any]:
    version = repository.resolve(repo, name, version)
    meta = repository.read_metadata(repo, name, version)
    if meta.get("feature_spec_hash") != spec_hash():
        raise EvaluationError(f"model {name}/{version} was trained on feature spec "
                              f"{meta.get('feature_spec_hash')}, this code computes {spec_hash()}")
    fractions = {k: meta["training"][k] for k in ("val_fraction", "test_fraction")}
    parts = split(data, TrainConfig(**fractions))
    test, train = parts["test"], parts["train"]
    vdir = repository.version_dir(repo, name, version)
    har = baselines.Har(np.array(json.loads((vdir / "baselines/har.json").read_text())["coef"]))
    gbm = baselines.GradientBoosting.load(vdir / "baselines/lightgbm.txt")
    cnn = _cnn(vdir, test.windows)
    preds = {"naive": baselines.naive(test.windows), "har": har.predict(test.windows),
             "lightgbm": gbm.predict(test.windows), "cnn": cnn["rv"][:, 0]}
    if test.oracle is not None:
        preds["oracle"] = test.oracle
    report: dict[str, Any] = {
        "model": name, "version": version, "params": meta["params"],
        "rows": len(test), "time_ids": [int(test.time_id.min()), int(test.time_id.max())],
        "rmspe": {k: baselines.rmspe(test.target, p) for k, p in preds.items()},
    }
    if "oracle" in preds:
        report["rmspe_over_oracle"] = {k: v / report["rmspe"]["oracle"]
                                       for k, v in report["rmspe"].items()}
    direction, train_direction = test.direction(), train.direction()
    if direction is not None and train_direction is not None:
        majority = int(np.bincount(train_direction, minlength=3).argmax())
        report["direction_accuracy"] = {
            "cnn": float(np.mean(cnn["direction"].argmax(axis=1) == direction)),
            "majority": float(np.mean(direction == majority)),
            "majority_class": DIRECTIONS[majority],
        }
        momentum = test.momentum()
        report["momentum_corr"] = {"cnn": float(np.corrcoef(cnn["momentum"][:, 0], momentum)[0, 1])}
    report["_predictions"] = {"target": test.target, **preds}
    return report


def table(report: dict[str, Any]) -> str:
    rm = report["rmspe"]
    ratio = report.get("rmspe_over_oracle", {})
    lines = [f"held-out: {report['rows']} buckets, time_ids {report['time_ids'][0]}-"
             f"{report['time_ids'][1]}; model {report['model']} v{report['version']} "
             f"({report['params']:,} parameters)",
             f"{'model':<10} {'RMSPE':>8} {'/ oracle':>9}"]
    for k in ("naive", "har", "lightgbm", "cnn", "oracle"):
        if k in rm:
            r = f"{ratio[k]:>9.3f}" if k in ratio else f"{'-':>9}"
            lines.append(f"{k:<10} {rm[k]:>8.4f} {r}")
    if "direction_accuracy" in report:
        d = report["direction_accuracy"]
        lines.append(f"direction accuracy: cnn {d['cnn']:.3f}, majority class "
                     f"('{d['majority_class']}') {d['majority']:.3f}; momentum corr "
                     f"{report['momentum_corr']['cnn']:.3f}")
    else:
        lines.append("direction/momentum: no labels in this data (real Optiver files)")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    p = report["_predictions"]
    y = p["target"]
    keys = [k for k in ("naive", "lightgbm", "cnn", "oracle") if k in p]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 4.4), sharex=True, sharey=True)
    lo, hi = np.percentile(y, 0.5), np.percentile(y, 99.5)
    for ax, k in zip(np.atleast_1d(axes), keys, strict=True):
        ax.scatter(y, p[k], s=3, alpha=0.25, linewidths=0)
        ax.plot([lo, hi], [lo, hi], color="black", lw=1)
        ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi),
               title=f"{k}: RMSPE {report['rmspe'][k]:.3f}", xlabel="realized next-bucket RV")
        for axis in (ax.xaxis, ax.yaxis):  # 1-2-5 ticks as plain numbers; default minor labels collide
            axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(NullFormatter())
    np.atleast_1d(axes)[0].set_ylabel("predicted RV")
    fig.suptitle(f"Predicted vs realized RV on held-out time_ids ({report['rows']} buckets)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(report: dict[str, Any], out: Path) -> Path:
    """report.json at ``out``, the plot beside it; returns the plot's path."""
    out.parent.mkdir(parents=True, exist_ok=True)
    public = {k: v for k, v in report.items() if not k.startswith("_")}
    out.write_text(json.dumps(public, indent=2) + "\n")
    png = out.with_suffix(".png")
    plot(report, png)
    return png
