"""dlf.layers against a plain, literal MulT transformer (time-first, per-head bmm, float mask), and the CPU
kernels it calls (dlf.models._kernels: attention, dropout, the temporal convolution) against their literal formulas."""
import math

import pytest
import torch
import torch.nn.functional as F

from dlf.models._kernels import BLOCK, attention, dropout, keep_mask, temporal_conv
from dlf.models.layers import TransformerEncoder, future_mask, mult_mask, sinusoidal_table

torch.set_num_threads(1)


def ref_positions(x_tb0: torch.Tensor, d: int) -> torch.Tensor:
    """fairseq: position t+1 where channel 0 != 0, else the zero row; sin block then cos block. (T, B) -> (T, B, d)."""
    t_len = x_tb0.shape[0]
    half = d // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float) * -(math.log(10000) / (half - 1)))
    table = torch.arange(t_len + 1, dtype=torch.float).unsqueeze(1) * freq.unsqueeze(0)
    table = torch.cat([torch.sin(table), torch.cos(table)], dim=1)
    table[0] = 0
    pos = torch.arange(1, t_len + 1).unsqueeze(1).expand_as(x_tb0) * (x_tb0 != 0)
    return table[pos]


def ref_layer(layer, x, k=None, v=None, causal=True):
    """One official pre-LN layer on (T, B, d) inputs, written out literally."""
    attn, ln0, ln1 = layer.self_attn, layer.layer_norms[0], layer.layer_norms[1]
    d, h = attn.d, attn.n_heads
    w, b = attn.in_proj_weight, attn.in_proj_bias
    residual = x
    x = ln0(x)
    k = x if k is None else ln0(k)
    v = x if v is None else ln0(v)
    q = F.linear(x, w[:d], b[:d]) * (d // h) ** -0.5
    kk, vv = F.linear(k, w[d:2 * d], b[d:2 * d]), F.linear(v, w[2 * d:], b[2 * d:])
    tq, bsz, _ = q.shape
    tk = kk.shape[0]
    q = q.contiguous().view(tq, bsz * h, d // h).transpose(0, 1)
    kk = kk.contiguous().view(tk, bsz * h, d // h).transpose(0, 1)
    vv = vv.contiguous().view(tk, bsz * h, d // h).transpose(0, 1)
    scores = torch.bmm(q, kk.transpose(1, 2))
    if causal:
        scores = scores + torch.triu(torch.full((tq, tk), float("-inf")), 1 + abs(tk - tq))
    out = torch.bmm(torch.softmax(scores, -1), vv).transpose(0, 1).contiguous().view(tq, bsz, d)
    x = residual + attn.out_proj(out)
    residual = x
    x = layer.fc2(F.relu(layer.fc1(ln1(x))))
    return residual + x


def ref_encoder(enc, x_btd, src_btd=None, causal=True):
    """The official TransformerEncoder.forward (eval mode) on batch-first inputs; returns batch-first."""
    def embed(z):
        zt = z.transpose(0, 1)
        return math.sqrt(enc.d) * zt + ref_positions(zt[:, :, 0], enc.d)

    x = embed(x_btd)
    k = v = embed(src_btd) if src_btd is not None else None
    for layer in enc.layers:
        x = ref_layer(layer, x, k, v, causal)
    return enc.layer_norm(x).transpose(0, 1)


def padded(b, t, d, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, d, generator=g)
    x[0, t - 3:] = 0  # zero padding at the end of sample 0: position embedding must be 0 there
    x[1, 2, 0] = 0  # a single zero in channel 0: that step gets no position embedding either
    return x


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("tq,tk", [(9, None), (9, 9), (7, 12), (12, 7)])
def test_encoder_matches_literal_mult(causal, tq, tk):
    torch.manual_seed(0)
    enc = TransformerEncoder(20, 4, 2, causal=causal).eval()
    x = padded(3, tq, 20, 1).requires_grad_()
    src = padded(3, tk, 20, 2).requires_grad_() if tk else None
    ours = enc(x, src)
    ref = ref_encoder(enc, x, src, causal)
    assert ours.shape == (3, tq, 20)
    assert torch.allclose(ours, ref, atol=1e-5)
    # the hand-written CPU attention backward against autograd of the literal version
    w = torch.randn_like(ours)
    inputs = [x] + ([src] if src is not None else []) + list(enc.parameters())
    g_ours = torch.autograd.grad((ours * w).sum(), inputs)
    g_ref = torch.autograd.grad((ref * w).sum(), inputs)
    for a, b in zip(g_ours, g_ref):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5 * b.abs().max().item())


def test_last_only_equals_last_step_of_full_output():
    torch.manual_seed(0)
    enc = TransformerEncoder(20, 4, 3).eval()
    x = padded(2, 11, 20, 3)
    full, last = enc(x), enc(x, last_only=True)
    assert last.shape == (2, 1, 20)
    assert torch.allclose(full[:, -1:], last, atol=1e-6)
    src = padded(2, 15, 20, 4)
    assert torch.allclose(enc(x, src)[:, -1:], enc(x, src, last_only=True), atol=1e-6)


def test_sinusoidal_table_and_padding_rule():
    table = sinusoidal_table(4, 6)
    freq = [math.exp(-i * math.log(10000) / 2) for i in range(3)]  # half = 3 -> divisor half - 1 = 2
    expected = [[math.sin(p * f) for f in freq] + [math.cos(p * f) for f in freq] for p in range(1, 5)]
    assert torch.allclose(table, torch.tensor(expected), atol=1e-6)
    enc = TransformerEncoder(6, 2, 1)
    x = torch.zeros(1, 4, 6)
    x[0, 1, 0] = 1.0  # only step 1 has a non-zero channel 0
    emb = enc.embed(x)
    assert torch.equal(emb[0, 0], torch.zeros(6)) and torch.equal(emb[0, 2:], torch.zeros(2, 6))
    assert torch.allclose(emb[0, 1], math.sqrt(6) * x[0, 1] + table[1])  # position 2 = row index 1


def test_mult_mask_offset_rule():
    assert torch.equal(mult_mask(3, 3), torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool))
    # unequal lengths: offset |Tk - Tq| = 2, query i sees keys j <= i + 2
    assert torch.equal(mult_mask(2, 4), torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool))
    assert torch.equal(mult_mask(3, 2), torch.tensor([[1, 1], [1, 1], [1, 1]], dtype=torch.bool))
    # the additive form the attention takes: the official triu(-inf, 1 + |Tk - Tq|)
    for tq, tk in ((3, 3), (2, 4), (3, 2)):
        assert torch.equal(future_mask(tq, tk), torch.triu(torch.full((tq, tk), float("-inf")), 1 + abs(tk - tq)))


def test_keep_mask_statistics_and_values():
    torch.manual_seed(0)
    m = keep_mask((200, 500), 0.3)
    values = torch.unique(m)
    assert values.tolist()[0] == 0.0 and len(values) == 2 and values[1].item() == pytest.approx(1 / 0.7)
    assert abs((m == 0).float().mean().item() - 0.3) < 0.005
    assert abs(m.mean().item() - 1.0) < 0.01
    assert torch.equal(keep_mask((3, 3), 1.0), torch.zeros(3, 3))


def test_dropout_is_skipped_when_it_cannot_act():
    x = torch.randn(4, 5)
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0, training=True) is x
    torch.manual_seed(1)
    y = dropout(x, 0.5, training=True)
    kept = y != 0
    assert torch.allclose(y[kept], 2 * x[kept])


def test_attention_dropout_uses_one_mask_forward_and_backward():
    """With the RNG re-seeded, the attention dropout mask is keep_mask's first draw: check fwd and grads."""
    q, k, v = (torch.randn(2, 6, 8, requires_grad=True) for _ in range(3))
    torch.manual_seed(5)
    out = attention(q, k, v, 2, 0.4, future_mask(6, 6))
    grads = torch.autograd.grad(out.pow(2).sum(), (q, k, v))
    torch.manual_seed(5)
    keep = keep_mask((4, 6, 6), 0.4)
    heads = [x.view(2, 6, 2, 4).transpose(1, 2).reshape(4, 6, 4) for x in (q, k, v)]
    scores = heads[0] @ heads[1].transpose(1, 2) / 2 + torch.triu(torch.full((6, 6), float("-inf")), 1)
    ref = (torch.softmax(scores, -1) * keep) @ heads[2]
    ref = ref.view(2, 2, 6, 4).transpose(1, 2).reshape(2, 6, 8)
    assert torch.allclose(out, ref, atol=1e-6)
    for a, b in zip(grads, torch.autograd.grad(ref.pow(2).sum(), (q, k, v))):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("tq,tk,p", [(9, 9, 0.0), (7, 12, 0.0), (6, 6, 0.3)])
def test_blocked_attention_matches_the_literal_formula_past_one_block(tq, tk, p):
    """43 samples x 4 heads = 172 head-matrices: more than one BLOCK, the last one partial; with and
    without autograd (the inference path keeps no probabilities), with dropout (6 x 6 = 36 random 16-bit
    slices per matrix, a multiple of 4: the blocks' draws then continue keep_mask's one stream exactly)."""
    b, h, d = 43, 4, 8
    assert b * h > BLOCK and (b * h) % BLOCK
    q, k, v = torch.randn(b, tq, d, requires_grad=True), *(torch.randn(b, tk, d, requires_grad=True) for _ in "kv")
    torch.manual_seed(5)
    out = attention(q, k, v, h, p, future_mask(tq, tk))
    grads = torch.autograd.grad(out.pow(2).sum(), (q, k, v))
    torch.manual_seed(5)
    keep = keep_mask((b * h, tq, tk), p) if p else 1.0
    heads = [x.view(b, -1, h, 2).transpose(1, 2).reshape(b * h, -1, 2) for x in (q, k, v)]
    mask = torch.triu(torch.full((tq, tk), float("-inf")), 1 + abs(tk - tq))
    ref = (torch.softmax(heads[0] @ heads[1].transpose(1, 2) / math.sqrt(2) + mask, -1) * keep) @ heads[2]
    ref = ref.view(b, h, tq, 2).transpose(1, 2).reshape(b, tq, d)
    assert torch.allclose(out, ref, atol=1e-6)
    for a, r in zip(grads, torch.autograd.grad(ref.pow(2).sum(), (q, k, v))):
        assert torch.allclose(a, r, atol=1e-5)
    if not p:
        with torch.inference_mode():
            assert torch.allclose(attention(q, k, v, h, 0.0, future_mask(tq, tk)), ref, atol=1e-6)


@pytest.mark.parametrize("k", [1, 3])
def test_temporal_conv_is_conv1d_over_time(k):
    """The GEMM-and-shifted-sums form against the literal Conv1d on the time-first layout (no bias, no padding)."""
    g = torch.Generator().manual_seed(0)
    x, weight = torch.randn(4, 11, 7, generator=g), torch.randn(5, 7, k, generator=g)
    ref = F.conv1d(x.transpose(1, 2), weight).transpose(1, 2)
    out = temporal_conv(x, weight)
    assert out.shape == (4, 11 - k + 1, 5) and torch.allclose(out, ref, atol=1e-5)
