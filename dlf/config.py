"""The frozen, typed run configuration: the single source of what can vary.

A ``RunConfig`` has four sections plus the seed: ``model`` and ``loss`` belong to the model family
(``model.family``, DLF by default; each family declares them in its own module, see
``dlf.models.registry``), ``train`` and ``data`` are shared. ``preset(corpus, family)`` gives a
family's defaults on MOSI or MOSEI. Every override (study YAML, CLI ``--set``, Optuna trial) goes
through :func:`apply_overrides`, which rejects unknown dot-paths and wrong types with the list of
valid paths, and values outside a field's domain (declared on the field, ``lr: float =
positive(1e-4)``; see :mod:`dlf.domains`) with one line naming the path, the value and the range.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import typing
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, Mapping

from dlf.domains import check_domains, count, in_range, non_negative, positive, seed_range, show, unit_open
from dlf.errors import DLFError

MODALITIES = ("l", "a", "v")
CORPORA = ("mosi", "mosei")  # the real corpora; each family has a preset per corpus
DEFAULT_FAMILY = "dlf"
SECTIONS = ("model", "loss", "train", "data")


def _family_sections(family: str) -> tuple[type, type]:
    from dlf.models.registry import family_spec

    spec = family_spec(family)
    return spec.model, spec.loss


@dataclass(frozen=True)
class TrainConfig:
    lr: float = positive(1e-4)
    weight_decay: float = non_negative(0.0)  # Adam's coupled L2; the official DLF config's is never read: 0
    batch_size: int = count(16)  # micro-batch
    accumulation: int = count(10)  # micro-batches per optimizer step (effective batch 160)
    clip_value: float = non_negative(0.6)  # element-wise gradient value clipping after every micro-batch; 0 = none
    max_epochs: int = count(100)  # the official loop has no cap; patience ends it long before
    patience: int = count(10)  # early stopping on the validation loss
    scheduler: Literal["plateau", "none"] = "plateau"  # ReduceLROnPlateau on the validation loss, or a fixed lr
    val_loss: Literal["mae", "mse"] = "mae"  # what selection, early stopping and the scheduler minimise
    val_decimals: int = count(0, lo=0)  # the validation loss rounded to this many decimals first (MMSA: 4); 0 = exact
    plateau_factor: float = unit_open(0.5)  # lr *= factor on a plateau: 1 would never lower it
    plateau_patience: int = count(5, lo=0)
    min_delta: float = non_negative(1e-6)  # "better" means at least this much lower validation loss
    eval_batch_size: int = count(64)
    # Each module's initial values drawn from (seed, its qualified name) after construction, so variants
    # sharing a module start it from the same values (dlf.models.paired_init); false = construction order
    paired_init: bool = True


@dataclass(frozen=True)
class DataConfig:
    aligned: bool = True  # aligned_50.pkl (official) or unaligned_50.pkl
    scale: float = in_range(1.0, 0, 1, lo_open=True)  # synthetic datasets only: fraction of the real split sizes
    synth_seed: int = seed_range(0)  # synthetic datasets only: generator seed


@dataclass(frozen=True)
class RunConfig:
    model: Any = field(default_factory=lambda: _family_sections(DEFAULT_FAMILY)[0]())  # the family's section
    loss: Any = field(default_factory=lambda: _family_sections(DEFAULT_FAMILY)[1]())  # the family's section
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


def preset(corpus: str, family: str = DEFAULT_FAMILY) -> RunConfig:
    """Default config of model ``family`` on ``corpus`` ('mosi' or 'mosei'): the family's defaults and
    its preset for that corpus (which may set ``train.*``: the family's own training recipe)."""
    from dlf.models.registry import family_spec

    if corpus not in CORPORA:
        raise DLFError(f"unknown corpus {corpus!r}; expected one of {list(CORPORA)}")
    spec = family_spec(family)
    base = RunConfig(model=spec.model(), loss=spec.loss())
    return apply_overrides(base, spec.presets.get(corpus, {}), source=f"preset {family}/{corpus}")


def valid_paths(family: str = DEFAULT_FAMILY) -> list[str]:
    """Every overridable dot-path of a ``family`` run config, e.g. 'loss.lambda_r' and 'seed'."""
    sections = _sections(family)
    paths = []
    for f in fields(RunConfig):
        if f.name in sections:
            paths += [f"{f.name}.{g.name}" for g in fields(sections[f.name])]
        else:
            paths.append(f.name)
    return paths


def _sections(family: str) -> dict[str, type]:
    model, loss = _family_sections(family)
    return {"model": model, "loss": loss, "train": TrainConfig, "data": DataConfig}


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'loss': {'lambda_r': 0}} -> {'loss.lambda_r': 0}; dot-path keys pass through."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and key in SECTIONS:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def apply_overrides(cfg: RunConfig, overrides: Mapping[str, Any], source: str = "overrides") -> RunConfig:
    """Return ``cfg`` with dot-path ``overrides`` applied; the one entry point for YAML, CLI and Optuna.

    ``source`` names where the overrides came from (a file and key, '--set', a trial), so that the
    error a user sees says where to look. ``model.family`` is applied first: naming another family
    starts its ``model`` and ``loss`` sections from that family's defaults (``build_config`` adds its
    corpus preset), and the other paths are then checked against that family's sections.
    """
    flat = flatten(overrides)
    if "model.family" in flat:
        family = coerce(flat.pop("model.family"), str, f"{source}: model.family")
        if family != cfg.model.family:
            model, loss = _family_sections(family)
            cfg = replace(cfg, model=model(), loss=loss())
    family = cfg.model.family
    valid, sections = valid_paths(family), _sections(family)
    changes: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for path, raw in flat.items():
        if path not in valid:
            raise DLFError(_unknown_path(path, family, valid, source))
        if "." in path:
            sec, name = path.split(".", 1)
            changes.setdefault(sec, {})[name] = _coerce_field(raw, sections[sec], name, f"{source}: {path}")
        else:
            top[path] = coerce(raw, _field_type(RunConfig, path), f"{source}: {path}")
    new_sections = {sec: replace(getattr(cfg, sec), **vals) for sec, vals in changes.items()}
    out = replace(cfg, **new_sections, **top)
    validate(out, source)
    return out


def _unknown_path(path: str, family: str, valid: list[str], source: str) -> str:
    from dlf.models.registry import family_names

    owners = [f for f in family_names() if f != family and path in valid_paths(f)]
    if owners:
        return (f"{source}: {path!r} is a setting of model family {', '.join(owners)}, not of {family!r} "
                f"(model.family); {family}'s paths: {', '.join(p for p in valid if p.startswith(('model.', 'loss.')))}")
    return f"{source}: unknown override path {path!r}; valid paths: {', '.join(valid)}"


def _field_type(cls: type, name: str) -> Any:
    return _type_hints(cls)[name]


@functools.lru_cache(maxsize=None)
def _type_hints(cls: type) -> dict[str, Any]:
    # Resolving the string annotations is most of what building a config costs: once per section class.
    return typing.get_type_hints(cls)


def _coerce_field(value: Any, section: type, name: str, where: str) -> Any:
    """``coerce`` for a section field; a refusal carries the field's ``note`` metadata (why a value is
    not offered, e.g. a family without a features text mode)."""
    try:
        return coerce(value, _field_type(section, name), where)
    except DLFError as err:
        note = next((f.metadata.get("note") for f in fields(section) if f.name == name), None)
        if note:
            raise DLFError(f"{err}: {note}") from None
        raise


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
    """Every field in its declared domain (dlf.domains), then the checks that span fields (the family's)."""
    from dlf.models.registry import family_spec

    check_domains(cfg, source)  # first: the cross-field checks divide by these values
    check = family_spec(cfg.model.family).check
    if check is not None:
        check(cfg, source)


def check_layer(overrides: Mapping[str, Any], source: str) -> None:
    """Check a layer shared by runs of several families (a study's ``set``, an overrides file) on its own:
    each path belongs to some family, and the values fit the first family that has their paths."""
    from dlf.models.registry import family_names

    flat = flatten(overrides)
    family = str(flat.pop("model.family", DEFAULT_FAMILY))
    families = [family] + [f for f in family_names() if f != family]
    groups: dict[str, dict[str, Any]] = {}
    for path, value in flat.items():
        owner = next((f for f in families if path in valid_paths(f)), family)
        groups.setdefault(owner, {})[path] = value
    for owner, group in (groups or {family: {}}).items():
        build_config("mosi", (source, {"model.family": owner, **group}))


def build_config(corpus: str, *layers: tuple[str, Mapping[str, Any]]) -> RunConfig:
    """Preset of the model family the layers name (last ``model.family`` wins; DLF by default) on
    ``corpus``, then each (source, overrides) layer in order; later layers win."""
    family = DEFAULT_FAMILY
    for _, overrides in layers:
        family = flatten(overrides).get("model.family", family)
    cfg = preset(corpus, str(family))
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
