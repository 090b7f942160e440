"""Run the repository's ONNX graph with torch ops, so the CUDA-graph backend serves exactly
the artifact that ONNX Runtime and TensorRT serve (no second copy of the weights).

Everything that depends only on initializers and constants (pads, shapes, slice bounds)
is folded once at load time on the CPU; what remains is a flat list of tensor ops with
no host synchronisation, which is what CUDA graph capture needs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch.nn import functional as F

from rtvol.services.model.backends.tree_lowering import lower_tree_ensembles

Fn = Callable[..., torch.Tensor]
Known = list[torch.Tensor | None]


def _ints(t: torch.Tensor | None) -> list[int]:
    if t is None:
        raise ValueError("a shape-like input must be constant")
    return [int(v) for v in t.flatten().tolist()]


def _pad(a: dict[str, Any], k: Known) -> Fn:
    pads = _ints(k[1])
    half = len(pads) // 2
    # ONNX: all begins then all ends, first axis first; torch: (begin, end) pairs, last axis first
    spec = [p for d in reversed(range(half)) for p in (pads[d], pads[d + half])]
    value = float(k[2].item()) if len(k) > 2 and k[2] is not None else 0.0
    return lambda x, *_: F.pad(x, spec, value=value)


def _conv_args(a: dict[str, Any]) -> tuple[int, int, int, int]:
    pads = a.get("pads", [0, 0])
    if any(p != pads[0] for p in pads):
        raise ValueError("asymmetric Conv padding is not supported")
    return pads[0], a.get("strides", [1])[0], a.get("dilations", [1])[0], a.get("group", 1)


def _conv(a: dict[str, Any], k: Known) -> Fn:
    pad, stride, dil, groups = _conv_args(a)
    return lambda x, w, b=None: F.conv1d(x, w, b, stride, pad, dil, groups)


def conv_as_matmul(a: dict[str, Any], weight: torch.Tensor) -> tuple[Fn, torch.Tensor] | None:
    """A stride-1 Conv1d as one GEMM over the k dilated taps stacked along the channels,
    time-major: [b*L, k*C] @ [k*C, C_out]. Compiled, the stacking fuses into the previous
    op's kernel and the GEMM needs none of cuDNN's NCHW<->NHWC transposes. Returns the op and
    the weight it takes (reordered once, at load), or None where the shape does not fit."""
    pad, stride, dil, groups = _conv_args(a)
    if stride != 1 or groups != 1:
        return None
    c_out, c_in, taps = weight.shape
    w = weight.permute(2, 1, 0).reshape(taps * c_in, c_out).contiguous()  # [j*C + c, o]

    def conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        x = F.pad(x, (pad, pad)) if pad else x
        length = x.shape[-1] - dil * (taps - 1)
        stacked = torch.cat([x[..., j * dil:j * dil + length] for j in range(taps)], dim=1)
        y = stacked.transpose(1, 2) @ w  # [b, L, C_out]
        return (y if b is None else y + b).transpose(1, 2)
    return conv, w


def _gemm(a: dict[str, Any], k: Known) -> Fn:
    alpha, beta = a.get("alpha", 1.0), a.get("beta", 1.0)
    ta, tb = a.get("transA", 0), a.get("transB", 0)

    def gemm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        y = (x.t() if ta else x) @ (w.t() if tb else w)
        y = y * alpha if alpha != 1.0 else y
        return y if b is None else y + (b * beta if beta != 1.0 else b)
    return gemm


def _reduce(op: Callable[..., torch.Tensor]) -> Callable[[dict[str, Any], Known], Fn]:
    def make(a: dict[str, Any], k: Known) -> Fn:
        axes = _ints(k[1]) if len(k) > 1 else list(a["axes"])
        keep = bool(a.get("keepdims", 1))
        return lambda x, *_: op(x, dim=axes, keepdim=keep)
    return make


def _amax(x: torch.Tensor, dim: list[int], keepdim: bool) -> torch.Tensor:
    return torch.amax(x, dim=dim, keepdim=keepdim)


def _slice(a: dict[str, Any], k: Known) -> Fn:
    starts, ends = _ints(k[1]), _ints(k[2])
    axes = _ints(k[3]) if len(k) > 3 and k[3] is not None else list(range(len(starts)))
    steps = _ints(k[4]) if len(k) > 4 and k[4] is not None else [1] * len(starts)

    if any(st == 0 for st in steps) or (k[0] is None and any(st < 0 for st in steps)):
        raise ValueError("Slice with a zero step, or a negative one on a runtime tensor")

    def slc(x: torch.Tensor, *_: Any) -> torch.Tensor:
        index: list[slice] = [slice(None)] * x.dim()
        for s, e, ax, st in zip(starts, ends, axes, steps, strict=True):
            index[ax] = slice(s, e, st)
        if any(st < 0 for st in steps):  # constants only (folded on the CPU): numpy reverses
            return torch.from_numpy(x.numpy()[tuple(index)].copy())
        return x[tuple(index)]
    return slc


def _reshape(a: dict[str, Any], k: Known) -> Fn:
    shape = _ints(k[1])

    def reshape(x: torch.Tensor, *_: Any) -> torch.Tensor:
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
        return x.reshape(dims)
    return reshape


def _gather(a: dict[str, Any], k: Known) -> Fn:
    axis = a.get("axis", 0)
    idx = k[1]
    if idx is not None and idx.dim() == 0:  # a scalar index drops the axis, like ONNX
        i = int(idx.item())
        return lambda x, *_: x.select(axis, i)
    return lambda x, ind: torch.index_select(x, axis, ind.flatten()).reshape(
        (*x.shape[:axis], *ind.shape, *x.shape[axis + 1:]))


_DTYPES = {1: torch.float32, 6: torch.int32, 7: torch.int64, 9: torch.bool, 10: torch.float16,
           11: torch.float64, 16: torch.bfloat16}

OPS: dict[str, Callable[[dict[str, Any], Known], Fn]] = {
    "Add": lambda a, k: torch.add, "Sub": lambda a, k: torch.sub,
    "Mul": lambda a, k: torch.mul, "Div": lambda a, k: torch.div,
    "Log": lambda a, k: torch.log, "Exp": lambda a, k: torch.exp,
    "Relu": lambda a, k: torch.relu, "Tanh": lambda a, k: torch.tanh,
    "Sqrt": lambda a, k: torch.sqrt,
    "Where": lambda a, k: torch.where,
    "LessOrEqual": lambda a, k: torch.le,
    "Max": lambda a, k: lambda *xs: functools.reduce(torch.maximum, xs),
    "GatherElements": lambda a, k: lambda x, i: torch.gather(x, a.get("axis", 0), i),
    "Clip": lambda a, k: lambda x, lo=None, hi=None: torch.clamp(x, lo, hi),
    "Transpose": lambda a, k: lambda x: x.permute(*a["perm"]),
    "Softmax": lambda a, k: lambda x: torch.softmax(x, dim=a.get("axis", -1)),
    "Concat": lambda a, k: lambda *xs: torch.cat(xs, dim=a["axis"]),
    "Cast": lambda a, k: lambda x: x.to(_DTYPES[a["to"]]),
    "ConstantOfShape": lambda a, k: lambda s: torch.full(
        _ints(s), float(numpy_helper.to_array(a["value"]).item()) if "value" in a else 0.0),
    "Unsqueeze": lambda a, k: lambda x, *_: x.reshape(_unsqueezed(x.shape, _ints(k[1]))),
    "Squeeze": lambda a, k: lambda x, *_: torch.squeeze(x, _ints(k[1])),
    "Pad": _pad, "Conv": _conv, "Gemm": _gemm, "Slice": _slice, "Reshape": _reshape,
    "Gather": _gather,
    "MatMul": lambda a, k: torch.matmul,
    "ReduceMax": _reduce(_amax), "ReduceMean": _reduce(torch.mean), "ReduceSum": _reduce(torch.sum),
}


def _unsqueezed(shape: torch.Size, axes: list[int]) -> list[int]:
    out = list(shape)
    for ax in sorted(a % (len(shape) + len(axes)) for a in axes):
        out.insert(ax, 1)
    return out


def _in_precision(fn: Fn, dtype: torch.dtype) -> Fn:
    """Run ``fn`` with its first input in ``dtype`` (the weights are cast once, at load) and
    hand back float32: casts that a compiler fuses into the neighbouring kernels."""
    def cast(x: torch.Tensor, *weights: torch.Tensor | None) -> torch.Tensor:
        return fn(x.to(dtype), *weights).float()
    return cast


def merge_sibling_gemms(nodes: list[onnx.NodeProto], consts: dict[str, torch.Tensor]
                        ) -> list[onnx.NodeProto]:
    """Gemm nodes that read the same runtime input with constant weights and biases (e.g.
    several heads on one trunk) become one Gemm over the stacked weights, each original
    output a column Slice of it: one GEMM launch instead of one per head. New constants
    go into ``consts``; nodes that do not fit are left as they are."""
    def mergeable(n: onnx.NodeProto) -> bool:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        return (n.op_type == "Gemm" and len(n.input) == 3 and n.input[1] in consts
                and n.input[2] in consts and consts[n.input[2]].dim() == 1
                and attrs.get("transA", 0) == 0 and attrs.get("transB", 0) == 1
                and attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0)

    groups: dict[str, list[onnx.NodeProto]] = {}
    for n in nodes:
        if mergeable(n):
            groups.setdefault(n.input[0], []).append(n)
    merged: dict[str, list[onnx.NodeProto]] = {}  # first node's output -> replacement nodes
    dropped: set[str] = set()
    for source, group in groups.items():
        if len(group) < 2:
            continue
        stem = f"{source}::heads"
        consts[stem + "::w"] = torch.cat([consts[n.input[1]] for n in group])  # [sum(out), in]
        consts[stem + "::b"] = torch.cat([consts[n.input[2]] for n in group])
        consts[stem + "::axis"] = torch.tensor([1])
        replacement = [helper.make_node("Gemm", [source, stem + "::w", stem + "::b"], [stem], transB=1)]
        start = 0
        for n in group:
            end = start + consts[n.input[1]].shape[0]
            consts[f"{stem}::{start}"], consts[f"{stem}::{end}"] = torch.tensor([start]), torch.tensor([end])
            replacement.append(helper.make_node(
                "Slice", [stem, f"{stem}::{start}", f"{stem}::{end}", stem + "::axis"], list(n.output)))
            start = end
        merged[group[0].output[0]] = replacement
        dropped.update(n.output[0] for n in group[1:])
    out: list[onnx.NodeProto] = []
    for n in nodes:
        if n.op_type == "Gemm" and n.output[0] in merged:
            out.extend(merged[n.output[0]])
        elif not (n.op_type == "Gemm" and n.output[0] in dropped):
            out.append(n)
    return out


class TorchGraph:
    """A callable ``graph(window) -> tuple of outputs`` on ``device``.

    ``conv_matmul`` lowers the convolutions to GEMMs (see conv_as_matmul);
    ``merge_gemms`` runs sibling dense heads as one GEMM (see merge_sibling_gemms).
    ``conv_dtype`` runs the convolutions (nearly all of the arithmetic) in fp16/bf16 and
    everything else in fp32: the normalisation's logs, the naive-RV sum of squared returns
    and the small dense heads, whose outputs (momentum ~ 1e-3) are sums with cancellation
    that half precision would turn into 10-40 % relative error.
    """

    def __init__(self, model: onnx.ModelProto, device: torch.device | str = "cpu",
                 conv_dtype: torch.dtype | None = None, conv_matmul: bool = False,
                 merge_gemms: bool = False) -> None:
        g = model.graph
        consts: dict[str, torch.Tensor] = {
            t.name: torch.from_numpy(np.array(numpy_helper.to_array(t))) for t in g.initializer}
        nodes = [n for n in g.node if n.op_type != "Constant"]
        for node in g.node:
            if node.op_type == "Constant":
                value = next(helper.get_attribute_value(a) for a in node.attribute if a.name == "value")
                consts[node.output[0]] = torch.from_numpy(np.array(numpy_helper.to_array(value)))
        if merge_gemms:
            nodes = merge_sibling_gemms(nodes, consts)
        nodes = lower_tree_ensembles(nodes, consts)
        steps: list[tuple[Fn, list[str], list[str]]] = []
        for node in nodes:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type not in OPS:
                raise ValueError(f"ONNX op {node.op_type} is not supported by the torch backend")
            known: Known = [consts.get(i) if i else None for i in node.input]
            fn = OPS[node.op_type](attrs, known)
            inputs = list(node.input)
            if node.op_type == "Conv":
                fn = self._conv_step(attrs, inputs, consts, fn, conv_dtype, conv_matmul)
            if all(i == "" or i in consts for i in inputs):  # fold on the CPU, once
                consts[node.output[0]] = fn(*[consts[i] if i else None for i in inputs])
            else:
                steps.append((fn, inputs, list(node.output)))
        self.device = torch.device(device)
        self.consts = {k: v.to(self.device) for k, v in consts.items()}
        self.steps = steps
        self.input_name = g.input[0].name
        self.output_names = [o.name for o in g.output]

    @staticmethod
    def _conv_step(attrs: dict[str, Any], inputs: list[str], consts: dict[str, torch.Tensor],
                   fn: Fn, dtype: torch.dtype | None, matmul: bool) -> Fn:
        """The Conv op as configured; its weights (renamed in ``inputs``) prepared once."""
        weight = consts.get(inputs[1])
        lowered = conv_as_matmul(attrs, weight) if matmul and weight is not None else None
        if lowered is not None:
            fn, consts[inputs[1] + "::gemm"] = lowered
            inputs[1] += "::gemm"
        if dtype is None:
            return fn
        for j, name in enumerate(inputs[1:], start=1):
            if name in consts:
                inputs[j] = f"{name}::{dtype}"
                consts[inputs[j]] = consts[name].to(dtype)
        return _in_precision(fn, dtype)

    def __call__(self, window: torch.Tensor) -> tuple[torch.Tensor, ...]:
        env = dict(self.consts)
        env[self.input_name] = window
        for fn, inputs, outputs in self.steps:
            env[outputs[0]] = fn(*[env[i] if i else None for i in inputs])  # '': optional, absent
        return tuple(env[o] for o in self.output_names)
