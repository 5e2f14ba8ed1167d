"""Loading a reference implementation's weights into one of our models: the one place that refuses a
state_dict that does not fit, in one line listing the keys in the reference's own names.

Every family's ``convert_official`` renames the reference's keys to ours first (and refuses names it
does not know, with its own hint); :func:`load_checked` then compares the renamed tensors with the
model built from them, and :func:`bert_architecture` reads the BERT a checkpoint was trained with.
"""
from __future__ import annotations

from typing import Callable, Iterable, Mapping

import torch

from dlf.errors import DLFError
from dlf.models.text import bert_config_from_state

__all__ = ["short", "load_checked", "bert_architecture"]


def short(keys: Iterable[str], n: int = 8) -> str:
    """The first ``n`` of ``keys`` (sorted) and how many more: a key list that fits one line."""
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" ... (+{len(keys) - n} more)" if len(keys) > n else "")


def load_checked(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str, whose: str,
                 show: Callable[[str], str] = str, keep: tuple[str, ...] = (), unknown_hint: str = "") -> None:
    """Load ``state`` (our key names) into ``model`` strictly, after refusing, one line each: keys the
    model does not have, tensors it has that are missing (but those under a ``keep`` prefix, which keep
    the model's own values) and tensors of another shape. ``whose`` names the reference model in
    messages (e.g. "MMSA's TFN"), ``show`` gives a key's name there."""
    own = model.state_dict()
    unknown = sorted(set(state) - set(own))
    if unknown:
        raise DLFError(f"{source}: {len(unknown)} keys are not part of {whose}: {short(map(show, unknown))}"
                       + (f"; {unknown_hint}" if unknown_hint else ""))
    missing = sorted(k for k in own if k not in state and not k.startswith(keep))
    if missing:
        raise DLFError(f"{source}: {len(missing)} tensors of {whose} are missing: {short(map(show, missing))}; "
                       f"this is not a complete state_dict of it")
    bad = [f"{show(k)} {tuple(v.shape)} (expected {tuple(own[k].shape)})" for k, v in state.items()
           if v.shape != own[k].shape]
    if bad:
        raise DLFError(f"{source}: tensor shapes do not fit one model of {whose}: {short(bad, 4)}")
    floats = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}  # MMSA may save half
    model.load_state_dict({**own, **floats}, strict=True)  # kept tensors: the model's own


def bert_architecture(state: Mapping[str, torch.Tensor], pretrained: str | None, width: int, reads: str,
                      source: str, show: Callable[[str], str] = str, given: bool = True) -> dict:
    """The config of the BERT a checkpoint was trained with: ``pretrained``'s (a hub name or folder, named
    by --pretrained, or the preset's when not ``given``), else read from the state's BERT tensor shapes.
    Refused in one line, before any weights are read, when its width is not the ``width`` of ``reads``, the
    tensor that reads BERT's output."""
    where = f"--pretrained {pretrained!r}" if given else f"model.pretrained={pretrained!r} (the preset's)"
    if pretrained:
        from transformers import BertConfig

        try:
            config = BertConfig.from_pretrained(pretrained).to_dict()
        except (OSError, ValueError) as err:
            raise DLFError(f"{where}: cannot read its BERT config ({str(err).splitlines()[0]}); give the folder "
                           f"(or hub name) of the BERT the model was trained with: --pretrained FOLDER") from None
    else:
        try:
            config = bert_config_from_state(state)
        except KeyError as err:
            raise DLFError(f"{source}: BERT tensor {show(err.args[0])} is missing; this is not a complete state_dict "
                           f"(or strip every BERT tensor and give --pretrained FOLDER)") from None
    if int(config["hidden_size"]) != width:
        bert = where if pretrained else f"{source}: the BERT in the state_dict"
        raise DLFError(f"{bert}: BERT width {config['hidden_size']}, but the weights expect {width} ({reads}); "
                       f"give the BERT the model was trained with")
    return config
