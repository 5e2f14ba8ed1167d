"""The ablation catalogue: named model variants stored as data, one YAML file per variant.

A variant is a set of dot-path overrides applied last on top of a run's configuration (see
docs/contracts.md, "Catalogue"). Built-in variants live in ``resource_dir('ablations')``; users add
their own by dropping a file into ``./ablations`` of the working directory or into a folder listed
in ``$DLF_ABLATIONS`` (os.pathsep-separated). Every file is validated on load: unknown keys, wrong
types, name clashes and override paths that ``apply_overrides`` rejects are errors naming the file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from dlf.config import RunConfig, build_config
from dlf.errors import DLFError
from dlf.resources import read_yaml, resource_dir

REQUIRED = ("name", "label", "overrides")
OPTIONAL = ("group", "latex", "order", "description")

# (widths, stored lengths) of the MMSA aligned_50 files (docs/fidelity.md);
# the synthetic datasets copy them. Used to count parameters without loading any data.
REFERENCE_SHAPES: dict[str, tuple[dict[str, int], dict[str, int]]] = {
    "mosi": ({"l": 768, "a": 5, "v": 20}, {"l": 50, "a": 50, "v": 50}),
    "mosei": ({"l": 768, "a": 74, "v": 35}, {"l": 50, "a": 50, "v": 50}),
}
UNALIGNED_LENS = {"mosi": {"l": 50, "a": 375, "v": 500}, "mosei": {"l": 50, "a": 500, "v": 500}}  # unaligned_50


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    overrides: Mapping[str, Any]
    group: str | None = None  # None for the full model (the table's reference row)
    latex: str = ""
    order: int = 1000
    description: str = ""
    source: str = ""  # the file it was read from

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "group": self.group, "label": self.label, "latex": self.latex,
                "order": self.order, "description": self.description,
                "overrides": dict(self.overrides), "source": self.source}


def catalogue_dirs() -> list[Path]:
    """Folders searched, in order: built-ins, ``./ablations`` (when different), ``$DLF_ABLATIONS``."""
    dirs = [resource_dir("ablations").resolve()]
    extra = [Path.cwd() / "ablations"]
    extra += [Path(p).expanduser() for p in os.environ.get("DLF_ABLATIONS", "").split(os.pathsep) if p.strip()]
    for d in extra:
        d = d.resolve()
        if d.is_dir() and d not in dirs:
            dirs.append(d)
    return dirs


def load_catalogue(dirs: list[Path] | None = None) -> dict[str, Variant]:
    """Every variant found in ``dirs`` (default :func:`catalogue_dirs`), sorted by (order, name)."""
    found: dict[str, Variant] = {}
    for folder in dirs if dirs is not None else catalogue_dirs():
        for path in sorted(Path(folder).glob("*.y*ml")):
            variant = load_variant_file(path)
            if variant.name in found:
                raise DLFError(f"{path}: variant name {variant.name!r} is already defined in "
                               f"{found[variant.name].source}; rename one of them")
            found[variant.name] = variant
    return dict(sorted(found.items(), key=lambda kv: (kv[1].order, kv[0])))


def get_variant(name: str, catalogue: Mapping[str, Variant] | None = None) -> Variant:
    """The variant called ``name``; an unknown name is an error listing the known ones."""
    cat = load_catalogue() if catalogue is None else catalogue
    if name not in cat:
        raise DLFError(f"unknown variant {name!r}; known variants: {', '.join(cat)} "
                       f"(add one as a YAML file in ./ablations or $DLF_ABLATIONS)")
    return cat[name]


def load_variant_file(path: Path) -> Variant:
    return variant_from_dict(read_yaml(path, "variant file"), str(path))


def variant_from_dict(data: Any, source: str) -> Variant:
    """Validate one variant mapping (from a file or a study's ``variants_inline``)."""
    if not isinstance(data, Mapping):
        raise DLFError(f"{source}: expected a mapping with keys {', '.join(REQUIRED + OPTIONAL)}")
    unknown = sorted(set(data) - set(REQUIRED + OPTIONAL))
    if unknown:
        raise DLFError(f"{source}: unknown key {unknown[0]!r}; allowed keys: {', '.join(REQUIRED + OPTIONAL)}")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise DLFError(f"{source}: missing key {missing[0]!r} (required: {', '.join(REQUIRED)})")
    _check_type(data, "name", str, source)
    if not data["name"].replace("_", "").replace("-", "").isalnum():
        raise DLFError(f"{source}: name {data['name']!r} must use letters, digits, '_' or '-' only")
    for key in ("label", "latex", "description"):
        _check_type(data, key, str, source)
    _check_type(data, "group", str, source, nullable=True)
    _check_type(data, "order", int, source)
    overrides = data["overrides"] if data["overrides"] is not None else {}
    if not isinstance(overrides, Mapping):
        raise DLFError(f"{source}: key 'overrides' must be a mapping of dot-paths, e.g. loss.lambda_r: 0")
    # unknown paths, wrong types and values out of range fail here, naming this file and key; built on
    # the preset of the family the overrides name, so a family's own checks see its own recipe
    build_config("mosi", (f"{source}: overrides", overrides))
    return Variant(name=data["name"], label=data["label"], overrides=dict(overrides),
                   group=data.get("group"), latex=data.get("latex") or data["label"],
                   order=data.get("order", 1000), description=data.get("description", ""), source=source)


def _check_type(data: Mapping, key: str, kind: type, source: str, nullable: bool = False) -> None:
    if key not in data or (nullable and data[key] is None):
        return
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DLFError(f"{source}: key {key!r} must be {kind.__name__}, got {value!r}")


def parameter_count(variant: Variant, corpus: str = "mosi") -> int:
    """Parameters outside the text encoder of ``variant`` at the reference ``corpus`` shapes.

    Counted in ``features`` text mode so that no BERT download is needed: the model behind the text
    encoder is the same for a 768-d BERT.
    """
    from dlf.models.registry import build_model, family_of

    cfg = build_config(corpus, (variant.source or variant.name, variant.overrides),
                       ("parameter count", {"model.text_encoder": "features"}))
    dims, seq_lens = REFERENCE_SHAPES[corpus]
    family = family_of(cfg)
    return family.summary(build_model(cfg, dims, seq_lens))["total"]


def variant_config(corpus: str, variant: Variant, set_overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Preset of ``corpus``, then CLI ``--set`` overrides, then the variant's (last: never undone)."""
    return build_config(corpus, ("--set", set_overrides or {}),
                        (f"variant {variant.name} ({variant.source})", variant.overrides))


def prepare_run(spec: str, variant: str | None = None, set_overrides: Mapping[str, Any] | None = None,
                data_root: Any = None) -> tuple[RunConfig, Any, Variant]:
    """(config, loaded dataset, variant) for one run of ``variant`` (default 'full') on dataset ``spec``."""
    from dlf.data.mmsa import load_dataset

    var = get_variant(variant or "full")
    # The corpus (hence the preset) is known once the data is loaded, and loading needs the data
    # section; presets never touch data.*, so any corpus's config gives the right one.
    data = load_dataset(spec, variant_config("mosi", var, set_overrides).data, data_root)
    return variant_config(data.corpus, var, set_overrides), data, var


def model_summary(spec: str = "synthetic-mosi", variant: str | None = None,
                  set_overrides: Mapping[str, Any] | None = None, data_root: Any = None) -> dict[str, Any]:
    """``parameter_summary`` of ``variant`` built for dataset ``spec`` (named datasets need no data)."""
    from dlf.models.registry import build_model, family_of

    var = get_variant(variant or "full")
    corpus = str(spec).lower().removeprefix("synthetic-")
    cfg = variant_config(corpus if corpus in REFERENCE_SHAPES else "mosi", var, set_overrides)
    if corpus in REFERENCE_SHAPES:
        dims, seq_lens = REFERENCE_SHAPES[corpus]
        seq_lens = seq_lens if cfg.data.aligned else UNALIGNED_LENS[corpus]
    else:
        cfg, data, _ = prepare_run(spec, var.name, set_overrides, data_root)
        dims, seq_lens = data.dims, data.seq_lens
    family = family_of(cfg)
    return family.summary(build_model(cfg, dims, seq_lens))
