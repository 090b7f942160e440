"""`rtvol evaluate --seeds`: the whole comparison repeated over seeds.

Each seed gets its own synthetic market AND its own training seed (``WORK/seed<S>/data``,
``WORK/seed<S>/models``): that is what a new user changing ``--seed`` sees, and the spread
across seeds then holds both sources of variation, a different market and a different
initialisation. The bootstrap interval of one seed covers only the sampling of its test
time_ids; the across-seed summary shows whether a conclusion survives a new market.

Data and models already in WORK for the same size, seed and epochs are reused, so a
long run can be resumed or re-reported without training again; an ensemble from an older
build (ensemble.BUILD) is rebuilt on the same CNN version, which takes seconds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rtvol import repository
from rtvol.training import dataset, ensemble, evaluate, intervals, mlp, synth, train

SYNTH_FILE = "synth.json"  # the generator's settings, beside the data it wrote


class SeedsError(RuntimeError):
    pass


@dataclass(frozen=True)
class SeedPlan:
    work: Path
    stocks: int = 50
    time_ids: int = 800
    epochs: int = train.TrainConfig.epochs
    draws: int = intervals.DEFAULT_DRAWS
    level: float = intervals.DEFAULT_LEVEL
    model: str = repository.DEFAULT_MODEL


def _data(seed: int, plan: SeedPlan, say: Callable[[str], None]) -> Path:
    out = plan.work / f"seed{seed}" / "data"
    cfg = synth.SynthConfig(stocks=plan.stocks, time_ids=plan.time_ids, seed=seed)
    want = json.loads(json.dumps(asdict(cfg)))  # as it reads back (tuples -> lists)
    marker = out / SYNTH_FILE
    if marker.is_file():
        have = json.loads(marker.read_text())
        if have != want:
            raise SeedsError(f"{out} holds data for {have}, not {want}: use another --work")
        return out
    if out.exists() and any(out.iterdir()):
        raise SeedsError(f"{out} exists without {SYNTH_FILE}: use another --work")
    say(f"seed {seed}: generating {plan.stocks} stocks x {plan.time_ids} time_ids")
    synth.write(synth.generate(cfg), out)
    marker.write_text(json.dumps(want, indent=2) + "\n")
    return out


def _trained_version(repo: Path, seed: int, plan: SeedPlan) -> int | None:
    for version in reversed(repository.versions(repo, plan.model)):
        cfg = repository.read_metadata(repo, plan.model, version)["training"]
        # stop_fraction: a version without it was early-stopped on every validation time_id;
        # one without the MLP was trained before that member existed
        if ((cfg["seed"], cfg["epochs"], cfg.get("stop_fraction")) == (
                seed, plan.epochs, train.TrainConfig.stop_fraction)
                and mlp.load(repository.version_dir(repo, plan.model, version)) is not None):
            return version
    return None


def evaluate_seed(seed: int, plan: SeedPlan, say: Callable[[str], None],
                  progress: bool = True) -> dict[str, Any]:
    data_dir = _data(seed, plan, say)
    data = dataset.load(data_dir, progress=progress)
    repo = plan.work / f"seed{seed}" / "models"
    version = _trained_version(repo, seed, plan)
    if version is None:
        say(f"seed {seed}: training ({plan.epochs} epochs at most)")
        version = train.run(data, repo, train.TrainConfig(epochs=plan.epochs, seed=seed),
                            plan.model, progress)
    if ensemble.served_by(repo, plan.model, version, ensemble.BUILD) is None:  # none, or old
        say(f"seed {seed}: building the ensemble on {plan.model} v{version}")
        fractions = repository.read_metadata(repo, plan.model, version)["training"]
        cfg = train.TrainConfig(**{k: fractions[k] for k in ("val_fraction", "test_fraction",
                                                              "stop_fraction")})
        ensemble.export_version(repo, train.split(data, cfg)["blend"], plan.model, version)
    report = evaluate.evaluate(data, repo, plan.model, version, plan.draws, plan.level)
    return {k: v for k, v in report.items() if not k.startswith("_")}


def summarise(per_seed: dict[int, dict[str, Any]], level: float) -> dict[str, Any]:
    """Across seeds: each model's RMSPE and each paired difference (mean, sd, t interval),
    and on how many seeds the difference's own interval lies below / above zero."""
    reports = list(per_seed.values())
    models = [m for m in evaluate.MODEL_ORDER if all(m in r["rmspe"] for r in reports)]
    pairs = [p for p in reports[0]["intervals"]["difference"]
             if all(p in r["intervals"]["difference"] for r in reports)]
    diffs: dict[str, Any] = {}
    for pair in pairs:
        each = [r["intervals"]["difference"][pair] for r in reports]
        diffs[pair] = {**intervals.across_seeds([d["estimate"] for d in each], level),
                       "seeds_first_better": sum(d["high"] < 0 for d in each),
                       "seeds_second_better": sum(d["low"] > 0 for d in each)}
    return {"seeds": list(per_seed), "level": level,
            "rmspe": {m: intervals.across_seeds([r["rmspe"][m] for r in reports], level)
                      for m in models},
            "difference": diffs}


def run(seeds: list[int], plan: SeedPlan, say: Callable[[str], None] = print,
        progress: bool = True) -> dict[str, Any]:
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise SeedsError(f"--seeds needs at least two distinct seeds, got {seeds}")
    per_seed = {s: evaluate_seed(s, plan, say, progress) for s in seeds}
    return {"plan": {**asdict(plan), "work": str(plan.work)},
            "per_seed": {str(s): r for s, r in per_seed.items()},
            "summary": summarise(per_seed, plan.level)}


def table(result: dict[str, Any]) -> str:
    per_seed, summary = result["per_seed"], result["summary"]
    seeds = list(per_seed)
    level = f"{summary['level']:.0%}"
    cell = 26
    head = f"{'':<20}" + "".join(f"{'seed ' + s:>{cell}}" for s in seeds) + f"{'mean ± sd':>18}"
    lines = [f"RMSPE on held-out time_ids ({level} bootstrap CI over time_ids per seed)", head]
    for m, agg in summary["rmspe"].items():
        row = "".join(f"{_cell(per_seed[s]['intervals']['rmspe'][m], ''):>{cell}}" for s in seeds)
        lines.append(f"{m:<20}{row}{agg['mean']:>11.4f} ± {agg['sd']:.4f}")
    lines.append("paired differences")
    for pair, agg in summary["difference"].items():
        row = "".join(f"{_cell(per_seed[s]['intervals']['difference'][pair], '+'):>{cell}}"
                      for s in seeds)
        lines.append(f"{pair:<20}{row}{agg['mean']:>+11.4f} ± {agg['sd']:.4f}")
    lines.append(f"across {len(seeds)} seeds, {level} t interval of the mean difference; "
                 "seeds whose own interval excludes 0:")
    for pair, agg in summary["difference"].items():
        lines.append(f"  {pair:<20} [{agg['low']:+.4f}, {agg['high']:+.4f}]; first better on "
                     f"{agg['seeds_first_better']}, second better on {agg['seeds_second_better']}"
                     f" of {len(seeds)}")
    return "\n".join(lines)


def _cell(interval: dict[str, float], sign: str) -> str:
    return (f"{interval['estimate']:{sign}.4f} [{interval['low']:{sign}.4f},"
            f"{interval['high']:{sign}.4f}]")


def write(result: dict[str, Any], out: Path) -> Path:
    """JSON at ``out``, the error-bar plot beside it; returns the plot's path."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    png = out.with_name(out.stem + "_intervals.png")
    plan = result["plan"]
    evaluate.plot_intervals({f"seed {s}": r["intervals"] for s, r in result["per_seed"].items()},
                            png, f"{plan['stocks']} stocks x {plan['time_ids']} time_ids")
    return png
