"""The served ensemble: CNN + LightGBM + MLP (+ HAR) folded into ONE ONNX graph.

    rv = w_cnn * cnn + w_lightgbm * lightgbm + w_mlp * mlp + w_har * har
         (w >= 0, sum 1, fit on validation)

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
LightGBM on one seed of five, convex ones on none). The weights are fit on the validation
time_ids' later part (train.split's "blend"), which no member has seen: the members are
early-stopped on the earlier part. Fit on the time_ids the CNN chose its epoch on, its
validation RMSPE was optimistic and the fit over-weighted it (docs/RESULTS.md).
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
from rtvol.training import baselines, export, mlp, trees_onnx
from rtvol.training.cnn import INPUT, OUTPUTS
from rtvol.training.dataset import Dataset
from rtvol.training.trees_onnx import GraphBuilder

MODEL = "rtvol_ensemble"
MEMBERS = ("cnn", "lightgbm", "mlp", "har")
# What the graph and the weights are built by; a version from an older build is rebuilt
# by `rtvol evaluate --seeds` (2: the trees as one node, float32 sums; 3: weights fit on
# the blend part only; 4: the MLP member).
BUILD = 4
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
class _Sum:
    """An aggregate that is a weighted sum over steps of one per-step quantity."""

    column: str
    first: int  # first step summed
    scale: float


# The aggregates by what follows the sum: sqrt of summed squares, the plain sum, log1p of
# summed expm1 (counts are stored as log1p). The graph's columns come in this order, then
# every feature's max over the steps (max_step_rv is one of them).
_SQRT = {**{name: _Sum("wap1_rv", first, STEPS / (STEPS - first)) for name, first in RV_TAILS},
         "rv2_full": _Sum("wap2_rv", 0, 1.0)}
_PLAIN = {"net_return": _Sum("wap1_return", 0, 1.0),
          **{f"mean_{m}": _Sum(m, 0, 1 / STEPS) for m in MEANS}}
_LOG1P = {f"total_{a}": _Sum(a, 0, 1.0) for a in ACTIVITY}


def _sum_weights(sums: dict[str, _Sum]) -> np.ndarray:
    """[STEPS * N_FEATURES, len(sums)]: a flattened window times it is every sum."""
    w = np.zeros((STEPS, N_FEATURES, len(sums)))
    for j, agg in enumerate(sums.values()):
        w[agg.first:, INDEX[agg.column], j] = agg.scale
    return w.reshape(-1, len(sums))


@dataclass(frozen=True)
class Aggregates:
    """The aggregates' nodes: ``table`` [batch, columns] float64 and where each of
    AGGREGATE_NAMES sits in it; ``rv_tails`` [batch, len(_SQRT)], its first columns."""

    table: str
    rv_tails: str
    columns: dict[str, int]
    width: int  # the table's columns


def add_aggregates(g: GraphBuilder, window64: str) -> Aggregates:
    """rtvol.features.aggregates.aggregates in 10 nodes after the cast (each node costs
    about a microsecond at batch 1 whatever its size): one Gemm per kind of sum over the
    flattened window, its squares and its exp; expm1's -1 per step and log1p's +1 ride in
    the Gemm's bias."""
    flat = g.op("Reshape", window64, g.const(np.array([0, -1], np.int64)))
    squares = g.op("Gemm", g.op("Mul", flat, flat), g.const(_sum_weights(_SQRT), "sqrt_sums"))
    rv_tails = g.op("Sqrt", squares, hint="rv_tails")
    plain = g.op("Gemm", flat, g.const(_sum_weights(_PLAIN), "plain_sums"))
    counts = g.op("Gemm", g.op("Exp", flat), g.const(_sum_weights(_LOG1P), "count_sums"),
                  g.const(np.full(len(_LOG1P), 1.0 - STEPS)))
    maxes = g.op("ReduceMax", window64, g.const(np.array([1], np.int64)), keepdims=0)
    table = g.op("Concat", rv_tails, plain, g.op("Log", counts), maxes, axis=1,
                 hint="aggregates")
    order = [*_SQRT, *_PLAIN, *_LOG1P]
    columns = {name: order.index(name) for name in order}
    columns["max_step_rv"] = len(order) + INDEX["wap1_rv"]
    return Aggregates(table, rv_tails, columns, len(order) + N_FEATURES)


def add_har(g: GraphBuilder, rv_tails: str, coef: np.ndarray, weight: float) -> str:
    """``weight`` * baselines.Har.predict, [batch, 1] float32, from the tail RVs (the
    columns of ``rv_tails`` past RV_TAILS get coefficient 0); the weight rides in the bias
    as log(weight)."""
    logs = g.op("Log", g.op("Max", rv_tails, g.const(np.array(baselines.RV_FLOOR))))
    slopes = np.zeros((len(_SQRT), 1))
    slopes[:len(RV_TAILS), 0] = coef[1:]
    z = g.op("Gemm", logs, g.const(slopes), g.const(np.array([coef[0] + np.log(weight)])))
    return g.op("Cast", g.op("Exp", z), to=TensorProto.FLOAT, hint="har")


def add_mlp(g: GraphBuilder, aggs: Aggregates, net: mlp.Mlp, weight: float) -> str:
    """``weight`` * net.predict, [batch, 1] float32, from the aggregates' table, in float64:
    the logs of every column (only the RV-like ones get a non-zero weight; the others'
    floored logs stay finite), the standardisation folded into the first Gemm, and the
    weight riding in the last bias as log(weight)."""
    first = net.weights[0] / net.std  # [hidden, features] on the unstandardised inputs
    bias = net.biases[0] - first @ net.mean
    raw, logged = np.zeros((aggs.width, len(bias))), np.zeros((aggs.width, len(bias)))
    for j, name in enumerate(AGGREGATE_NAMES):
        (logged if j in mlp.LOG_COLUMNS else raw)[aggs.columns[name]] = first[:, j]
    logs = g.op("Log", g.op("Max", aggs.table, g.const(np.array(baselines.RV_FLOOR))))
    h = g.op("Relu", g.op("Gemm", g.op("Concat", aggs.table, logs, axis=1),
                          g.const(np.vstack([raw, logged])), g.const(bias)))
    for w, b in zip(net.weights[1:-1], net.biases[1:-1], strict=True):
        h = g.op("Relu", g.op("Gemm", h, g.const(w.T), g.const(b)))
    # the residual log rv_full and the last bias, as the last Gemm's C input
    pick = np.zeros((aggs.width, 1))
    pick[aggs.columns["rv_full"], 0] = 1.0
    base = g.op("Gemm", logs, g.const(pick), g.const(net.biases[-1] + np.log(weight)))
    z = g.op("Gemm", h, g.const(net.weights[-1].T), base)
    return g.op("Cast", g.op("Exp", z), to=TensorProto.FLOAT, hint="mlp")


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
          weights: dict[str, float], net: mlp.Mlp | None = None) -> bytes:
    """One ONNX model: window -> rv (weighted members), direction, momentum (the CNN's)."""
    unknown = set(weights) - set(MEMBERS)
    if unknown:
        raise ValueError(f"unknown ensemble members {sorted(unknown)}")
    if weights.get("mlp", 0) > 0 and net is None:
        raise ValueError("the MLP has a weight but no MLP was given")
    cnn = onnx.load_from_string(cnn_onnx)
    graph = _prefixed(cnn, "cnn")
    g = GraphBuilder("ensemble")
    aggs = add_aggregates(g, g.op("Cast", INPUT, to=TensorProto.DOUBLE))
    # Each member's term, weighted, [batch, 1] float32: float32 sums keep the served rv
    # within 1e-7 of the python ensemble's float64 one.
    terms = []
    if weights.get("cnn", 0) > 0:
        terms.append(g.op("Mul", "cnn/rv", g.const(np.array(weights["cnn"], np.float32))))
    if weights.get("lightgbm", 0) > 0:
        best = gbm.booster.best_iteration or None
        trees = trees_onnx.flatten(gbm.booster.dump_model(num_iteration=best))
        column = np.array([aggs.columns[n] for n in AGGREGATE_NAMES])
        trees = replace(trees, feature=column[trees.feature])
        w = weights["lightgbm"]
        terms.append(g.op("Max", trees_onnx.add_tree_ensemble(g, trees, aggs.table, w),
                          g.const(np.array(w * baselines.RV_FLOOR, np.float32))))
    if net is not None and weights.get("mlp", 0) > 0:
        terms.append(add_mlp(g, aggs, net, weights["mlp"]))
    if weights.get("har", 0) > 0:
        terms.append(add_har(g, aggs.rv_tails, har.coef, weights["har"]))
    total = terms[0]
    for t in terms[1:]:
        total = g.op("Add", total, t)
    g.nodes[-1].output[0] = OUTPUTS[0]
    graph.node.extend(g.nodes)
    graph.initializer.extend(g.initializers)
    opsets = [*cnn.opset_import, helper.make_opsetid(trees_onnx.ML_DOMAIN, trees_onnx.ML_OPSET)]
    model = helper.make_model(graph, opset_imports=opsets,
                              producer_name="rtvol.training.ensemble")
    model.ir_version = cnn.ir_version
    onnx.checker.check_model(model)
    return model.SerializeToString()


def served_by(repo: Path, cnn_name: str, cnn_version: int, build: int | None = None
              ) -> int | None:
    """The latest ensemble version built on that CNN version (by ``build``, if given)."""
    for version in reversed(repository.versions(repo, MODEL)):
        meta = repository.read_metadata(repo, MODEL, version)["ensemble"]
        cnn = meta["cnn"]
        if ((cnn["model"], cnn["version"]) == (cnn_name, cnn_version)
                and build in (None, meta.get("build", 1))):
            return version
    return None


def export_version(repo: Path, val: Dataset, cnn_name: str = repository.DEFAULT_MODEL,
                   cnn_version: int | None = None) -> int:
    """Fit the weights on ``val`` (time_ids no member was trained or stopped on), build the
    graph from the CNN version's artifacts, check that ONNX Runtime reproduces the python
    ensemble, and write the next ensemble version."""
    cnn_version = repository.resolve(repo, cnn_name, cnn_version)
    vdir = repository.version_dir(repo, cnn_name, cnn_version)
    cnn_meta = repository.read_metadata(repo, cnn_name, cnn_version)
    cnn_onnx = (vdir / repository.MODEL_FILE).read_bytes()
    har, gbm = baselines.load(vdir)
    net = mlp.load(vdir)
    if net is None:
        raise FileNotFoundError(f"{vdir / mlp.MLP_FILE}: {cnn_name} v{cnn_version} was trained "
                                "before the MLP member; train it again")
    cnn_out = export.run(cnn_onnx, val.windows)
    preds = {"cnn": cnn_out["rv"][:, 0], "lightgbm": gbm.predict(val.windows),
             "mlp": net.predict(val.windows), "har": har.predict(val.windows)}
    weights = fit_weights(val.target, preds)
    model = build(cnn_onnx, gbm, har, weights, net)
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
        "ensemble": {"cnn": {"model": cnn_name, "version": cnn_version}, "build": BUILD,
                     "weights": weights,
                     "fit_time_ids": [int(val.time_id.min()), int(val.time_id.max())],
                     "val_rmspe": {**val_rmspe, "ensemble": baselines.rmspe(val.target, want)},
                     "trees": len(trees.roots), "tree_nodes": len(trees.feature),
                     "tree_depth": trees.depth},
        "onnx_parity_max_rel_diff": parity,
    }
    return repository.write_version(repo, MODEL, model, metadata, export.SERVING)
