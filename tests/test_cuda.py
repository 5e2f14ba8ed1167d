"""The model and trainer on CUDA (skipped without a GPU; run by benchmarks/device_check.sh on one).

The CUDA path differs from the CPU one in two places: attention runs in
``scaled_dot_product_attention`` (the CPU has a hand-written kernel) and dropout draws from the
device's generator. Everything else (the GEMM input projection, losses, the trainer) is shared.
"""
from __future__ import annotations

import pytest
import torch

from dlf.study.catalogue import REFERENCE_SHAPES, get_variant, load_catalogue, variant_config
from dlf.config import apply_overrides
from dlf.models.layers import TransformerEncoder
from dlf.models.dlf.losses import loss_terms
from dlf.models.dlf.model import build_model
from dlf.train.loop import Runtime, train_run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda")


@pytest.mark.parametrize("tq,tk", [(46, 46), (46, 375), (50, 20)])
def test_sdpa_attention_matches_the_cpu_kernel(tq, tk):
    """Equal and unequal lengths (the MulT mask offset), outputs and gradients, eval mode."""
    torch.manual_seed(0)
    enc = TransformerEncoder(50, 10, 2, causal=True).eval()
    x, src = torch.randn(4, tq, 50, requires_grad=True), torch.randn(4, tk, 50, requires_grad=True)
    cpu = enc(x, src)
    g_cpu = torch.autograd.grad(cpu.square().sum(), [x, src, *enc.parameters()])
    enc_gpu = enc.to(CUDA)
    xg, sg = x.detach().to(CUDA).requires_grad_(), src.detach().to(CUDA).requires_grad_()
    gpu = enc_gpu(xg, sg)
    g_gpu = torch.autograd.grad(gpu.square().sum(), [xg, sg, *enc_gpu.parameters()])
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-4)
    for a, b in zip(g_gpu, g_cpu):
        assert torch.allclose(a.cpu(), b, rtol=1e-3, atol=1e-3 * b.abs().max().item())


@pytest.mark.parametrize("name", [n for n, v in load_catalogue().items()
                                  if variant_config("mosi", v).model.text_encoder == "features"
                                  and variant_config("mosi", v).model.family == "dlf"])
def test_every_variant_runs_forward_and_backward_on_cuda(name):
    cfg = variant_config("mosi", get_variant(name))
    dims, lens = REFERENCE_SHAPES["mosi"]
    torch.manual_seed(0)
    model = build_model(cfg, dims, lens).to(CUDA).train()
    x = [torch.randn(16, lens[m], dims[m], device=CUDA) for m in "lav"]
    terms = loss_terms(model(*x), torch.randn(16, device=CUDA), cfg)
    terms["total"].backward()
    assert torch.isfinite(terms["total"]) and all(p.grad is not None for p in model.parameters())


def test_a_short_training_run_on_cuda(tiny_mosi):
    from dlf.data.mmsa import load_dataset

    cfg = apply_overrides(variant_config("mosi", get_variant("full")),
                          {"train.max_epochs": 2, "train.accumulation": 1}, source="test")
    r = train_run(cfg, load_dataset(str(tiny_mosi)), Runtime(device="cuda"))
    assert r.device.startswith("cuda") and r.epochs == 2 and all(v == v for v in r.test.values())
