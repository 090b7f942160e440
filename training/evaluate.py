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
from rtvol.training import baselines, ensemble, export, intervals, mlp
from rtvol.training.dataset import Dataset
from rtvol.training.train import TrainConfig, split


class EvaluationError(RuntimeError):
    pass


def paired_differences(models: list[str]) -> list[tuple[str, str]]:
    """The comparisons the report's intervals answer: CNN and MLP vs LightGBM, the ensemble
    vs each of its members."""
    pairs = [("cnn", "lightgbm")] if {"cnn", "lightgbm"} <= set(models) else []
    if {"mlp", "lightgbm"} <= set(models):
        pairs.append(("mlp", "lightgbm"))
    if "ensemble" in models:
        pairs += [("ensemble", m) for m in ("cnn", "lightgbm", "mlp", "har") if m in models]
    return pairs


def evaluate(data: Dataset, repo: Path, name: str = repository.DEFAULT_MODEL,
             version: int | None = None, draws: int = intervals.DEFAULT_DRAWS,
             level: float = intervals.DEFAULT_LEVEL) -> dict[str, Any]:
    version = repository.resolve(repo, name, version)
    meta = repository.read_metadata(repo, name, version)
    if meta.get("feature_spec_hash") != spec_hash():
        raise EvaluationError(f"model {name}/{version} was trained on feature spec "
                              f"{meta.get('feature_spec_hash')}, this code computes {spec_hash()}")
    fractions = {k: meta["training"][k] for k in ("val_fraction", "test_fraction")}
    parts = split(data, TrainConfig(**fractions))
    test, train = parts["test"], parts["train"]
    vdir = repository.version_dir(repo, name, version)
    har, gbm = baselines.load(vdir)
    cnn = export.run((vdir / repository.MODEL_FILE).read_bytes(), test.windows)
    preds = {"naive": baselines.naive(test.windows), "har": har.predict(test.windows),
             "lightgbm": gbm.predict(test.windows), "cnn": cnn["rv"][:, 0]}
    net = mlp.load(vdir)
    if net is not None:  # versions trained before the MLP member have none
        preds["mlp"] = net.predict(test.windows)
    served = ensemble.served_by(repo, name, version)
    if served is not None:
        onnx_model = (repository.version_dir(repo, ensemble.MODEL, served)
                      / repository.MODEL_FILE).read_bytes()
        preds["ensemble"] = export.run(onnx_model, test.windows)["rv"][:, 0]
    if test.oracle is not None:
        preds["oracle"] = test.oracle
    report: dict[str, Any] = {
        "model": name, "version": version, "params": meta["params"],
        "ensemble": None if served is None else {
            "model": ensemble.MODEL, "version": served,
            **{k: v for k, v in repository.read_metadata(repo, ensemble.MODEL, served)[
                "ensemble"].items() if k in ("weights", "fit_time_ids")}},
        "rows": len(test), "time_ids": [int(test.time_id.min()), int(test.time_id.max())],
        "rmspe": {k: baselines.rmspe(test.target, p) for k, p in preds.items()},
        "intervals": intervals.bootstrap(test.target, preds, test.time_id,
                                         paired_differences(list(preds)), draws, level),
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


MODEL_ORDER = ("naive", "har", "lightgbm", "mlp", "cnn", "ensemble", "oracle")


def verdict(diff: dict[str, float]) -> str:
    """What a paired interval supports, in words."""
    if diff["high"] < 0:
        return "first is better"
    if diff["low"] > 0:
        return "second is better"
    return "no clear difference"


def _bracket(interval: dict[str, float], sign: str = "") -> str:
    return f"[{interval['low']:{sign}.4f}, {interval['high']:{sign}.4f}]"


def differences_table(iv: dict[str, Any]) -> list[str]:
    lines = [f"paired differences ({iv['level']:.0%} CI, {iv['draws']} bootstrap draws "
             f"of {iv['time_ids']} time_ids):"]
    for pair, d in iv["difference"].items():
        lines.append(f"  {pair:<20} {d['estimate']:>+8.4f}  {_bracket(d, '+')}"
                     f"  {verdict(d)}")
    return lines


def table(report: dict[str, Any]) -> str:
    rm = report["rmspe"]
    iv = report.get("intervals")  # absent from reports written before intervals existed
    ci = iv["rmspe"] if iv else {}
    ratio = report.get("rmspe_over_oracle", {})
    level = f"{iv['level']:.0%} CI" if iv else "CI"
    lines = [f"held-out: {report['rows']} buckets, time_ids {report['time_ids'][0]}-"
             f"{report['time_ids'][1]}; model {report['model']} v{report['version']} "
             f"({report['params']:,} parameters)",
             f"{'model':<10} {'RMSPE':>8} {level:>18} {'/ oracle':>9}"]
    for k in MODEL_ORDER:
        if k in rm:
            r = f"{ratio[k]:>9.3f}" if k in ratio else f"{'-':>9}"
            bracket = _bracket(ci[k]) if k in ci else "-"
            lines.append(f"{k:<10} {rm[k]:>8.4f} {bracket:>18} {r}")
    if report.get("ensemble"):
        e = report["ensemble"]
        fit = e.get("fit_time_ids")  # absent before the stop / blend split
        where = f"time_ids {fit[0]}-{fit[1]}" if fit else "validation"
        lines.append(f"ensemble: {e['model']} v{e['version']}, weights fit on {where}: "
                     + ", ".join(f"{m} {w:.3f}" for m, w in e["weights"].items()))
    if iv:
        lines += differences_table(iv)
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


def plot_intervals(runs: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    """RMSPE per model and the paired differences, each with its interval as an error bar;
    one marker per run (a seed), side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(runs.values()))
    models = [m for m in MODEL_ORDER if m in first["rmspe"] and m != "naive"]  # naive: off scale
    pairs = list(first["difference"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6),
                                      gridspec_kw={"width_ratios": [len(models), max(len(pairs), 1)]})
    width = 0.7 / len(runs)
    for j, (label, iv) in enumerate(runs.items()):
        offset = (j - (len(runs) - 1) / 2) * width
        for ax, keys, block in ((left, models, iv["rmspe"]), (right, pairs, iv["difference"])):
            est = np.array([block[k]["estimate"] for k in keys])
            err = np.array([[block[k]["estimate"] - block[k]["low"] for k in keys],
                            [block[k]["high"] - block[k]["estimate"] for k in keys]])
            ax.errorbar(np.arange(len(keys)) + offset, est, yerr=err, fmt="o", capsize=3,
                        color=f"C{j}", label=label)
    left.set(xticks=range(len(models)), xticklabels=models, ylabel="RMSPE on held-out time_ids")
    right.axhline(0, color="black", lw=1)
    right.set(xticks=range(len(pairs)), xticklabels=pairs, ylabel="paired RMSPE difference")
    plt.setp(right.get_xticklabels(), rotation=15, ha="right")
    for ax in (left, right):
        ax.grid(axis="y", alpha=0.3)
    if len(runs) > 1:
        left.legend(fontsize=8)
    fig.suptitle(f"{title} ({first['level']:.0%} bootstrap intervals over time_ids, "
                 f"{first['draws']} draws)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(report: dict[str, Any], out: Path) -> list[Path]:
    """report.json at ``out``, the plots beside it; returns the plots' paths."""
    out.parent.mkdir(parents=True, exist_ok=True)
    public = {k: v for k, v in report.items() if not k.startswith("_")}
    out.write_text(json.dumps(public, indent=2) + "\n")
    png, bars = out.with_suffix(".png"), out.with_name(out.stem + "_intervals.png")
    plot(report, png)
    plot_intervals({f"v{report['version']}": report["intervals"]}, bars,
                   f"{report['model']} v{report['version']}")
    return [png, bars]
