"""The MulT / fairseq-style transformer encoder that every DLF stack is built from, written once.

Behaviour (official DLF = DMD = MulT code): the input is scaled by sqrt(d) and gets sinusoidal
positions (sin block then cos block; position t+1 where channel 0 of the *unscaled* input is
non-zero, the zero vector where it is exactly 0), then embedding dropout; ``n`` pre-LayerNorm layers
(LN -> multi-head attention with a fused 3d x d in-projection -> residual; LN -> Linear(d, 4d) ->
ReLU -> Linear(4d, d) -> residual); a final LayerNorm. With a ``source`` the layers cross-attend:
every layer reads the same embedded source (key and value get separate embedding-dropout masks, as
in the official code) through its own first LayerNorm, and only the query stream is updated.

The optional causal mask follows the MulT rule ``triu(-inf, 1 + |T_k - T_q|)``: query i may attend to
keys j <= i + |T_k - T_q|, which is a plain causal mask when the lengths are equal.

Layout is batch-first, (B, T, d); parameter names match the official state_dict
(``layers.N.self_attn.in_proj_weight``, ``layers.N.fc1``, ``layers.N.layer_norms.0``, ``layer_norm``).
Randomness: on the CPU every dropout mask is drawn from the generator set by :func:`dropout_rng` for the
calling thread (the global generator when none is set), so concurrent micro-batches on worker threads
each draw from their own, seeded stream. Off the CPU dropout is ``F.dropout`` on the device's generator.

Speed: attention runs in ``scaled_dot_product_attention`` off the CPU and in one hand-written autograd
Function on it (``_CpuAttention``); dropout is only called when it can act;
``last_only`` computes the last layer for the final time step alone (its output is all that DLF's
last-step pooling reads), which is exact because the last query sees every key under the mask.
"""
from __future__ import annotations

import contextlib
import math
import threading
from functools import lru_cache
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TransformerEncoder", "TransformerLayer", "MultiheadAttention", "sinusoidal_table", "mult_mask", "dropout",
           "keep_mask", "attention", "dropout_rng", "temporal_conv"]

_rng = threading.local()


@contextlib.contextmanager
def dropout_rng(generator: torch.Generator | None) -> Iterator[None]:
    """Draw this thread's CPU dropout masks from ``generator`` inside the block (None = the global one)."""
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
    return _mask_from_lanes(_random_lanes(shape), p, dtype)


def _random_lanes(shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """Uniform int16 values of ``shape``: four per full-range 64-bit random integer."""
    n = math.prod(shape)
    generator = getattr(_rng, "generator", None)  # this thread's (dropout_rng), else the global one
    bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-2 ** 63, None, generator=generator)
    return bits.view(torch.int16)[:n].view(shape)


def _keep_threshold(p: float) -> int:
    """The int16 lane value a lane must reach to keep its element: P(lane >= threshold) = 1 - p."""
    return round(p * 65536) - 32768


def _mask_from_lanes(lanes: torch.Tensor, p: float, dtype: torch.dtype) -> torch.Tensor:
    if p >= 1:
        return torch.zeros(lanes.shape, dtype=dtype)
    return torch.ge(lanes, _keep_threshold(p), out=torch.empty(lanes.shape, dtype=dtype)).mul_(1.0 / (1.0 - p))


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


@lru_cache(maxsize=64)
def sinusoidal_table(length: int, dim: int, device: str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Rows 1..length of the fairseq sinusoidal table (row 0, the padding row, is all zeros): (length, dim)."""
    with torch.inference_mode(False):  # cached: must stay usable by autograd even if first built in inference
        return _table(length, dim).to(device=device, dtype=dtype)


def _table(length: int, dim: int) -> torch.Tensor:
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float) * -(math.log(10000) / (half - 1)))
    angles = torch.arange(1, length + 1, dtype=torch.float).unsqueeze(1) * freq.unsqueeze(0)  # (length, half)
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2:
        table = torch.cat([table, torch.zeros(length, 1)], dim=1)
    return table


@lru_cache(maxsize=64)
def mult_mask(tq: int, tk: int, device: str = "cpu") -> torch.Tensor:
    """Boolean (tq, tk) attention mask, True = may attend: key j is visible to query i iff j <= i + |tk - tq|."""
    with torch.inference_mode(False):
        i = torch.arange(tq).unsqueeze(1)
        j = torch.arange(tk).unsqueeze(0)
        return (j <= i + abs(tk - tq)).to(device)


@lru_cache(maxsize=64)
def _additive_mask(tq: int, tk: int, device: str = "cpu") -> torch.Tensor:
    """The MulT mask as 0 / -inf (official ``buffered_future_mask``), (tq, tk)."""
    with torch.inference_mode(False):
        return torch.zeros(tq, tk).masked_fill(~mult_mask(tq, tk, "cpu"), float("-inf")).to(device)


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
                torch.ge(_random_lanes(s.shape), _keep_threshold(p), out=u)
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


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_heads: int, p: float, causal: bool) -> torch.Tensor:
    """Multi-head softmax(q k^T / sqrt(d/H)) v with the MulT mask when ``causal``; q (B, Tq, d), k, v (B, Tk, d)."""
    b, tq, d = q.shape
    tk, c, n = k.shape[1], d // n_heads, b * n_heads
    if q.device.type != "cpu":  # fused kernels off the CPU
        mask = mult_mask(tq, tk, str(q.device)) if causal and tq != tk else None
        heads = [x.view(b, -1, n_heads, c).transpose(1, 2) for x in (q, k, v)]  # (B, H, T, c)
        out = F.scaled_dot_product_attention(*heads, attn_mask=mask, dropout_p=p, is_causal=causal and tq == tk)
        return out.transpose(1, 2).reshape(b, tq, d)
    if tq > 1:
        return _CpuAttention.apply(q, k, v, n_heads, _additive_mask(tq, tk) if causal else None, p)
    # the last step alone (it may see every key): cheap elementwise form
    qh = q.view(b, tq, n_heads, c).transpose(1, 2).reshape(n, tq, c) * c ** -0.5  # (n, 1, c)
    kt, vt = (x.view(b, tk, n_heads, c).permute(0, 2, 3, 1).reshape(n, c, tk) for x in (k, v))  # (n, c, Tk)
    prob = dropout(torch.softmax((kt * qh.transpose(1, 2)).sum(1, keepdim=True), dim=-1), p, True)
    out_t = (vt * prob).sum(-1, keepdim=True)  # (n, c, 1)
    return out_t.view(b, n_heads, c, tq).permute(0, 3, 1, 2).reshape(b, tq, d)


class MultiheadAttention(nn.Module):
    """Multi-head attention with the fused in-projection of the official code (Xavier init, zero biases)."""

    def __init__(self, d: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        if d % n_heads:
            raise ValueError(f"embedding width {d} is not divisible by {n_heads} heads")
        self.d, self.n_heads, self.dropout = d, n_heads, dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d, d))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * d))
        self.out_proj = nn.Linear(d, d)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.xavier_uniform_(self.out_proj.weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def project(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """x @ W[start*d:stop*d].T + b: rows 0 = query, 1 = key, 2 = value of the fused projection."""
        d = self.d
        return F.linear(x, self.in_proj_weight[start * d:stop * d], self.in_proj_bias[start * d:stop * d])

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
        """Projected q (B, Tq, d), k, v (B, Tk, d) -> attention output after out_proj, (B, Tq, d)."""
        p = self.dropout if self.training else 0.0
        return self.out_proj(attention(q, k, v, self.n_heads, p, causal))


class TransformerLayer(nn.Module):
    """One pre-LayerNorm encoder layer; cross-attention when key/value sources are given."""

    def __init__(self, d: int, n_heads: int, attn_dropout: float, relu_dropout: float, res_dropout: float,
                 causal: bool):
        super().__init__()
        self.self_attn = MultiheadAttention(d, n_heads, attn_dropout)
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)
        for fc in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)
        self.layer_norms = nn.ModuleList([nn.LayerNorm(d), nn.LayerNorm(d)])
        self.relu_dropout, self.res_dropout, self.causal = relu_dropout, res_dropout, causal

    def forward(self, x: torch.Tensor, key: torch.Tensor | None = None, value: torch.Tensor | None = None,
                last_only: bool = False) -> torch.Tensor:
        """x (B, T, d); key/value (B, S, d) embedded sources or None. ``last_only``: return (B, 1, d) for step T-1."""
        attn, ln0 = self.self_attn, self.layer_norms[0]
        h = ln0(x)
        if key is None:
            if last_only:
                k, v = attn.project(h, 1, 3).chunk(2, dim=-1)
                q = attn.project(h[:, -1:], 0, 1)
            else:
                q, k, v = attn.project(h, 0, 3).chunk(3, dim=-1)
        else:
            q = attn.project(h[:, -1:] if last_only else h, 0, 1)
            if value is key:  # no separate dropout masks: one LayerNorm and one fused k/v projection
                k, v = attn.project(ln0(key), 1, 3).chunk(2, dim=-1)
            else:
                k, v = attn.project(ln0(key), 1, 2), attn.project(ln0(value), 2, 3)
        # The last query may attend to every key under the MulT rule, so last_only needs no mask.
        causal = self.causal and not last_only
        residual = x[:, -1:] if last_only else x
        x = residual + dropout(attn.attend(q, k, v, causal), self.res_dropout, self.training)
        h = F.relu(self.fc1(self.layer_norms[1](x)))
        h = self.fc2(dropout(h, self.relu_dropout, self.training))
        return x + dropout(h, self.res_dropout, self.training)


class TransformerEncoder(nn.Module):
    """Embedding (sqrt(d) scale + sinusoidal positions + dropout), ``n_layers`` layers, final LayerNorm.

    ``positions=False`` leaves the positions out (the embedding is the sqrt(d) scale alone), as MMSA's
    MULT does."""

    def __init__(self, d: int, n_heads: int, n_layers: int, attn_dropout: float = 0.0, relu_dropout: float = 0.0,
                 res_dropout: float = 0.0, embed_dropout: float = 0.0, causal: bool = True, positions: bool = True):
        super().__init__()
        self.d, self.embed_scale, self.embed_dropout = d, math.sqrt(d), embed_dropout
        self.positions = positions
        self.layers = nn.ModuleList(
            [TransformerLayer(d, n_heads, attn_dropout, relu_dropout, res_dropout, causal) for _ in range(n_layers)])
        self.layer_norm = nn.LayerNorm(d)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """sqrt(d) * x + position embedding, zero where channel 0 of x is exactly 0 (fairseq padding rule)."""
        if not self.positions:
            return x * self.embed_scale
        table = sinusoidal_table(x.shape[1], self.d, str(x.device), x.dtype)  # (T, d)
        keep = (x[..., :1] != 0).to(x.dtype)  # (B, T, 1)
        return torch.addcmul(x * self.embed_scale, keep, table)

    def forward(self, x: torch.Tensor, source: torch.Tensor | None = None, last_only: bool = False) -> torch.Tensor:
        """x (B, T, d), optional source (B, S, d) -> (B, T, d), or (B, 1, d) for the last step with ``last_only``."""
        p, training = self.embed_dropout, self.training
        x = dropout(self.embed(x), p, training)
        key = value = None
        if source is not None:
            src = self.embed(source)
            key = dropout(src, p, training)
            value = dropout(src, p, training) if training and p > 0 else key
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x, key, value, last_only=last_only and i == last)
        return self.layer_norm(x)
