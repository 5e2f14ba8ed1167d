"""The official parity fixture, for the tests that read it: ``<repo>/../shared/reference/official-parity``,
made by running pwang322/DLF (see its README)."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

FIXTURE = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "official-parity"
needs_fixture = pytest.mark.skipif(not (FIXTURE / "official_state_dict.pt").is_file(),
                                   reason=f"official parity fixture not found at {FIXTURE}")


def load_data() -> dict:
    """The fixture's MMSA pickle: split name -> arrays."""
    with open(FIXTURE / "data.pkl", "rb") as fh:
        return pickle.load(fh)


def inputs(split: dict, n: int | None = None) -> list[torch.Tensor]:
    """(text, audio, vision) of a split's first ``n`` samples (all by default), as float32 tensors."""
    return [torch.as_tensor(split[k][:n], dtype=torch.float32) for k in ("text", "audio", "vision")]
