"""The model seam: every model family registers here, and the rest of the toolkit talks to it only
through the two records below (timm-style: a name -> a family).

A family is two halves, so that planning a study never imports torch:
- ``FamilySpec`` (light): its name, the frozen dataclasses of its ``model.*`` and ``loss.*`` config
  sections, its presets per corpus (``mosi`` / ``mosei``: dot-path overrides, ``train.*`` included,
  i.e. the family's own training recipe) and where its implementation lives.
- ``ModelFamily`` (heavy, torch): build a model from a run config and the data's widths and lengths;
  the named loss terms of its outputs (``total`` plus each term, already weighted by the config); the
  prediction that metrics read; a parameter summary; optionally the import of official weights and
  the per-sample representations analyses read (``features``: the fused vector and each branch's).

Every model is called as ``model(text, audio, vision, with_losses=...)`` (``with_losses=False`` at
inference, when the outputs only the loss terms read may be skipped) and returns its named outputs.

Built-in families are the sub-packages of ``dlf.models`` (``dlf/models/<name>/``: a light
``__init__`` that registers the spec, a ``model`` module beside it); more are added without touching
the package by naming their modules (or ``.py`` files) in ``$DLF_FAMILIES`` (os.pathsep- or
comma-separated). A family module calls :func:`register` when it is imported.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from dlf.errors import DLFError

__all__ = ["FamilySpec", "ModelFamily", "Converted", "register", "family_spec", "family_names", "implementation",
           "family_of", "build_model", "prediction",
           "named_outputs", "features"]



def _builtin() -> dict[str, str]:
    """name -> the sub-package of dlf.models that registers it (listed, not imported)."""
    import pkgutil

    here = Path(__file__).parent
    return {m.name: f"dlf.models.{m.name}" for m in pkgutil.iter_modules([str(here)]) if m.ispkg}


BUILTIN: dict[str, str] = _builtin()


@dataclass(frozen=True)
class FamilySpec:
    name: str
    model: type  # frozen dataclass of the model.* section; its ``family`` field defaults to ``name``
    loss: type  # frozen dataclass of the loss.* section
    implementation: str  # "module:attribute" of the family's ``ModelFamily``
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # corpus -> dot-path overrides
    label: str = ""  # the family's name in tables, e.g. "DLF", "TFN"
    check: Callable[[Any, str], None] | None = None  # (cfg, source): cross-field checks, raising DLFError


@dataclass(frozen=True)
class ModelFamily:
    build: Callable[..., Any]  # (cfg, dims, seq_lens, bert_config=None) -> nn.Module
    loss_terms: Callable[..., dict]  # (outputs, labels, cfg) -> {"total": ..., term: ...} (weighted total)
    prediction: Callable[[Any], Any]  # outputs -> (B,) the prediction the metrics read
    summary: Callable[[Any], dict]  # model -> {"total", "text_encoder", "components": {name: N}}
    # (state, corpus, pretrained=None, source=..., dims=..., seq_lens=...) -> Converted; dims and seq_lens
    # are the dataset's, for families whose weights do not fix them
    convert_official: Callable[..., Any] | None = None
    param_groups: Callable[..., list] | None = None  # (model, cfg) -> Adam groups; default: every trainable one
    # (model, outputs) -> {name: (B, d) tensor}: the per-sample representations for analyses, ``fused``
    # (what the family's output layer reads) first, then its branches; None: the family exposes none
    features: Callable[[Any, Any], dict] | None = None
    # submodules whose weights the reference code saves in files of their own (DMD's graph-distillation
    # units): convert_official then also takes units={name: state} and fresh_units=bool
    official_units: tuple[str, ...] = ()


_SPECS: dict[str, FamilySpec] = {}
_IMPLS: dict[str, ModelFamily] = {}
_PLUGINS_LOADED: set[str] = set()


def register(spec: FamilySpec) -> FamilySpec:
    """Add ``spec``; its sections must be frozen dataclasses and the model section must name it."""
    for section in (spec.model, spec.loss):
        if not (is_dataclass(section) and section.__dataclass_params__.frozen):
            raise DLFError(f"model family {spec.name!r}: {section!r} must be a frozen dataclass")
    family_field = {f.name: f for f in fields(spec.model)}.get("family")
    if family_field is None or family_field.default != spec.name:
        raise DLFError(f"model family {spec.name!r}: its model section needs `family: str = {spec.name!r}`")
    _SPECS[spec.name] = spec
    return spec


def _load_plugins() -> None:
    raw = os.environ.get("DLF_FAMILIES", "")
    for item in (p.strip() for p in raw.replace(",", os.pathsep).split(os.pathsep)):
        if not item or item in _PLUGINS_LOADED:
            continue
        _PLUGINS_LOADED.add(item)
        try:
            if item.endswith(".py"):
                path = Path(item).expanduser().resolve()
                spec = importlib.util.spec_from_file_location(f"dlf_family_{path.stem}", path)
                if spec is None or spec.loader is None or not path.is_file():
                    raise ImportError(f"no such file {path}")
                module = importlib.util.module_from_spec(spec)
                sys.modules[spec.name] = module
                spec.loader.exec_module(module)
            else:
                importlib.import_module(item)
        except ImportError as err:
            raise DLFError(f"$DLF_FAMILIES: cannot import {item!r} ({err}); give a module name or a .py file") from None


def family_names() -> list[str]:
    """Every known family: the built-ins and those named in ``$DLF_FAMILIES``."""
    _load_plugins()
    return sorted(set(BUILTIN) | set(_SPECS))


def family_spec(name: str) -> FamilySpec:
    """The light half of family ``name`` (its config sections and presets); no torch import."""
    if name not in _SPECS:
        if name in BUILTIN:
            importlib.import_module(BUILTIN[name])
        else:
            _load_plugins()
    if name not in _SPECS:
        raise DLFError(f"model.family={name!r}: unknown model family; known: {', '.join(family_names())}")
    return _SPECS[name]


def implementation(name: str) -> ModelFamily:
    """The heavy half of family ``name`` (imports torch and the family's model module)."""
    if name not in _IMPLS:
        module, _, attr = family_spec(name).implementation.partition(":")
        impl = getattr(importlib.import_module(module), attr)
        if not isinstance(impl, ModelFamily):
            raise DLFError(f"model family {name!r}: {module}:{attr} is not a ModelFamily")
        _IMPLS[name] = impl
    return _IMPLS[name]


@dataclass
class Converted:
    """A reference checkpoint imported by a family's ``convert_official``: the model (eval mode), its
    run config, widths and stored lengths, and what was left out of the reference weights, and why."""

    model: Any
    config: Any
    dims: dict[str, int]
    seq_lens: dict[str, int]
    dropped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def family_of(cfg: Any) -> ModelFamily:
    """The implementation of the family a run config names (``cfg.model.family``)."""
    return implementation(cfg.model.family)


def build_model(cfg: Any, dims: Mapping[str, int], seq_lens: Mapping[str, int], bert_config: Mapping | None = None):
    """The model of run config ``cfg`` for data of these widths and stored lengths. The model keeps its
    family's name (``model.family``), so that whoever holds it can read its predictions. With
    ``train.paired_init`` each module's initial values depend on the seed and its name only
    (``dlf.models.paired_init``), whatever else the family builds."""
    model = family_of(cfg).build(cfg, dims, seq_lens, bert_config=bert_config)
    if cfg.train.paired_init:
        from dlf.models.paired_init import paired_init

        paired_init(model, cfg.seed)
    if getattr(model, "family", None) != cfg.model.family:
        model.family = cfg.model.family
    return model


def named_outputs(outputs: Any, prefix: str = "") -> dict[str, Any]:
    """A model's outputs as a flat ``{name: tensor}`` (a dict or a dataclass of tensors, nested dicts
    named ``outer.inner``; absent ones left out): what ``evaluate --outputs`` saves."""
    items = outputs.items() if isinstance(outputs, Mapping) else (
        ((f.name, getattr(outputs, f.name)) for f in fields(outputs)) if is_dataclass(outputs) else ())
    flat: dict[str, Any] = {}
    for name, value in items:
        if isinstance(value, Mapping) or is_dataclass(value):
            flat.update(named_outputs(value, f"{prefix}{name}."))
        elif hasattr(value, "shape"):
            flat[f"{prefix}{name}"] = value
    return flat


def prediction(model: Any, outputs: Any):
    """The (B,) prediction of ``model``'s outputs, as its family defines it."""
    return implementation(model.family).prediction(outputs)


def features(model: Any, outputs: Any) -> dict[str, Any]:
    """The (B, d) representations of ``model``'s outputs (``fused`` first) as its family names them;
    a family without the hook is refused in one line."""
    hook = implementation(model.family).features
    if hook is None:
        raise DLFError(f"model family {model.family!r} exposes no features; families that do: "
                       f"{', '.join(feature_families())}")
    return hook(model, outputs)


def feature_families() -> list[str]:
    """The known families with a ``features`` hook (imports each family's implementation)."""
    out = []
    for name in family_names():
        try:
            if implementation(name).features is not None:
                out.append(name)
        except (DLFError, ImportError):  # a plugin that cannot load is not listed here
            continue
    return out
