"""Paired initialisation: with the same seed, every module two variants (or families) share starts from
the same values whatever else is built, drawn from the distribution construction gives it."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dlf.config import apply_overrides, preset, valid_paths
from dlf.models.paired_init import module_seed, paired_init
from dlf.models.registry import build_model
from dlf.study.catalogue import REFERENCE_SHAPES, UNALIGNED_LENS, get_variant, load_catalogue, variant_config

DIMS, SEQ_LENS = REFERENCE_SHAPES["mosi"]
TINY_BERT = Path(__file__).resolve().parents[1] / ".." / "shared" / "reference" / "baselines" / "tiny-bert"


def params(cfg, before: int = 0) -> dict[str, torch.Tensor]:
    """The initial parameters of ``cfg``'s model, built after ``torch.manual_seed(before)``."""
    torch.manual_seed(before)
    lens = SEQ_LENS if cfg.data.aligned else UNALIGNED_LENS["mosi"]
    return {k: p.detach().clone() for k, p in build_model(cfg, DIMS, lens).named_parameters()}


# quick to build; the pairing reads names, not widths or depths
NARROW = {"model.d_model": 10, "model.n_heads": 2, "loss.ortho_chunk": 10, "model.n_levels": 1, "model.mem_levels": 1}


def variant(name: str, **overrides):
    return apply_overrides(variant_config("mosi", get_variant(name), NARROW), overrides, source="test")


def drawn(t: torch.Tensor) -> bool:
    """Several values, not all equal (not a zero bias, a LayerNorm's ones): a tensor the generator decides."""
    return t.numel() > 1 and not torch.equal(t, t.flatten()[0].expand_as(t))


def shared(a: dict, b: dict) -> list[str]:
    """The parameters of the modules both models have, alike (same parameter names and shapes)."""
    def modules(p: dict) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for k, v in p.items():
            out.setdefault(k.rpartition(".")[0], {})[k] = v.shape
        return out

    ma, mb = modules(a), modules(b)
    return [k for m, shapes in ma.items() if mb.get(m) == shapes for k in shapes]


@pytest.mark.parametrize("other", ["wo_lm"] + [pytest.param(v, marks=pytest.mark.slow) for v in ("wo_fdm", "wo_lfa_matched")])
def test_variants_with_the_same_seed_share_every_common_tensor(other):
    full, ablated = params(variant("full")), params(variant(other))
    common = shared(full, ablated)
    assert len(common) > 100 and set(full) != set(ablated)
    assert all(torch.equal(full[k], ablated[k]) for k in common), [k for k in common if not torch.equal(full[k], ablated[k])]
    # without pairing, every module built after the first difference starts elsewhere
    off = {"train.paired_init": False}
    full, ablated = params(variant("full", **off)), params(variant(other, **off))
    assert sum(not torch.equal(full[k], ablated[k]) for k in common if drawn(full[k])) > 0


def test_another_seed_draws_every_tensor_anew_and_construction_order_does_not_matter():
    a, b = params(variant("full")), params(variant("full", seed=7))
    assert all(not torch.equal(a[k], b[k]) for k in a if drawn(a[k]))
    assert all(torch.equal(a[k], v) for k, v in params(variant("full"), before=123).items())
    assert variant("full").train.paired_init is True and preset("mosi").train.paired_init is True


def test_the_mmsa_baselines_keep_mmsas_seeded_construction_order_by_default():
    # MMSA seeds, then builds: its initial weights for a seed come from the construction order (the
    # MFN and Graph-MFN tests rebuild them); paired initialisation is one override away
    assert [f for f in ("tfn", "lmf", "ef_lstm", "lf_dnn", "mfn", "graph_mfn", "mult", "misa", "mag_bert")
            if preset("mosi", f).train.paired_init or preset("mosei", f).train.paired_init] == []


def test_paired_init_keeps_the_global_random_state_and_switching_it_off_keeps_construction_values():
    cfg = variant("full", **{"train.paired_init": False})
    torch.manual_seed(5)
    model = build_model(cfg, DIMS, SEQ_LENS)
    state, constructed = torch.get_rng_state(), {k: v.clone() for k, v in model.state_dict().items()}
    paired_init(model, 1111)
    assert torch.equal(torch.get_rng_state(), state)
    rebuilt = params(cfg, before=5)
    assert all(torch.equal(v, rebuilt[k]) for k, v in constructed.items() if k in rebuilt)
    assert not all(torch.equal(v, constructed[k]) for k, v in model.state_dict().items())


def test_module_seed_is_stable_and_distinct():
    assert module_seed(1111, "lfa.mem.l") == module_seed(1111, "lfa.mem.l") == 5921194938960073863  # blake2b: the same on every platform and run
    assert len({module_seed(s, n) for s in (1, 2) for n in ("a", "b", "a.b", "")}) == 8


def _family_configs():
    """One config per model family of the catalogue, in the precomputed-feature text mode where it has one."""
    seen = {}
    for v in load_catalogue().values():
        cfg = variant_config("mosi", v)
        family = cfg.model.family
        if family in seen:
            continue
        if "model.text_encoder" in valid_paths(family) and family != "mag_bert":
            cfg = apply_overrides(cfg, {"model.text_encoder": "features"}, source="test")
        seen[family] = apply_overrides(cfg, {"train.paired_init": True}, source="test")
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(set(_family_configs()) - {"mag_bert"}))
def test_every_family_redraws_every_parameter_from_its_own_distribution(family):
    cfg = _family_configs()[family]
    paired, again = params(cfg, before=0), params(cfg, before=99)
    constructed = params(apply_overrides(cfg, {"train.paired_init": False}, source="test"))
    assert all(torch.equal(paired[k], again[k]) for k in paired), "a parameter no reset_parameters re-draws"
    for k, value in constructed.items():
        if value.numel() > 1 and not drawn(value):  # constants (zero biases, LayerNorm ones, TFN's output range) stay what they were
            assert torch.equal(paired[k], value), k
        elif value.numel() >= 256:
            assert 0.85 < float(paired[k].std() / value.std()) < 1.18, k
            assert float(paired[k].abs().max()) <= 1.25 * float(value.abs().max()) + 1e-6, k


@pytest.mark.slow
def test_a_pretrained_bert_keeps_its_weights_and_the_modules_around_it_are_paired():
    if not TINY_BERT.is_dir():
        pytest.skip(f"no tiny BERT at {TINY_BERT} (../shared/reference)")
    cfg = apply_overrides(_family_configs()["mag_bert"], {"model.pretrained": str(TINY_BERT)}, source="test")
    paired, again = params(cfg, before=0), params(cfg, before=99)
    constructed = params(apply_overrides(cfg, {"train.paired_init": False}, source="test"))
    bert = [k for k in paired if k.startswith("text_encoder.")]
    assert bert and all(torch.equal(paired[k], constructed[k]) for k in bert)
    assert all(torch.equal(paired[k], again[k]) for k in paired)
    own = [k for k in paired if not k.startswith("text_encoder.") and drawn(constructed[k])]
    assert own and all(not torch.equal(paired[k], constructed[k]) for k in own)
