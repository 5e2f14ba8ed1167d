"""The frozen, typed run configuration: the single source of what can vary.

A ``RunConfig`` has four sections (model / loss / train / data) plus the seed. Defaults reproduce
the official DLF implementation on MOSI; ``preset(family)`` gives the MOSEI differences. Every
override (study YAML, CLI ``--set``, Optuna trial) goes through :func:`apply_overrides`, which
rejects unknown dot-paths and wrong types with the list of valid paths, and values outside a
field's domain (declared on the field, ``lr: float = positive(1e-4)``; see :mod:`dlf.domains`)
with one line naming the path, the value and the valid range.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, Mapping

from dlf.domains import check_domains, count, dropout, in_range, non_negative, positive, seed_range, show, unit_open
from dlf.errors import DLFError

MODALITIES = ("l", "a", "v")
TEXT_ENCODERS = ("features", "bert", "bert_frozen")
TRIPLETS = ("official", "paper")


@dataclass(frozen=True)
class ModelConfig:
    fdm: bool = True  # feature disentanglement module (E_s, E_c, decoders, geometric losses)
    lfa: bool = True  # language-focused attractor; False = MulT-style cross-attention (each modality queries)
    hp: bool = True  # hierarchical predictions: shared + specific heads in the loss
    modalities: tuple[str, ...] = MODALITIES  # non-empty subset of l, a, v
    triplet: Literal["official", "paper"] = "official"
    text_encoder: Literal["features", "bert", "bert_frozen"] = "features"
    pretrained: str = "bert-base-uncased"  # hub name or local path, for the bert modes
    d_model: int = count(50, lo=4)  # >= 4: the sinusoidal position table divides by d_model // 2 - 1
    n_heads: int = count(10)
    n_levels: int = count(2)  # depth of every encoder / cross-modal transformer
    mem_levels: int = count(3)  # depth of the A->L / V->L self-attention "memory" stacks
    conv_kernel: int = count(5)  # input Conv1d kernel: 5 for MOSI, 3 for MOSEI
    attn_mask: bool = True  # causal mask in every transformer (official)
    text_dropout: float = dropout(0.5)
    attn_dropout: float = dropout(0.3)  # types l, al, vl and the *_mem stacks
    attn_dropout_a: float = dropout(0.2)  # types a, la, va
    attn_dropout_v: float = dropout(0.0)  # types v, lv, av
    embed_dropout: float = dropout(0.2)
    relu_dropout: float = dropout(0.0)
    res_dropout: float = dropout(0.0)
    output_dropout: float = dropout(0.5)


@dataclass(frozen=True)
class LossConfig:
    # Official weights: L = L_MSA + 0.1 (L_s + L_r + 0.1 (L_m + L_o)).
    lambda_r: float = non_negative(0.1)
    lambda_s: float = non_negative(0.1)
    lambda_m: float = non_negative(0.01)
    lambda_o: float = non_negative(0.01)
    beta_f: float = non_negative(1.0)
    beta_sh: float = non_negative(1.0)
    beta_l: float = non_negative(3.0)
    beta_a: float = non_negative(1.0)
    beta_v: float = non_negative(1.0)
    ortho_chunk: int = count(50)  # official L_o reshapes features into rows of this width: 50 MOSI, 10 MOSEI
    triplet_margin: float = non_negative(0.15)  # official adaptive margin = triplet_margin * |y_anchor - y_negative|


@dataclass(frozen=True)
class TrainConfig:
    lr: float = positive(1e-4)
    weight_decay: float = non_negative(0.0)  # the official config's weight_decay is never read: Adam without decay
    batch_size: int = count(16)  # micro-batch
    accumulation: int = count(10)  # micro-batches per optimizer step (effective batch 160)
    clip_value: float = positive(0.6)  # element-wise gradient value clipping after every micro-batch (0: no gradient)
    max_epochs: int = count(100)  # the official loop has no cap; patience ends it long before
    patience: int = count(10)  # early stopping on validation MAE
    plateau_factor: float = unit_open(0.5)  # lr *= factor on a plateau: 1 would never lower it
    plateau_patience: int = count(5, lo=0)
    min_delta: float = non_negative(1e-6)  # "better" means at least this much lower validation loss
    eval_batch_size: int = count(64)


@dataclass(frozen=True)
class DataConfig:
    aligned: bool = True  # aligned_50.pkl (official) or unaligned_50.pkl
    scale: float = in_range(1.0, 0, 1, lo_open=True)  # synthetic datasets only: fraction of the real split sizes
    synth_seed: int = seed_range(0)  # synthetic datasets only: generator seed


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    seed: int = seed_range(1111)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunConfig:
        return apply_overrides(cls(), flatten(d), source="config dict")

    def canonical_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


# Dataset families differ only in these values (official config.json, datasetParams).
PRESETS: dict[str, dict[str, Any]] = {
    "mosi": {},
    "mosei": {
        "model.conv_kernel": 3,
        "model.text_dropout": 0.1,
        "model.attn_dropout": 0.5,
        "model.attn_dropout_a": 0.0,
        "model.embed_dropout": 0.0,
        "loss.ortho_chunk": 10,
    },
}


def preset(family: str) -> RunConfig:
    """Default config for a dataset family ('mosi' or 'mosei')."""
    if family not in PRESETS:
        raise DLFError(f"unknown dataset family {family!r}; expected one of {sorted(PRESETS)}")
    return apply_overrides(RunConfig(), PRESETS[family], source=f"preset {family}")


def valid_paths() -> list[str]:
    """Every overridable dot-path, e.g. 'loss.lambda_r' and 'seed'."""
    paths = []
    for f in fields(RunConfig):
        if f.name in _SECTIONS:
            paths += [f"{f.name}.{g.name}" for g in fields(_SECTIONS[f.name])]
        else:
            paths.append(f.name)
    return paths


_SECTIONS = {"model": ModelConfig, "loss": LossConfig, "train": TrainConfig, "data": DataConfig}


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'loss': {'lambda_r': 0}} -> {'loss.lambda_r': 0}; dot-path keys pass through."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and key in _SECTIONS:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def apply_overrides(cfg: RunConfig, overrides: Mapping[str, Any], source: str = "overrides") -> RunConfig:
    """Return ``cfg`` with dot-path ``overrides`` applied; the one entry point for YAML, CLI and Optuna.

    ``source`` names where the overrides came from (a file and key, '--set', a trial), so that the
    error a user sees says where to look.
    """
    valid = valid_paths()
    sections: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for path, raw in flatten(overrides).items():
        if path not in valid:
            raise DLFError(f"{source}: unknown override path {path!r}; valid paths: {', '.join(valid)}")
        if "." in path:
            sec, name = path.split(".", 1)
            ftype = _field_type(_SECTIONS[sec], name)
            sections.setdefault(sec, {})[name] = coerce(raw, ftype, f"{source}: {path}")
        else:
            top[path] = coerce(raw, _field_type(RunConfig, path), f"{source}: {path}")
    new_sections = {sec: replace(getattr(cfg, sec), **vals) for sec, vals in sections.items()}
    out = replace(cfg, **new_sections, **top)
    validate(out, source)
    return out


def _field_type(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def coerce(value: Any, ftype: Any, where: str) -> Any:
    """Convert ``value`` to ``ftype`` when that is lossless and obvious, else raise DLFError."""
    if isinstance(value, str) and ftype is not str and typing.get_origin(ftype) is not Literal:
        value = _parse_scalar(value)
    origin = typing.get_origin(ftype)
    if ftype is bool:
        if isinstance(value, bool):
            return value
    elif ftype is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif ftype is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # an int past 1.8e308: no float holds it
                raise DLFError(f"{where}={show(value)} is out of range; expected a finite number") from None
    elif ftype is str:
        if isinstance(value, str):
            return value
    elif origin is Literal:
        if value in typing.get_args(ftype):
            return value
        raise DLFError(f"{where}: expected one of {list(typing.get_args(ftype))}, got {show(value)}")
    elif origin is tuple:
        return _coerce_modalities(value, where)
    raise DLFError(f"{where}: expected {getattr(ftype, '__name__', ftype)}, got {show(value)}")


def _parse_scalar(text: str) -> Any:
    low = text.strip().lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text.strip()


def _coerce_modalities(value: Any, where: str) -> tuple[str, ...]:
    """Accept ['l', 'a'], 'l,a', 'la' or 'LA'; return them in canonical (l, a, v) order."""
    if isinstance(value, str):
        items = [c for c in value.replace(",", " ").replace("[", " ").replace("]", " ").split()]
        if len(items) == 1 and len(items[0]) > 1:
            items = list(items[0])
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise DLFError(f"{where}: expected a list of modalities from l, a, v, got {show(value)}")
    mods = {str(m).strip().lower() for m in items}
    if not mods or not mods <= set(MODALITIES):
        raise DLFError(f"{where}: expected a non-empty subset of l, a, v, got {show(value)}")
    return tuple(m for m in MODALITIES if m in mods)


def validate(cfg: RunConfig, source: str = "config") -> None:
    """Every field in its declared domain (dlf.domains), then the checks that span fields."""
    check_domains(cfg, source)  # first: the cross-field checks below divide by these values
    m = cfg.model
    if m.d_model % m.n_heads:
        raise DLFError(f"{source}: model.d_model ({m.d_model}) must be divisible by model.n_heads ({m.n_heads})")
    if m.d_model % cfg.loss.ortho_chunk:
        raise DLFError(f"{source}: loss.ortho_chunk ({cfg.loss.ortho_chunk}) must divide model.d_model ({m.d_model})")


def build_config(family: str, *layers: tuple[str, Mapping[str, Any]]) -> RunConfig:
    """Preset for ``family`` then each (source, overrides) layer in order; later layers win."""
    cfg = preset(family)
    for source, overrides in layers:
        cfg = apply_overrides(cfg, overrides, source=source)
    return cfg



def parse_set_options(items: list[str] | tuple[str, ...], source: str = "--set") -> dict[str, Any]:
    """Parse CLI ``key=value`` strings; the value is read as YAML so ``model.modalities=[l,a]`` works."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DLFError(f"{source} {item!r}: expected key=value, e.g. {source} loss.lambda_r=0")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = value
    return out
