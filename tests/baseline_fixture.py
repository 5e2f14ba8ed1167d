"""The MMSA baselines' parity fixtures (../shared/reference/baselines), for every baseline's parity test.

Each model folder holds the weights MMSA's own code built (stored as float16, exact after ``.float()``),
every output per split in eval mode, the loss terms on the first 8 train samples, and meta.json. The
tests rebuild the float32 state_dict MMSA would have saved, import it through the CLI
(``convert-official --family``) and compare what ``evaluate --outputs`` writes with the fixture.
Tests skip cleanly when the shared folder is absent.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "baselines"
ENTRY = [sys.executable, "-c", "from dlf.cli import main; main()"]


def needs(model: str):
    """Skip mark for tests that need fixture folder ``model`` (MMSA class name, e.g. 'TFN')."""
    return pytest.mark.skipif(not (ROOT / model / "state_dict.pt").is_file(),
                              reason=f"parity fixture {ROOT / model} not present")


def meta(model: str) -> dict:
    return json.loads((ROOT / model / "meta.json").read_text())


def data_path(model: str) -> Path:
    return (ROOT / model / meta(model)["data"]).resolve()


def state_dict(model: str) -> dict[str, torch.Tensor]:
    """The fixture's weights as MMSA saved them: floating tensors in float32, keys ``Model.<...>``."""
    raw = torch.load(ROOT / model / "state_dict.pt", map_location="cpu", weights_only=True)
    return {k: v.float() if v.is_floating_point() else v for k, v in raw.items()}


def outputs(model: str) -> dict[str, dict[str, np.ndarray]]:
    """{split: {output name: float32 array}} as MMSA's forward returned them."""
    raw = torch.load(ROOT / model / "outputs.pt", map_location="cpu", weights_only=True)
    return {split: {k: np.asarray(v, dtype=np.float32) for k, v in outs.items()} for split, outs in raw.items()}


def loss_terms(model: str) -> dict[str, float]:
    return json.loads((ROOT / model / "loss_terms.json").read_text())["terms"]


def cli(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([*ENTRY, *map(str, args)], capture_output=True, text=True, env=env, timeout=600)


def convert_and_evaluate(tmp_path: Path, family: str, state: dict[str, torch.Tensor], data: Path,
                         splits=("train", "valid", "test")) -> dict[str, dict[str, np.ndarray]]:
    """``convert-official STATE --family F`` then ``evaluate --outputs`` per split, through the CLI;
    returns {split: {output name: array}} read back from the .npz files."""
    sd, ckpt = tmp_path / f"{family}_mmsa.pt", tmp_path / f"{family}.pt"
    torch.save(state, sd)
    conv = cli("convert-official", sd, "--family", family, "--dataset", data, "--out", ckpt)
    assert conv.returncode == 0, conv.stdout + conv.stderr
    got = {}
    for split in splits:
        out = tmp_path / f"{family}_{split}.npz"
        ev = cli("evaluate", "--checkpoint", ckpt, "--dataset", data, "--split", split, "--outputs", out, "--json")
        assert ev.returncode == 0, ev.stdout + ev.stderr
        with np.load(out) as z:
            got[split] = {k: z[k] for k in z.files}
    return got
