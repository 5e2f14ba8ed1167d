"""Reading and checking study YAML files (the schema is in docs/contracts.md).

Everything that can be checked without data is checked here, at load time, so that a typo in
the last variant of a 65-run study is reported before the first run trains. Every error is one
line naming the file, the key and the fix.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from dlf.study.catalogue import Variant, load_catalogue, variant_from_dict
from dlf.config import RunConfig, build_config, check_layer, flatten
from dlf.domains import field_domain, show
from dlf.errors import DLFError
from dlf.resources import read_yaml, resource_dir

REQUIRED_KEYS = ("name", "datasets", "variants", "seeds")
# `tune` belongs to `dlf-ablate tune` (studies/tune.yaml); `run` accepts and ignores it.
OPTIONAL_KEYS = ("set", "variants_inline", "overrides_file", "description", "tune")
STUDY_KEYS = REQUIRED_KEYS + OPTIONAL_KEYS
# The name is the MLflow experiment (256 characters in SQL stores) and, in `tune`, part of the
# experiment '<name> [tune]', of file names '<name>-<variant>@<dataset>.journal' (255 bytes at
# most) and of the artifact folder URI (256 characters): 100 leaves room for all of them.
MAX_NAME_LENGTH = 100
SEED_DOMAIN = field_domain(RunConfig, "seed")


@dataclass(frozen=True)
class StudySpec:
    name: str
    path: Path
    datasets: tuple[str, ...]
    variants: tuple[str, ...]
    seeds: tuple[int, ...]
    description: str = ""
    set: Mapping[str, Any] = field(default_factory=dict)
    overrides_file: Path | None = None
    file_overrides: Mapping[str, Any] = field(default_factory=dict)
    variant_defs: Mapping[str, Variant] = field(default_factory=dict)
    tune: Mapping[str, Any] | None = None  # ignored by `run`

    def variant(self, name: str) -> Variant:
        return self.variant_defs[name]

    def shared_layers(self) -> Iterator[tuple[str, Mapping[str, Any]]]:
        """The study's own override layers, in order: ``set`` then ``overrides_file``."""
        if self.set:
            yield f"{self.path}: set", self.set
        if self.overrides_file is not None:
            yield f"{self.overrides_file}: overrides", self.file_overrides


def load_study(path_or_name: str | Path) -> StudySpec:
    """Load and check a study: a YAML path, or a built-in name such as 'quickstart'."""
    path = find_study(path_or_name)
    raw = read_yaml_mapping(path, "study file")
    unknown = sorted(set(raw) - set(STUDY_KEYS), key=str)
    if unknown:
        raise DLFError(f"{path}: unknown key {unknown[0]!r}; valid keys: {', '.join(STUDY_KEYS)}")
    for key in REQUIRED_KEYS:
        if key not in raw:
            raise DLFError(f"{path}: missing required key {key!r}; a study needs {', '.join(REQUIRED_KEYS)}")
    name = _study_name(raw["name"], path)
    description = raw.get("description") or ""
    if not isinstance(description, str):
        raise DLFError(f"{path}: description: expected a string, got {show(description)}")
    set_ = _overrides(raw.get("set"), f"{path}: set")
    ofile, file_ovr = None, {}
    if raw.get("overrides_file") is not None:
        ofile = _relative_file(path, raw["overrides_file"], "overrides_file")
        file_ovr = load_overrides_file(ofile, f"{path}: overrides_file")
    variants = _names(raw["variants"], path, "variants")
    defs = _variant_defs(variants, raw.get("variants_inline"), path)
    spec = StudySpec(
        name=name, path=path, datasets=_datasets(raw["datasets"], path),
        variants=variants, seeds=_seeds(raw["seeds"], path), description=description.strip(),
        set=set_, overrides_file=ofile, file_overrides=file_ovr, variant_defs=defs,
        tune=raw.get("tune"),
    )
    for name in variants:  # every combination must build, before any data is touched
        v = defs[name]
        build_config("mosi", *spec.shared_layers(), (f"{path}: variant {name} ({v.source})", v.overrides))
    return spec


def _study_name(name: Any, path: Path) -> str:
    """The study's MLflow experiment name: one printable line within the tracking store's limits."""
    if not isinstance(name, str) or not name.strip() or "\n" in name:
        raise DLFError(f"{path}: name: expected a one-line non-empty string, got {show(name)}")
    name = name.strip()
    if len(name) > MAX_NAME_LENGTH:
        raise DLFError(f"{path}: name: {len(name)} characters is too long for the tracking store; "
                       f"use at most {MAX_NAME_LENGTH}")
    if not name.isprintable():  # a NUL ends a PostgreSQL string; control characters garble logs
        raise DLFError(f"{path}: name: {show(name)} contains a control character; use printable text")
    return name


def find_study(path_or_name: str | Path) -> Path:
    p = Path(path_or_name).expanduser()
    if p.is_file():
        return p.resolve()
    builtin = resource_dir("studies")
    text = str(path_or_name)
    if "/" not in text and "\\" not in text:
        cand = builtin / (text if text.endswith((".yaml", ".yml")) else f"{text}.yaml")
        if cand.is_file():
            return cand.resolve()
    names = ", ".join(sorted(q.stem for q in builtin.glob("*.yaml"))) or "none"
    raise DLFError(f"study {text!r} not found: give a study YAML path or a built-in name ({names})")


def read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    raw = read_yaml(path, what)
    if not isinstance(raw, dict):
        raise DLFError(f"{path}: expected a {what} with 'key: value' lines (a mapping), got {type(raw).__name__}")
    return raw


def load_overrides_file(path: Path, where: str) -> dict[str, Any]:
    """Dot-path overrides from a file: the ``tune --export`` shape (an ``overrides:`` mapping plus
    provenance keys, which are ignored) or a bare dot-path mapping."""
    path = Path(path)
    if not path.is_file():
        raise DLFError(f"{where}: overrides file {str(path)!r} not found")
    raw = read_yaml_mapping(path, "overrides file")
    body = raw["overrides"] if "overrides" in raw else raw
    return _overrides(body, f"{path}: overrides")


def _overrides(value: Any, source: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise DLFError(f"{source}: expected a mapping of dot-paths, e.g. loss.lambda_r: 0, got {show(value)}")
    flat = flatten(value)
    if "seed" in flat:
        raise DLFError(f"{source}: 'seed' cannot be overridden; list the seeds under the study's 'seeds:'")
    check_layer(flat, source)  # unknown paths and wrong types fail here; each variant is built below
    return flat


def _relative_file(study: Path, value: Any, key: str) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise DLFError(f"{study}: {key}: expected a file path (relative to the study file), got {show(value)}")
    p = Path(value).expanduser()
    p = p if p.is_absolute() else study.parent / p
    if not p.is_file():
        raise DLFError(f"{study}: {key}: file {value!r} not found (paths are relative to the study file)")
    return p.resolve()


def _names(value: Any, path: Path, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise DLFError(f"{path}: {key}: expected a non-empty list, e.g. {key}: [{_EXAMPLE[key]}]")
    out = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise DLFError(f"{path}: {key}: expected names (strings), got {show(item)}")
        if item.strip() in out:
            raise DLFError(f"{path}: {key}: {show(item)} is listed twice; remove the duplicate")
        out.append(item.strip())
    return tuple(out)


_EXAMPLE = {"variants": "full, wo_lr", "datasets": "synthetic-mosi", "seeds": "1111, 1112"}


def _datasets(value: Any, path: Path) -> tuple[str, ...]:
    out = []
    for item in _names(value, path, "datasets"):
        # A relative pickle path is read relative to the study file when it exists there.
        if item.endswith((".pkl", ".pickle")) and not Path(item).expanduser().is_absolute():
            cand = path.parent / item
            item = str(cand.resolve()) if cand.is_file() else item
        out.append(item)
    return tuple(out)


def _seeds(value: Any, path: Path) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise DLFError(f"{path}: seeds: expected a non-empty list of integers, e.g. seeds: [1111, 1112]")
    seen: list[int] = []
    for s in value:
        if isinstance(s, bool) or not isinstance(s, int):
            raise DLFError(f"{path}: seeds: expected integers, got {show(s)}")
        if not SEED_DOMAIN.contains(s):
            raise DLFError(f"{path}: seeds: {show(s)} is out of range; expected {SEED_DOMAIN.describe(integer=True)}")
        if s in seen:
            raise DLFError(f"{path}: seeds: {s} is listed twice; remove the duplicate")
        seen.append(s)
    return tuple(seen)


def _variant_defs(names: tuple[str, ...], inline: Any, path: Path) -> dict[str, Variant]:
    catalogue = load_catalogue()
    inline_defs = _inline_variants(inline, path, catalogue)
    defs: dict[str, Variant] = {}
    for name in names:
        if name in inline_defs:
            defs[name] = inline_defs[name]
        elif name in catalogue:
            defs[name] = catalogue[name]
        else:
            known = ", ".join(catalogue)
            raise DLFError(f"{path}: variants: unknown variant {show(name)}; define it under variants_inline or "
                           f"use a catalogue name ({known})")
    unused = [n for n in inline_defs if n not in names]
    if unused:
        raise DLFError(f"{path}: variants_inline: {unused[0]!r} is defined but not listed under variants; add it")
    return defs


def _inline_variants(inline: Any, path: Path, catalogue: Mapping[str, Variant]) -> dict[str, Variant]:
    """``variants_inline``: name -> the catalogue file's keys (label defaults to the name)."""
    if inline is None:
        return {}
    if not isinstance(inline, Mapping):
        raise DLFError(f"{path}: variants_inline: expected a mapping name -> {{label, group, overrides}}")
    out = {}
    for i, (name, body) in enumerate(inline.items()):
        where = f"{path}: variants_inline.{name}"
        if not isinstance(name, str) or not name.strip():
            raise DLFError(f"{path}: variants_inline: expected variant names (strings), got {show(name)}")
        if name in catalogue:
            raise DLFError(f"{where}: shadows the catalogue variant of that name; rename the inline variant")
        if body is not None and not isinstance(body, Mapping):
            raise DLFError(f"{where}: expected a mapping with label, group, latex, overrides, description")
        if body and "name" in body:
            raise DLFError(f"{where}: unknown key 'name' (the mapping key is the name); remove it")
        data = {"label": name, "order": 1000 + i, "overrides": {}, **(body or {}), "name": name}
        variant = variant_from_dict(data, where)
        _overrides(variant.overrides, f"{where}.overrides")  # also refuses 'seed'
        out[name] = variant
    return out
