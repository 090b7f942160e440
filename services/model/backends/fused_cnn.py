"""rtvol_cnn in one GPU kernel: the whole network per request as ONE Triton kernel launch.

At batch 1 the CUDA-graph backend's cost is its graph nodes, not its arithmetic: the
compiled graph was 19 kernels of 1-3 µs with ~1.3 µs between them, and the graph's launch
cost the CPU ~33 µs on the H200 host (docs/BENCHMARKS.md, third session). rtvol_cnn is tiny
(three causal convolutions over 50 steps, two dense layers, three heads), so one program per
window runs all of it in registers: normalisation, the convolutions as fp16/bf16 tensor-core
dots with fp32 accumulation, max/mean/last pooling, the RV tails, the dense layers, the merged
heads and their exp/softmax/tanh, and writes the packed [n, sum of widths] row.

The network is recognised in the repository's ONNX graph (``extract``): anything that is not
rtvol_cnn's layout gives None and the generic (compiled) path serves. What ``extract`` reads
is checked numerically, not trusted: ``reference`` computes the same arithmetic with torch
(tests compare it with ONNX Runtime on the CPU), and the backend compares the kernel itself
with the ONNX graph on the GPU before it serves (cuda_graph.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from rtvol.features.aggregates import RV_TAILS
from rtvol.features.spec import LOG_EPS, STEPS

TAPS = 3  # rtvol_cnn's causal convolutions: kernel 3, padded on the left by 2 x dilation


@dataclass(frozen=True)
class CnnSpec:
    """rtvol_cnn's weights and constants, as read from its ONNX graph (numpy, float32)."""

    steps: int
    features: int
    log_mask: np.ndarray  # [F] 1.0 where the column is log-transformed
    mean: np.ndarray  # [F]
    std: np.ndarray  # [F]
    convs: tuple[tuple[np.ndarray, np.ndarray, int], ...]  # (weight [out, in, 3], bias [out], dilation)
    rv_column: int  # the column whose squares give the bucket's variance
    tails: tuple[int, ...]  # first step of each RV tail (the "wide" path)
    dense: tuple[tuple[np.ndarray, np.ndarray], ...]  # (weight [out, in], bias [out]) x 2
    heads: tuple[np.ndarray, np.ndarray]  # rv, direction, momentum stacked: [1 + k + 1, hidden], bias
    widths: tuple[int, ...]  # (1, k, 1): rv, direction (softmax), momentum (tanh)


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def extract(model: onnx.ModelProto) -> CnnSpec | None:
    """rtvol_cnn's layout read from ``model``, or None where the graph is anything else (then
    the generic path serves it)."""
    g = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant":
            consts[n.output[0]] = numpy_helper.to_array(_attrs(n)["value"])
    producer = {o: n for n in g.node for o in n.output}
    ops = [n.op_type for n in g.node]
    window = g.input[0].name
    try:
        dims = [d.dim_value for d in g.input[0].type.tensor_type.shape.dim[1:]]
        where = next(n for n in g.node if n.op_type == "Where" and n.input[2] == window)
        sub = next(n for n in g.node if n.op_type == "Sub" and n.input[0] == where.output[0])
        div = next(n for n in g.node if n.op_type == "Div" and n.input[0] == sub.output[0])
        convs = []
        for n in (n for n in g.node if n.op_type == "Conv"):
            a = _attrs(n)
            w, b = consts[n.input[1]], consts[n.input[2]]
            if (w.shape[2] != TAPS or a.get("group", 1) != 1 or a.get("strides", [1]) != [1]
                    or any(a.get("pads", [0, 0]))):
                return None
            convs.append((w.astype(np.float32), b.astype(np.float32), int(a.get("dilations", [1])[0])))
        gather = next(n for n in g.node if n.op_type == "Gather" and n.input[0] == window)
        gemms = [n for n in g.node if n.op_type == "Gemm"]
        heads = []
        for out in g.output:  # rv = exp(log_naive + head), direction = softmax(head), momentum = tanh(head)
            last = producer[out.name]
            head = producer[last.input[0]]
            head = producer[head.input[1]] if last.op_type == "Exp" else head
            heads.append((last.op_type, head))
    except (StopIteration, KeyError, IndexError):
        return None
    if (len(dims) != 2 or len(convs) != 3 or ops.count("Relu") != 5 or len(gemms) != 5
            or [op for op, _ in heads] != ["Exp", "Softmax", "Tanh"]
            or [h.op_type for _, h in heads] != ["Gemm"] * 3
            or any(_attrs(n).get("transB") != 1 for n in gemms)):
        return None
    head_outputs = {h.output[0] for _, h in heads}
    dense = tuple((consts[n.input[1]].astype(np.float32), consts[n.input[2]].astype(np.float32))
                  for n in gemms if n.output[0] not in head_outputs)
    tails = tuple(first for _, first in RV_TAILS[1:])
    if dense[0][0].shape[1] != 3 * convs[-1][0].shape[0] + len(tails) + 1:
        return None
    head_w = np.concatenate([consts[h.input[1]] for _, h in heads]).astype(np.float32)
    head_b = np.concatenate([consts[h.input[2]] for _, h in heads]).astype(np.float32)
    return CnnSpec(steps=dims[0], features=dims[1],
                   log_mask=consts[where.input[0]].astype(np.float32),
                   mean=consts[sub.input[1]].astype(np.float32), std=consts[div.input[1]].astype(np.float32),
                   convs=tuple(convs), rv_column=int(consts[gather.input[1]]),
                   tails=tails, dense=dense, heads=(head_w, head_b),
                   widths=tuple(int(consts[h.input[1]].shape[0]) for _, h in heads))


def reference(spec: CnnSpec, window: torch.Tensor, conv_dtype: torch.dtype | None = None) -> torch.Tensor:
    """What the kernel computes, with torch ops: packed [n, sum(widths)] float32. The kernel's
    precision: convolutions' inputs and weights in ``conv_dtype`` (fp32 accumulation), the
    rest in fp32."""
    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).to(window.device)
    x = torch.where(t(spec.log_mask) > 0, torch.log(window.clamp_min(0) + LOG_EPS), window)
    h = ((x - t(spec.mean)) / t(spec.std)).transpose(1, 2)  # [n, F, T]
    for w, b, dilation in spec.convs:
        dt = conv_dtype or torch.float32
        padded = torch.nn.functional.pad(h.to(dt), ((TAPS - 1) * dilation, 0))
        weight = t(w).to(dt).float()
        h = torch.relu(torch.nn.functional.conv1d(padded.float(), weight, t(b), dilation=dilation))
    variance = window[:, :, spec.rv_column] ** 2
    log_naive = 0.5 * torch.log(variance.sum(dim=1, keepdim=True) + LOG_EPS ** 2)
    tails = [0.5 * torch.log(variance[:, first:].mean(dim=1, keepdim=True) * STEPS + LOG_EPS ** 2) - log_naive
             for first in spec.tails]
    level = (log_naive - float(spec.mean[spec.rv_column])) / float(spec.std[spec.rv_column])
    z = torch.cat([h.amax(dim=2), h.mean(dim=2), h[:, :, -1], *tails, level], dim=1)
    for w, b in spec.dense:
        z = torch.relu(z @ t(w).T + t(b))
    o = z @ t(spec.heads[0]).T + t(spec.heads[1])
    k = spec.widths[1]
    return torch.cat([torch.exp(log_naive + o[:, :1]), torch.softmax(o[:, 1:1 + k], dim=1),
                      torch.tanh(o[:, 1 + k:2 + k])], dim=1)


def _pow2(n: int) -> int:
    return max(16, 1 << (n - 1).bit_length())


def _padded(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(shape, np.float32)
    out[tuple(slice(0, s) for s in a.shape)] = a
    return out


class FusedCnn:
    """The kernel's weights on ``device`` (padded to powers of two: zero weights, zero bias, so
    padded channels stay 0 through every ReLU); ``fused(window, out)`` launches it once."""

    def __init__(self, spec: CnnSpec, device: torch.device, dtype: torch.dtype) -> None:
        self.spec = spec
        widths = [spec.features] + [w.shape[0] for w, _, _ in spec.convs]
        self.channels = [_pow2(c) for c in widths]
        hidden = [w.shape[0] for w, _ in spec.dense]
        self.hidden = [_pow2(h) for h in hidden]
        self.width = sum(spec.widths)

        def dev(a: np.ndarray, dt: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(device=device, dtype=dt)
        f = self.channels[0]
        self.norm = [dev(_padded(spec.log_mask, (f,))), dev(_padded(spec.mean, (f,))),
                     dev(_padded(spec.std, (f,)) + (np.arange(f) >= spec.features))]  # std 1 where padded
        self.convs = []
        for (w, b, _), c_in, c_out in zip(spec.convs, self.channels[:-1], self.channels[1:], strict=True):
            taps = w.transpose(2, 1, 0)  # [tap, in, out]: tap j reads step t - (2 - j) x dilation
            self.convs += [dev(_padded(taps, (TAPS, c_in, c_out)), dtype), dev(_padded(b, (c_out,)))]
        c3 = self.channels[-1]
        w1, b1 = spec.dense[0]
        pooled = spec.convs[-1][0].shape[0]
        # dense 1's input rows: max, mean, last (each padded to c3), then the tails and the level
        rows = [_padded(w1[:, i * pooled:(i + 1) * pooled].T, (c3, w1.shape[0])) for i in range(3)]
        rows.append(w1[:, 3 * pooled:].T)
        self.dense = [dev(_padded(np.concatenate(rows), (3 * c3 + w1.shape[1] - 3 * pooled, self.hidden[0]))),
                      dev(_padded(b1, (self.hidden[0],)))]
        w2, b2 = spec.dense[1]
        self.dense += [dev(_padded(w2.T, (self.hidden[0], self.hidden[1]))),
                       dev(_padded(b2, (self.hidden[1],)))]
        self.head_cols = _pow2(self.width)
        self.heads = [dev(_padded(spec.heads[0].T, (self.hidden[1], self.head_cols))),
                      dev(_padded(spec.heads[1], (self.head_cols,)))]
        self.tails = dev(np.array(spec.tails, np.int32), torch.int32)

    def __call__(self, window: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``window`` [n, T, F] float32 and ``out`` [n, width] float32, contiguous, on the GPU
        (or pinned host memory, which the GPU reads and writes in place)."""
        from rtvol.services.model.backends import fused_cnn_kernel  # Triton: GPU hosts only

        s = self.spec
        fused_cnn_kernel.launch(window, out, self.norm, self.convs, self.dense, self.heads, self.tails,
                           steps=s.steps, features=s.features, channels=self.channels,
                           dilations=[d for _, _, d in s.convs], hidden=self.hidden,
                           rv_column=s.rv_column,
                           level=(float(s.mean[s.rv_column]), float(s.std[s.rv_column])),
                           directions=s.widths[1], width=self.width, head_cols=self.head_cols,
                           log_eps=LOG_EPS, steps_scale=float(STEPS))
        return out
