"""Import weights saved by a model family's reference code as a dlf-ablate checkpoint.

The file is read with torch's ``weights_only`` loader (a bare state_dict, or one under
``state_dict`` / ``model``); the family's own key mapping (``ModelFamily.convert_official``) turns it
into a model of that family, whose shapes are then checked against the dataset before anything is
written.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Mapping

import torch

from dlf.errors import DLFError
from dlf.models.registry import Converted, implementation

__all__ = ["Converted", "convert_official", "load_official_state"]


def load_official_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The state_dict in an official checkpoint file (a bare state_dict, or one under 'state_dict'/'model')."""
    path = Path(path)
    if not path.is_file():
        raise DLFError(f"{path}: file not found; give the official checkpoint (e.g. DLFmosi.pth)")
    try:
        with warnings.catch_warnings():  # a non-checkpoint pickle warns before it fails
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise DLFError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__})") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(torch.is_tensor(v) for v in obj.values()):
        raise DLFError(f"{path}: not a state_dict (a mapping of names to tensors)")
    return dict(obj)


def convert_official(checkpoint: str | Path, dataset: str, out: str | Path, data_root: str | None = None,
                     pretrained: str | None = None, overwrite: bool = False, family: str = "dlf",
                     units: Mapping[str, str | Path | None] | None = None, fresh_units: bool = False) -> Converted:
    """Convert a reference checkpoint of ``family`` for ``dataset`` and save it as a dlf-ablate checkpoint.

    ``units``: unit name -> file, for the submodules the reference code saves apart from the model
    (``ModelFamily.official_units``, e.g. DMD's gd_homo / gd_hetero; None entries are ignored);
    ``fresh_units``: start the units that no file gives from their initial values."""
    from dlf.train.checkpoint import dataset_meta, save_checkpoint
    from dlf.data.mmsa import load_dataset

    from dlf.data.fingerprint import check_output_file

    out = Path(out)
    check_output_file(out, "--out", "model.pt")
    if out.exists() and not overwrite:
        raise DLFError(f"--out {out}: file exists; choose another path or pass --force to replace it")
    impl = implementation(family)
    if impl.convert_official is None:
        raise DLFError(f"--family {family}: this model family has no reference-checkpoint import")
    from dlf.config import preset

    unit_states = _unit_states(impl, family, units, fresh_units)
    state = load_official_state(checkpoint)
    ds = load_dataset(dataset, preset("mosi", family).data, data_root=data_root)  # the family's aligned/unaligned file
    extra = {"units": unit_states, "fresh_units": fresh_units} if impl.official_units else {}
    conv = impl.convert_official(state, ds.corpus, pretrained, source=str(checkpoint), dims=dict(ds.dims),
                                 seq_lens=dict(ds.seq_lens), **extra)
    for m, name in (("l", "text"), ("a", "audio"), ("v", "vision")):
        want = (conv.dims[m], conv.seq_lens[m])
        have = (ds.dims[m], ds.seq_lens[m])
        if (m != "l" or conv.config.model.text_encoder == "features") and want != have:
            raise DLFError(f"{checkpoint}: the weights expect {name} width {want[0]} and length {want[1]}, "
                           f"but dataset {dataset!r} has {have[0]} and {have[1]}; use the dataset the checkpoint was trained on")
    save_checkpoint(out, conv.model, conv.config, conv.dims, conv.seq_lens, dataset_meta(ds),
                    extra={"converted_from": str(Path(checkpoint).resolve()), "dropped": conv.dropped,
                           "notes": conv.notes})
    return conv


def _unit_states(impl, family: str, units: Mapping[str, str | Path | None] | None,
                 fresh: bool) -> dict[str, dict[str, torch.Tensor]]:
    """The unit files' state_dicts, read before the model's; refused for a family that saves no units."""
    given = {name: path for name, path in (units or {}).items() if path is not None}
    if (given or fresh) and not impl.official_units:
        flags = [f"--{n.replace('_', '-')}" for n in given] + (["--fresh-units"] if fresh else [])
        raise DLFError(f"{', '.join(flags)}: model family {family!r} keeps no units apart from its model; "
                       f"leave these options out")
    unknown = sorted(set(given) - set(impl.official_units))
    if unknown:
        raise DLFError(f"unit {unknown[0]!r}: family {family!r} has the units {', '.join(impl.official_units)}")
    for name, path in given.items():
        if not Path(path).is_file():
            raise DLFError(f"--{name.replace('_', '-')} {path}: file not found; give the state_dict of the {name} unit")
    return {name: load_official_state(path) for name, path in given.items()}
