"""ai.onnx.ml TreeEnsembleRegressor lowered to standard ONNX nodes that the torch
interpreter runs (the served ensemble's trees are one such node: rtvol.training.trees_onnx).

The node's attributes become rtvol.trees.FlatTrees, the flat table training built them
from (every node of every tree a row; a leaf points to itself). Every split is decided up
front, in a few ops over [nodes, batch]: ``step`` holds, per node and row, the child it
leads to. The
walk is then one GatherElements per tree level over [trees, batch], so after ``depth``
steps every tree has reached its leaf: a fixed list of tensor ops, no host
synchronisation, which CUDA graph capture needs.

Only what a regressor of summed trees uses is lowered: BRANCH_LEQ splits, one target, SUM,
no post transform. Missing values are not tracked: the sidecar refuses non-finite windows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from rtvol.trees import FlatTrees

OP = "TreeEnsembleRegressor"


def _attr(attrs: dict[str, Any], name: str) -> np.ndarray:
    """A per-node / per-target attribute, given as a list or as a ``*_as_tensor``."""
    if f"{name}_as_tensor" in attrs:
        return np.asarray(numpy_helper.to_array(attrs[f"{name}_as_tensor"]), np.float64)
    return np.asarray(attrs[name], np.float64)


def _text(v: Any) -> Any:
    return v.decode() if isinstance(v, bytes) else v


def flat_trees(node: onnx.NodeProto) -> FlatTrees:
    """The node's trees as one table of global node indices."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    settings = {k: _text(attrs.get(k, default)) for k, default in
                (("n_targets", 1), ("aggregate_function", "SUM"), ("post_transform", "NONE"))}
    modes = [_text(m) for m in attrs["nodes_modes"]]
    if (settings != {"n_targets": 1, "aggregate_function": "SUM", "post_transform": "NONE"}
            or set(modes) - {"BRANCH_LEQ", "LEAF"} or "base_values" in attrs
            or "base_values_as_tensor" in attrs):
        raise ValueError(f"{OP}: only summed BRANCH_LEQ trees with one target and no post "
                         f"transform or base value are lowered (got {settings}, {set(modes)})")
    keys = list(zip(attrs["nodes_treeids"], attrs["nodes_nodeids"], strict=True))
    at = {key: i for i, key in enumerate(keys)}
    n = len(keys)
    leaf = np.array([m == "LEAF" for m in modes])
    true = np.arange(n)
    false = np.arange(n)
    for i, (tree, _) in enumerate(keys):
        if not leaf[i]:
            true[i] = at[(tree, attrs["nodes_truenodeids"][i])]
            false[i] = at[(tree, attrs["nodes_falsenodeids"][i])]
    value = np.zeros(n)
    targets = zip(attrs["target_treeids"], attrs["target_nodeids"], strict=True)
    np.add.at(value, [at[key] for key in targets], _attr(attrs, "target_weights"))
    children = set(true[~leaf]) | set(false[~leaf])
    roots = np.array([i for i in range(n) if i not in children], np.int64)
    depth, level = 0, roots
    while not leaf[level].all():  # children of the internal nodes on this level
        level = np.concatenate([true[level[~leaf[level]]], false[level[~leaf[level]]]])
        depth += 1
    feature = np.where(leaf, 0, np.asarray(attrs["nodes_featureids"], np.int64))
    return FlatTrees(feature, _attr(attrs, "nodes_values"), true, false, value, roots, depth)


def lower(node: onnx.NodeProto, consts: dict[str, torch.Tensor]) -> list[onnx.NodeProto]:
    """Standard nodes computing ``node``'s output [batch, 1] float32 from its input
    [batch, features]; the tables go into ``consts``."""
    t = flat_trees(node)
    stem = f"{node.output[0]}::lowered"

    def const(name: str, array: np.ndarray) -> str:
        consts[f"{stem}/{name}"] = torch.from_numpy(np.array(array))  # a copy torch may own
        return f"{stem}/{name}"

    nodes: list[onnx.NodeProto] = []

    def op(op_type: str, *inputs: str, **kw: Any) -> str:
        out = f"{stem}/{len(nodes)}"
        nodes.append(helper.make_node(op_type, list(inputs), [out], **kw))
        return out

    rows = op("Transpose", node.input[0], perm=[1, 0])  # [features, batch]
    at_node = op("Gather", rows, const("feature", t.feature), axis=0)
    go_left = op("Cast", op("LessOrEqual", at_node, const("threshold", t.threshold[:, None])),
                 to=TensorProto.INT64)
    step = op("Add", op("Mul", go_left, const("left-right", (t.left - t.right)[:, None])),
              const("right", t.right[:, None]))
    walk = op("Gather", step, const("roots", t.roots), axis=0)
    for _ in range(t.depth - 1):
        walk = op("GatherElements", step, walk, axis=0)
    leaves = op("Gather", const("value", t.value), walk, axis=0)  # [trees, batch]
    total = op("ReduceSum", leaves, const("axis", np.array([0], np.int64)), keepdims=1)
    nodes.append(helper.make_node("Cast", [op("Transpose", total, perm=[1, 0])],
                                  [node.output[0]], to=TensorProto.FLOAT))
    return nodes


def lower_tree_ensembles(nodes: list[onnx.NodeProto], consts: dict[str, torch.Tensor]
                         ) -> list[onnx.NodeProto]:
    """``nodes`` with every TreeEnsembleRegressor replaced by its lowering."""
    return [m for n in nodes for m in (lower(n, consts) if n.op_type == OP else [n])]
