"""The Triton kernel behind fused_cnn.FusedCnn (imported only where Triton is): one program
per window, everything in registers. A causal convolution is three dots, one per tap; the
tap that reads ``s`` steps back gets its rows shifted by a one-hot [T, T] matrix product
(exact: each output is one fp16 value times 1), which keeps the activations in registers
instead of a round trip through memory and a barrier."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl


@triton.jit
def _conv(h, w_ptr, b_ptr, D: tl.constexpr, TP: tl.constexpr, CI: tl.constexpr, CO: tl.constexpr):
    """relu(causal conv(h)) for h [TP, CI] in the weights' dtype: fp32 [TP, CO]."""
    rows = tl.arange(0, TP)[:, None]
    cols = tl.arange(0, TP)[None, :]
    ci = tl.arange(0, CI)[:, None]
    co = tl.arange(0, CO)[None, :]
    acc = tl.zeros([TP, CO], tl.float32)
    for j in tl.static_range(3):
        shift = tl.where(cols == rows - (2 - j) * D, 1.0, 0.0).to(h.dtype)  # row t <- row t - s
        hs = tl.dot(shift, h).to(h.dtype)
        acc = tl.dot(hs, tl.load(w_ptr + j * CI * CO + ci * CO + co), acc)
    return tl.maximum(acc + tl.load(b_ptr + tl.arange(0, CO))[None, :], 0.0)


@triton.jit
def _volcnn(x_ptr, out_ptr, mask_ptr, mean_ptr, std_ptr,
            w1_ptr, b1_ptr, w2_ptr, b2_ptr, w3_ptr, b3_ptr,
            d1w_ptr, d1b_ptr, d2w_ptr, d2b_ptr, hw_ptr, hb_ptr, tails_ptr,
            log_eps, level_mean, level_std, steps_scale,
            T: tl.constexpr, F: tl.constexpr, TP: tl.constexpr,
            C0: tl.constexpr, C1: tl.constexpr, C2: tl.constexpr, C3: tl.constexpr,
            D1: tl.constexpr, D2: tl.constexpr, D3: tl.constexpr, RV: tl.constexpr, NT: tl.constexpr,
            H1: tl.constexpr, H2: tl.constexpr, K: tl.constexpr, WIDTH: tl.constexpr, NH: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_ptr += row * T * F
    t = tl.arange(0, TP)
    c = tl.arange(0, C0)
    lm = tl.load(mask_ptr + c)[None, :]
    mu = tl.load(mean_ptr + c)[None, :]
    sd = tl.load(std_ptr + c)[None, :]
    # first convolution: each tap reads its shifted rows straight from the window, normalised
    acc = tl.zeros([TP, C1], tl.float32)
    for j in tl.static_range(3):
        src = t - (2 - j) * D1
        ok = ((src >= 0) & (src < T))[:, None] & (c < F)[None, :]
        x = tl.load(x_ptr + src[:, None] * F + c[None, :], mask=ok, other=1.0)
        x = tl.where(lm > 0, tl.log(tl.maximum(x, 0.0) + log_eps), x)
        x = tl.where(ok, (x - mu) / sd, 0.0).to(w1_ptr.dtype.element_ty)
        acc = tl.dot(x, tl.load(w1_ptr + j * C0 * C1 + c[:, None] * C1 + tl.arange(0, C1)[None, :]), acc)
    h = tl.maximum(acc + tl.load(b1_ptr + tl.arange(0, C1))[None, :], 0.0).to(w1_ptr.dtype.element_ty)
    h = _conv(h, w2_ptr, b2_ptr, D2, TP, C1, C2).to(w1_ptr.dtype.element_ty)
    h = _conv(h, w3_ptr, b3_ptr, D3, TP, C2, C3)  # fp32; rows >= T hold padding, never read
    valid = (t < T)[:, None]
    h_max = tl.max(tl.where(valid, h, float("-inf")), axis=0)
    h_mean = tl.sum(tl.where(valid, h, 0.0), axis=0) / T
    h_last = tl.sum(tl.where((t == T - 1)[:, None], h, 0.0), axis=0)
    # the wide path: the bucket's RV from its steps' squares, the tails relative to it
    rv = tl.load(x_ptr + t * F + RV, mask=t < T, other=0.0)
    var = rv * rv
    log_naive = 0.5 * tl.log(tl.sum(var, axis=0) + log_eps * log_eps)
    # dense 1 over [max, mean, last, tails..., level]
    c3 = tl.arange(0, C3)[:, None]
    o1 = tl.arange(0, H1)
    z = tl.load(d1b_ptr + o1)
    z += tl.sum(h_max[:, None] * tl.load(d1w_ptr + c3 * H1 + o1[None, :]), axis=0)
    z += tl.sum(h_mean[:, None] * tl.load(d1w_ptr + (C3 + c3) * H1 + o1[None, :]), axis=0)
    z += tl.sum(h_last[:, None] * tl.load(d1w_ptr + (2 * C3 + c3) * H1 + o1[None, :]), axis=0)
    for k in tl.static_range(NT):
        first = tl.load(tails_ptr + k)
        tail_var = tl.sum(tl.where((t >= first) & (t < T), var, 0.0), axis=0) / (T - first).to(tl.float32)
        tail = 0.5 * tl.log(tail_var * steps_scale + log_eps * log_eps) - log_naive
        z += tail * tl.load(d1w_ptr + (3 * C3 + k) * H1 + o1)
    z += (log_naive - level_mean) / level_std * tl.load(d1w_ptr + (3 * C3 + NT) * H1 + o1)
    z = tl.maximum(z, 0.0)
    o2 = tl.arange(0, H2)
    z2 = tl.sum(z[:, None] * tl.load(d2w_ptr + o1[:, None] * H2 + o2[None, :]), axis=0)
    z2 += tl.load(d2b_ptr + o2)
    z2 = tl.maximum(z2, 0.0)
    col = tl.arange(0, NH)
    o = tl.sum(z2[:, None] * tl.load(hw_ptr + o2[:, None] * NH + col[None, :]), axis=0)
    o += tl.load(hb_ptr + col)
    # packed: rv = exp(log_naive + head), direction = softmax, momentum = tanh
    is_dir = (col >= 1) & (col < 1 + K)
    top = tl.max(tl.where(is_dir, o, float("-inf")), axis=0)
    e = tl.where(is_dir, tl.exp(o - top), 0.0)
    tanh = 2.0 * tl.sigmoid(2.0 * o) - 1.0
    packed = tl.where(col == 0, tl.exp(log_naive + o), tl.where(is_dir, e / tl.sum(e, axis=0), tanh))
    tl.store(out_ptr + row * WIDTH + col, packed, mask=col < WIDTH)


def launch(window: torch.Tensor, out: torch.Tensor, norm: Sequence[torch.Tensor],
           convs: Sequence[torch.Tensor], dense: Sequence[torch.Tensor], heads: Sequence[torch.Tensor],
           tails: torch.Tensor, *, steps: int,
           features: int, channels: Sequence[int], dilations: Sequence[int], hidden: Sequence[int],
           rv_column: int, level: tuple[float, float], directions: int, width: int, head_cols: int,
           log_eps: float, steps_scale: float) -> None:
    n = window.shape[0]
    _volcnn[(n,)](window, out, *norm, *convs, *dense, *heads, tails,
                  log_eps, level[0], level[1], steps_scale,
                  T=steps, F=features, TP=max(16, triton.next_power_of_2(steps)),
                  C0=channels[0], C1=channels[1], C2=channels[2], C3=channels[3],
                  D1=dilations[0], D2=dilations[1], D3=dilations[2], RV=rv_column, NT=tails.shape[0],
                  H1=hidden[0], H2=hidden[1], K=directions, WIDTH=width, NH=head_cols, num_warps=4)
