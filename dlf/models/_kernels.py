"""CPU kernels behind the transformer (private): what ``dlf.models.layers`` and ``dlf.models.dlf.model`` call for speed.

The seam, four functions and a context manager; everything else here is an implementation detail:
- :func:`attention`: multi-head softmax attention with dropout. Off the CPU it is
  ``scaled_dot_product_attention``; on it, one hand-written autograd Function (``_CpuAttention``)
  that walks the head-matrices in cache-sized blocks.
- :func:`dropout`: inverted dropout, skipped when it cannot act. On the CPU the keep mask comes from
  16-bit slices of 64-bit random integers (:func:`keep_mask`), several times faster than ``bernoulli_``.
- :func:`dropout_rng`: the generator this thread's CPU dropout masks are drawn from (torch's global one
  when none is set), so that concurrent micro-batches on lanes (``dlf.train.lanes``) each draw from their
  own, seeded stream: a ``torch.Generator`` or a numpy bit generator, whose raw 64-bit words come about
  twice as fast as torch's (mt19937). Off the CPU dropout uses the device's generator.
- :func:`temporal_conv`: ``Conv1d`` over time as one GEMM against all taps.

Each is checked against the literal formula in tests/test_layers.py.
"""
from __future__ import annotations

import contextlib
import math
import threading
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["attention", "dropout", "dropout_rng", "keep_mask", "temporal_conv", "BLOCK"]

_rng = threading.local()


@contextlib.contextmanager
def dropout_rng(generator: torch.Generator | np.random.BitGenerator | None) -> Iterator[None]:
    """Draw this thread's CPU dropout masks from ``generator`` inside the block (None = torch's global one)."""
    old = getattr(_rng, "generator", None)
    _rng.generator = generator
    try:
        yield
    finally:
        _rng.generator = old


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout; skipped when it cannot act. On the CPU the keep mask comes from 16-bit slices of
    full-range 64-bit random integers (p resolved to 1/65536), several times faster than ``bernoulli_``."""
    if not training or p <= 0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    return x * keep_mask(x.shape, p, x.dtype)


def keep_mask(shape: tuple[int, ...] | torch.Size, p: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A CPU tensor of ``shape`` holding 0 with probability p and 1 / (1 - p) otherwise."""
    slices = _random_slices(shape)
    if p >= 1:
        return torch.zeros(slices.shape, dtype=dtype)
    return torch.ge(slices, _keep_threshold(p), out=torch.empty(slices.shape, dtype=dtype)).mul_(1.0 / (1.0 - p))


def _random_slices(shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """Uniform int16 values of ``shape``: four 16-bit slices per full-range 64-bit random integer."""
    n = math.prod(shape)
    words = (n + 3) // 4
    generator = getattr(_rng, "generator", None)  # this thread's (dropout_rng), else torch's global one
    if isinstance(generator, np.random.BitGenerator):  # releases the GIL while it draws
        bits = torch.from_numpy(generator.random_raw(words).view(np.int64))
    else:
        bits = torch.empty(words, dtype=torch.int64).random_(-2 ** 63, None, generator=generator)
    return bits.view(torch.int16)[:n].view(shape)


def _keep_threshold(p: float) -> int:
    """The int16 value a slice must reach to keep its element: P(slice >= threshold) = 1 - p."""
    return round(p * 65536) - 32768


def temporal_conv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``Conv1d`` over time without bias or padding, batch-first: x (B, T, D), weight (d, D, k) -> (B, T-k+1, d).

    One GEMM against all k taps at once, then the k shifted slices summed: no transposed copy of the
    input and one large product instead of a convolution (measured ~1.7x faster on an eval batch of
    64 x 50 x 768 on the CPU). Equal to ``F.conv1d`` up to float rounding (the sum is ordered differently).
    """
    d, dim, k = weight.shape
    b, t, _ = x.shape
    z = torch.matmul(x, weight.permute(1, 2, 0).reshape(dim, k * d)).view(b, t, k, d)  # z[:, s, j] = tap j at s
    out = z[:, :t - k + 1, 0]
    for j in range(1, k):
        out = out + z[:, j:j + t - k + 1, j]
    return out


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_heads: int, p: float,
              mask: torch.Tensor | None) -> torch.Tensor:
    """Multi-head softmax(q k^T / sqrt(d/H) + mask) v with dropout p on the probabilities.

    q (B, Tq, d), k, v (B, Tk, d), already projected -> (B, Tq, d), heads merged. ``mask``: None or a
    MulT mask in its additive form (``dlf.models.layers.future_mask``, 0 / -inf, (Tq, Tk)), which is what
    lets two shortcuts hold: a square one is the plain causal mask, and a single query row (the last
    step) sees every key.
    """
    b, tq, d = q.shape
    tk, c, n = k.shape[1], d // n_heads, b * n_heads
    if q.device.type != "cpu":  # fused kernels off the CPU
        causal = mask is not None and tq == tk
        heads = [x.view(b, -1, n_heads, c).transpose(1, 2) for x in (q, k, v)]  # (B, H, T, c)
        out = F.scaled_dot_product_attention(*heads, attn_mask=None if causal else mask, dropout_p=p,
                                             is_causal=causal)
        return out.transpose(1, 2).reshape(b, tq, d)
    if tq > 1:
        return _CpuAttention.apply(q, k, v, n_heads, mask, p)
    # the last step alone (it may see every key): cheap elementwise form
    qh = q.view(b, tq, n_heads, c).transpose(1, 2).reshape(n, tq, c) * c ** -0.5  # (n, 1, c)
    kt, vt = (x.view(b, tk, n_heads, c).permute(0, 2, 3, 1).reshape(n, c, tk) for x in (k, v))  # (n, c, Tk)
    prob = dropout(torch.softmax((kt * qh.transpose(1, 2)).sum(1, keepdim=True), dim=-1), p, True)
    out_t = (vt * prob).sum(-1, keepdim=True)  # (n, c, 1)
    return out_t.view(b, n_heads, c, tq).permute(0, 3, 1, 2).reshape(b, tq, d)


# Head-matrices per block: a block's (Tq, Tk) scores and probabilities stay in the L2 cache between
# the product, the softmax and the next product. Measured for T = 46 on one core: the forward over
# 640 head-matrices (eval batch 64 x 10 heads) in 2.5 ms blocked against 6.3 ms in one piece; in the
# model, an eval batch ~12% faster. A training micro-batch (16 x 10 heads) is one block.
BLOCK = 160


def _blocks(n: int) -> list[slice]:
    return [slice(i, min(i + BLOCK, n)) for i in range(0, n, BLOCK)]


class _CpuAttention(torch.autograd.Function):
    """Multi-head softmax(q k^T / sqrt(c) + mask) with dropout, times v, on the CPU; hand-written backward.

    q (B, Tq, d), k, v (B, Tk, d) projected; mask (Tq, Tk) additive or None -> (B, Tq, d). The head
    split and merge happen inside, as copies the backward inverts: autograd records one node where the
    same layout changes written outside cost ~14 (view, transpose, reshape, scale): a MOSI training
    micro-step ~3% faster on one thread (202 -> 197 ms median, alternating). Every batched product is
    oriented so that its output's last dimension is a sequence length: MKL is several times slower on
    (46 x 46) @ (46 x 5) per head than on (5 x 46) @ (46 x 46), and autograd's own backward of the
    plain formulation produces the slow orientation. The (n, Tq, Tk) tensors do not fit in cache, so
    both passes walk the n = B * H head-matrices in blocks of ``BLOCK``. The dropout keeps a 0/1 mask
    u01 = prob * keep01 and applies the 1 / (1 - p) scale to the small (n, c, Tq) tensors.
    """

    @staticmethod
    def forward(ctx, q, k, v, n_heads, mask, p):
        b, tq, d = q.shape
        tk, c, n = k.shape[1], d // n_heads, b * n_heads
        ctx.dims, ctx.scale = (b, n_heads, c, tq, tk), (1.0 / (1.0 - p) if 0 < p < 1 else 1.0)
        qh = q.view(b, tq, n_heads, c).transpose(1, 2).reshape(n, tq, c) * c ** -0.5  # (n, Tq, c), scaled
        kt, vt = (x.view(b, tk, n_heads, c).permute(0, 2, 3, 1).reshape(n, c, tk) for x in (k, v))  # (n, c, Tk)
        keep = any(ctx.needs_input_grad[:3])
        prob = q.new_empty(n, tq, tk) if keep else None  # kept whole for the backward only
        used = q.new_empty(n, tq, tk) if keep and p > 0 else prob
        out = q.new_empty(n, c, tq)
        scores = q.new_empty(min(n, BLOCK), tq, tk)  # one block's scores, reused
        work = None if keep else q.new_empty(min(n, BLOCK), tq, tk)  # one block's probabilities (inference)
        for blk in _blocks(n):
            m = blk.stop - blk.start
            s = scores[:m]
            if mask is None:
                torch.bmm(qh[blk], kt[blk], out=s)
            else:
                torch.baddbmm(mask.expand(m, -1, -1), qh[blk], kt[blk], out=s)
            pr = prob[blk] if keep else work[:m]
            torch.ops.aten._softmax.out(s, -1, False, out=pr)  # (an in-place softmax is slower)
            u = pr
            if p > 0:
                u = used[blk] if keep else s  # the scores are spent: their block holds the mask
                torch.ge(_random_slices(s.shape), _keep_threshold(p), out=u)
                u.mul_(pr) if p < 1 else u.zero_()  # prob * 0/1 mask, unscaled
            torch.bmm(vt[blk], u.transpose(1, 2), out=out[blk])  # (m, c, Tq)
        if keep:
            ctx.save_for_backward(qh, kt, vt, prob, used)
        if p > 0:
            out.mul_(ctx.scale)
        return out.view(b, n_heads, c, tq).permute(0, 3, 1, 2).reshape(b, tq, d)  # heads merged: (B, Tq, d)

    @staticmethod
    def backward(ctx, g):
        q, kt, vt, prob, used = ctx.saved_tensors
        b, h, c, tq, tk = ctx.dims
        n = b * h
        # (B, Tq, d) -> the output's head layout (n, c, Tq), contiguous: strided bmm operands are slow
        g = g.reshape(b, tq, h, c).permute(0, 2, 3, 1).reshape(n, c, tq).contiguous()
        if ctx.scale != 1.0:
            g = g * ctx.scale
        g_qt, g_kt, g_vt = q.new_empty(n, c, tq), torch.empty_like(kt), torch.empty_like(vt)
        for blk in _blocks(n):
            torch.bmm(g[blk], used[blk], out=g_vt[blk])  # (m, c, Tk)
            g_used = torch.bmm(g[blk].transpose(1, 2), vt[blk])  # (m, Tq, Tk)
            if used is prob:
                g_s = torch._softmax_backward_data(g_used, prob[blk], -1, prob.dtype)
            else:  # softmax backward through the mask: t = g_u * u; g_s = t - prob * rowsum(t)
                g_s = g_used.mul_(used[blk])
                g_s.addcmul_(prob[blk], g_s.sum(-1, keepdim=True), value=-1)
            torch.bmm(kt[blk], g_s.transpose(1, 2), out=g_qt[blk])  # g_q^T (m, c, Tq)
            torch.bmm(q[blk].transpose(1, 2), g_s, out=g_kt[blk])  # (m, c, Tk)
        g_qt.mul_(c ** -0.5)  # the query's scale, as autograd would apply it
        # head layouts (n, c, T) back to (B, T, d)
        g_q, g_k, g_v = (x.view(b, h, c, -1).permute(0, 3, 1, 2).reshape(b, -1, h * c) for x in (g_qt, g_kt, g_vt))
        return g_q, g_k, g_v, None, None, None
