"""Summed regression trees as one flat table: the one definition training's converter
(LightGBM -> ONNX, rtvol.training.trees_onnx) and the sidecar's lowering of the ONNX node
to tensor ops (rtvol.services.model.backends.tree_lowering) share.

Every node of every tree is a row (split feature, threshold, left and right child, leaf
value); a leaf points to itself, so after ``depth`` steps every tree has reached its leaf
whatever path it took: a fixed number of steps, which a walk in tensor ops needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FlatTrees:
    """Every node of every tree; indices are global (into these arrays)."""

    feature: np.ndarray  # int64 [nodes]; 0 at leaves (any feature: a leaf's children are itself)
    threshold: np.ndarray  # float64 [nodes]
    left: np.ndarray  # int64 [nodes]: where feature <= threshold goes
    right: np.ndarray  # int64 [nodes]
    value: np.ndarray  # float64 [nodes]; leaf values, 0 at internal nodes
    roots: np.ndarray  # int64 [trees]
    depth: int  # internal nodes on the longest root-to-leaf path

    def predict(self, features: np.ndarray) -> np.ndarray:
        """The summed trees' prediction for ``features`` [rows, features] (the reference
        the ONNX node and its lowering are tested against)."""
        node = np.broadcast_to(self.roots, (len(features), len(self.roots)))
        rows = np.arange(len(features))[:, None]
        for _ in range(self.depth):
            go_left = features[rows, self.feature[node]] <= self.threshold[node]
            node = np.where(go_left, self.left[node], self.right[node])
        return self.value[node].sum(axis=1)

    def leaves(self) -> np.ndarray:
        """A bool mask [nodes]: True at leaves (they point to themselves)."""
        return self.left == np.arange(len(self.left))
