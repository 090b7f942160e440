"""The served ensemble: CNN + LightGBM (+ HAR) folded into ONE ONNX graph.

    rv = w_cnn * cnn + w_lightgbm * lightgbm + w_har * har      (w >= 0, fit on validation)

One graph rather than two models combined in the sidecar: every backend (ONNX Runtime,
the torch interpreter behind CUDA graphs, TensorRT) serves it unchanged, one request is
one inference, and the model repository's atomic version swap covers all members at once.
The window aggregates the tabular members read are computed inside the graph in float64,
as rtvol.features.aggregates computes them, so the trees see the numbers they were
trained on. Direction and momentum come from the CNN: the baselines have no such heads.

The weights minimise the validation RMSPE under w >= 0 and sum(w) = 1: they choose the
mix, not the scale. Each member already fits its own scale to RMSPE on the training
time_ids; a free scale fit on the 120 validation time_ids learns that period's market
level and carried it into the test period (docs/RESULTS.md: free weights lost to
LightGBM on one seed of five, convex ones on none). The members were early-stopped on the
same validation time_ids, so the weights are fit on data the members have seen a little;
the test time_ids stay untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from rtvol import repository
from rtvol.features.aggregates import ACTIVITY, AGGREGATE_NAMES, MEANS, RV_TAILS
from rtvol.features.spec import INDEX, N_FEATURES, STEPS
from rtvol.training import baselines, export, trees_onnx
from rtvol.training.cnn import INPUT, OUTPUTS
from rtvol.training.dataset import Dataset
from rtvol.training.trees_onnx import GraphBuilder

MODEL = "rtvol_ensemble"
MEMBERS = ("cnn", "lightgbm", "har")
PARITY_RELATIVE = 1e-5  # served rv vs the python ensemble (float32 output of float64 sums)


def fit_weights(y: np.ndarray, preds: dict[str, np.ndarray]) -> dict[str, float]:
    """Convex weights (w >= 0, sum 1) minimising RMSPE of sum_m w_m * preds[m] against y:
    non-negative least squares on p / y against 1, with the sum held at 1 by a heavily
    weighted extra row."""
    from scipy.optimize import nnls

    names = list(preds)
    a = np.column_stack([np.asarray(preds[m], np.float64) / y for m in names])
    penalty = 1e3 * np.sqrt(len(y))
    w, _ = nnls(np.vstack([a, np.full(len(names), penalty)]),
                np.append(np.ones(len(y)), penalty))
    w = w / w.sum()
    return {m: float(v) for m, v in zip(names, w, strict=True)}


def combine(weights: dict[str, float], preds: dict[str, np.ndarray]) -> np.ndarray:
    """The python ensemble (what the graph must reproduce)."""
    return np.sum([w * np.asarray(preds[m], np.float64) for m, w in weights.items()], axis=0)


@dataclass(frozen=True)
class _Linear:
    """An aggregate that is a weighted sum over steps of one per-step quantity."""

    block: int  # 0: the value, 1: its square, 2: expm1 of it (counts stored as log1p)
    column: str
    first: int  # first step summed
    scale: float
    post: str = ""  # "sqrt" or "log1p" after the sum


def _linear_aggregates() -> dict[str, _Linear]:
    """Every aggregate of rtvol.features.aggregates but max_step_rv, as such a sum."""
    out = {name: _Linear(1, "wap1_rv", first, STEPS / (STEPS - first), "sqrt")
           for name, first in RV_TAILS}
    out["rv2_full"] = _Linear(1, "wap2_rv", 0, 1.0, "sqrt")
    out["net_return"] = _Linear(0, "wap1_return", 0, 1.0)
    out.update({f"mean_{m}": _Linear(0, m, 0, 1 / STEPS) for m in MEANS})
    out.update({f"total_{a}": _Linear(2, a, 0, 1.0, "log1p") for a in ACTIVITY})
    return out


def add_aggregates(g: GraphBuilder, window64: str) -> tuple[str, list[int]]:
    """rtvol.features.aggregates.aggregates as few nodes: one MatMul over [value, square,
    expm1] of every step computes all the sums at once. Returns the [batch, A] tensor and,
    per column, its index in AGGREGATE_NAMES (the columns come in the graph's own order)."""
    linear = _linear_aggregates()
    blocks = 3
    weights = np.zeros((STEPS, blocks * N_FEATURES, len(linear)))
    for j, agg in enumerate(linear.values()):
        weights[agg.first:, agg.block * N_FEATURES + INDEX[agg.column], j] = agg.scale
    one = g.const(np.array(1.0))
    per_step = g.op("Concat", window64, g.op("Mul", window64, window64),
                    g.op("Sub", g.op("Exp", window64), one), axis=2)
    flat = g.op("Reshape", per_step, g.const(np.array([0, -1], np.int64)))
    sums = g.op("MatMul", flat, g.const(weights.reshape(-1, len(linear)), "aggregate_weights"))
    post = [agg.post for agg in linear.values()]
    logged = g.op("Where", g.const(np.array([p == "log1p" for p in post])),
                  g.op("Log", g.op("Add", sums, one)), sums)
    done = g.op("Where", g.const(np.array([p == "sqrt" for p in post])), g.op("Sqrt", sums),
                logged)
    rv = g.op("Gather", window64, g.const(np.array(INDEX["wap1_rv"], np.int64)), axis=2)
    max_rv = g.op("ReduceMax", rv, g.const(np.array([1], np.int64)), keepdims=1)
    order = [*linear, "max_step_rv"]
    return (g.op("Concat", done, max_rv, axis=1, hint="aggregates"),
            [AGGREGATE_NAMES.index(n) for n in order])


def add_har(g: GraphBuilder, aggregates: str, tail_columns: list[int], coef: np.ndarray) -> str:
    """baselines.Har.predict on the tail-RV aggregates (at ``tail_columns``)."""
    tails = g.op("Gather", aggregates, g.const(np.array(tail_columns, np.int64)), axis=1)
    logs = g.op("Log", g.op("Max", tails, g.const(np.array(baselines.RV_FLOOR))))
    z = g.op("MatMul", logs, g.const(np.asarray(coef[1:], np.float64)))
    return g.op("Exp", g.op("Add", z, g.const(np.array(float(coef[0])))), hint="har")


def _prefixed(cnn: onnx.ModelProto, prefix: str) -> onnx.GraphProto:
    """The CNN's graph with every internal name under ``prefix``; the input and the
    direction/momentum outputs keep their names, its rv becomes ``prefix/rv``."""
    keep = {INPUT, "", *OUTPUTS[1:]}

    def rename(name: str) -> str:
        return name if name in keep else f"{prefix}/{name}"

    graph = onnx.GraphProto()
    graph.CopyFrom(cnn.graph)
    for node in graph.node:
        node.name = rename(node.name) if node.name else ""
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
    for init in graph.initializer:
        init.name = rename(init.name)
    del graph.value_info[:]
    return graph


def build(cnn_onnx: bytes, gbm: baselines.GradientBoosting, har: baselines.Har,
          weights: dict[str, float]) -> bytes:
    """One ONNX model: window -> rv (weighted members), direction, momentum (the CNN's)."""
    unknown = set(weights) - set(MEMBERS)
    if unknown:
        raise ValueError(f"unknown ensemble members {sorted(unknown)}")
    cnn = onnx.load_from_string(cnn_onnx)
    graph = _prefixed(cnn, "cnn")
    g = GraphBuilder("ensemble")
    window64 = g.op("Cast", INPUT, to=TensorProto.DOUBLE)
    aggregates, order = add_aggregates(g, window64)
    column = np.argsort(order)  # AGGREGATE_NAMES index -> column of ``aggregates``
    members = {"cnn": g.op("Squeeze", g.op("Cast", "cnn/rv", to=TensorProto.DOUBLE),
                           g.const(np.array([1], np.int64)))}
    if weights.get("lightgbm", 0) > 0:
        best = gbm.booster.best_iteration or None
        trees = trees_onnx.flatten(gbm.booster.dump_model(num_iteration=best))
        trees = replace(trees, feature=column[trees.feature])
        members["lightgbm"] = g.op("Max", trees_onnx.add_trees(g, trees, aggregates),
                                   g.const(np.array(baselines.RV_FLOOR)))
    if weights.get("har", 0) > 0:
        members["har"] = add_har(g, aggregates, list(column[:len(RV_TAILS)]), har.coef)
    terms = [g.op("Mul", members[m], g.const(np.array(w))) for m, w in weights.items() if w > 0]
    total = terms[0]
    for t in terms[1:]:
        total = g.op("Add", total, t)
    rv32 = g.op("Cast", total, to=TensorProto.FLOAT)
    g.nodes.append(helper.make_node("Unsqueeze", [rv32, g.const(np.array([1], np.int64))],
                                    [OUTPUTS[0]]))
    graph.node.extend(g.nodes)
    graph.initializer.extend(g.initializers)
    model = helper.make_model(graph, opset_imports=list(cnn.opset_import),
                              producer_name="rtvol.training.ensemble")
    model.ir_version = cnn.ir_version
    onnx.checker.check_model(model)
    return model.SerializeToString()


def served_by(repo: Path, cnn_name: str, cnn_version: int) -> int | None:
    """The latest ensemble version built on that CNN version, if any."""
    for version in reversed(repository.versions(repo, MODEL)):
        cnn = repository.read_metadata(repo, MODEL, version)["ensemble"]["cnn"]
        if (cnn["model"], cnn["version"]) == (cnn_name, cnn_version):
            return version
    return None


def export_version(repo: Path, val: Dataset, cnn_name: str = repository.DEFAULT_MODEL,
                   cnn_version: int | None = None) -> int:
    """Fit the weights on ``val``, build the graph from the CNN version's artifacts, check
    that ONNX Runtime reproduces the python ensemble, and write the next ensemble version."""
    cnn_version = repository.resolve(repo, cnn_name, cnn_version)
    vdir = repository.version_dir(repo, cnn_name, cnn_version)
    cnn_meta = repository.read_metadata(repo, cnn_name, cnn_version)
    cnn_onnx = (vdir / repository.MODEL_FILE).read_bytes()
    har, gbm = baselines.load(vdir)
    cnn_out = export.run(cnn_onnx, val.windows)
    preds = {"cnn": cnn_out["rv"][:, 0], "lightgbm": gbm.predict(val.windows),
             "har": har.predict(val.windows)}
    weights = fit_weights(val.target, preds)
    model = build(cnn_onnx, gbm, har, weights)
    served = export.run(model, val.windows)
    want = combine(weights, preds)
    parity = float(np.max(np.abs(served["rv"][:, 0] / want - 1)))
    heads = max(float(np.max(np.abs(served[k] - cnn_out[k]))) for k in OUTPUTS[1:])
    if not parity <= PARITY_RELATIVE or not heads <= export.PARITY_TOLERANCE:
        raise export.ExportError(f"served ensemble differs from the python ensemble: rv by "
                                 f"{parity:.3g} relative, direction/momentum by {heads:.3g}")
    trees = trees_onnx.flatten(gbm.booster.dump_model(num_iteration=gbm.booster.best_iteration
                                                      or None))
    val_rmspe = {m: baselines.rmspe(val.target, p) for m, p in preds.items()}
    metadata = {
        **{k: cnn_meta[k] for k in ("feature_spec_hash", "feature_spec", "normalisation",
                                    "params", "training")},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "ensemble": {"cnn": {"model": cnn_name, "version": cnn_version},
                     "weights": weights,
                     "val_rmspe": {**val_rmspe, "ensemble": baselines.rmspe(val.target, want)},
                     "trees": len(trees.roots), "tree_nodes": len(trees.feature),
                     "tree_depth": trees.depth},
        "onnx_parity_max_rel_diff": parity,
    }
    return repository.write_version(repo, MODEL, model, metadata, export.SERVING)
