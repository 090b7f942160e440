"""LightGBM trees as ONE ONNX node, ai.onnx.ml's TreeEnsembleRegressor.

One op, because batch-1 latency pays per op: ONNX Runtime runs it natively (83 trees of
depth 19: 5 µs at batch 1; the former walk in standard ops, one GatherElements per tree
level, took 58 µs). The sidecar's torch backend lowers the node to that walk in tensor ops
when it loads the graph (rtvol.services.model.backends.tree_lowering).

``flatten`` turns LightGBM's dump into rtvol.trees.FlatTrees (every node of every tree in
one flat table, the definition the sidecar's lowering shares); its ``predict`` is the numpy
reference walk.

Only numerical ``<=`` splits are converted. LightGBM sends a missing (NaN) value down a
default branch; the served windows are finite (the sidecar refuses others), so the
converter refuses models whose splits treat zero as missing, the one case where a finite
value takes the default branch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import NodeProto, TensorProto, helper, numpy_helper

from rtvol.trees import FlatTrees

ML_DOMAIN = "ai.onnx.ml"
ML_OPSET = 3  # TreeEnsembleRegressor with double thresholds (nodes_values_as_tensor)


class TreeConversionError(ValueError):
    pass


def flatten(dump: dict[str, Any]) -> FlatTrees:
    """``Booster.dump_model(num_iteration=...)`` -> FlatTrees."""
    feature: list[int] = []
    threshold: list[float] = []
    left: list[int] = []
    right: list[int] = []
    value: list[float] = []

    def add(node: dict[str, Any]) -> tuple[int, int]:
        """Append ``node`` and its subtree; returns (its index, its depth)."""
        at = len(feature)
        feature.append(0)
        threshold.append(0.0)
        left.append(at)
        right.append(at)
        value.append(0.0)
        if "leaf_value" in node:
            value[at] = float(node["leaf_value"])
            return at, 0
        if node.get("decision_type") != "<=":
            raise TreeConversionError(f"split {node.get('decision_type')!r}: only numerical "
                                      "'<=' splits are converted")
        if node.get("missing_type") == "Zero":
            raise TreeConversionError("a split treats zero as missing: not converted")
        feature[at], threshold[at] = int(node["split_feature"]), float(node["threshold"])
        left[at], depth_l = add(node["left_child"])
        right[at], depth_r = add(node["right_child"])
        return at, 1 + max(depth_l, depth_r)

    roots, depth = [], 0
    for tree in dump["tree_info"]:
        root, d = add(tree["tree_structure"])
        roots.append(root)
        depth = max(depth, d)
    if not roots:
        raise TreeConversionError("the model has no trees")
    return FlatTrees(np.array(feature, np.int64), np.array(threshold, np.float64),
                     np.array(left, np.int64), np.array(right, np.int64),
                     np.array(value, np.float64), np.array(roots, np.int64), depth)


class GraphBuilder:
    """Collects nodes and initializers under a name prefix (graphs fold together unharmed)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: list[NodeProto] = []
        self.initializers: list[TensorProto] = []
        self._count = 0

    def const(self, array: np.ndarray, hint: str = "c") -> str:
        name = self._name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type: str, *inputs: str, hint: str = "", **attrs: Any) -> str:
        out = self._name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}/{hint}_{self._count}"


def add_tree_ensemble(g: GraphBuilder, trees: FlatTrees, features: str, scale: float = 1.0
                      ) -> str:
    """One ai.onnx.ml TreeEnsembleRegressor node: ``scale`` times the trees' summed
    prediction, [batch, 1] float32, from ``features`` [batch, n_features] float64.

    The thresholds and leaf values are double tensors (opset 3's ``*_as_tensor``), so the
    splits compare in float64 as LightGBM does; ONNX Runtime then sums in double and hands
    back float32 (relative error ~6e-8). Node ids are local to each tree."""
    internal = ~trees.leaves()
    tree_of = np.searchsorted(trees.roots, np.arange(len(trees.feature)), side="right") - 1
    base = trees.roots[tree_of]
    leaves = np.flatnonzero(~internal)
    return g.op(
        "TreeEnsembleRegressor", features, domain=ML_DOMAIN, hint="trees",
        n_targets=1, aggregate_function="SUM", post_transform="NONE",
        nodes_treeids=tree_of.tolist(), nodes_nodeids=(np.arange(len(base)) - base).tolist(),
        nodes_featureids=trees.feature.tolist(),
        nodes_modes=["BRANCH_LEQ" if i else "LEAF" for i in internal],
        nodes_values_as_tensor=numpy_helper.from_array(trees.threshold),
        nodes_truenodeids=(trees.left - base).tolist(),
        nodes_falsenodeids=(trees.right - base).tolist(),
        target_treeids=tree_of[leaves].tolist(), target_nodeids=(leaves - base[leaves]).tolist(),
        target_ids=[0] * len(leaves),
        target_weights_as_tensor=numpy_helper.from_array(scale * trees.value[leaves]))
