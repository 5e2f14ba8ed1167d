"""Study files -> run specs, and the run key that says whether a run was already done.

A study YAML names datasets, variants (catalogue names or inline definitions) and seeds, plus
shared overrides. :func:`load_study` checks the whole file up front (unknown keys, unknown
variants, bad override paths or types) so that nothing trains before a typo is reported;
:func:`expand` turns it into one :class:`RunSpec` per (seed, dataset, variant).

Run identity (docs/contracts.md): :func:`run_key` hashes the resolved config (seed included),
the code version and the data file's content fingerprint. Runtime settings (device, workers,
threads, paths, tracking URI) are not part of ``RunConfig`` at all, so they cannot change a key.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from dlf.config import DEFAULT_FAMILY, RunConfig, apply_overrides, build_config, flatten, valid_paths
from dlf.errors import DLFError
from dlf.study.file import (
    STUDY_KEYS,
    StudySpec,
    load_overrides_file,
    load_study,
)

__all__ = [
    "STUDY_KEYS", "StudySpec", "RunSpec", "load_study", "load_overrides_file",
    "expand", "run_key", "code_version",
]


@dataclass(frozen=True)
class RunSpec:
    """Everything a worker needs to train and track one seed run (JSON-safe via to_dict)."""

    study: str
    variant: str
    dataset: str  # the spec as written in the study: 'synthetic-mosi', 'mosi' or a path
    data_path: str  # resolved absolute pickle path
    corpus: str
    synthetic: bool
    seed: int
    config: RunConfig
    key: str
    data_fingerprint: str
    code_version: str
    group: str | None = None
    label: str = ""
    latex: str = ""
    order: int = 0

    @property
    def title(self) -> str:
        """'<variant>@<dataset>#<seed>', the MLflow name of the seed run."""
        return f"{self.variant}@{self.dataset}#{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["config"] = json.loads(self.config.canonical_json())
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunSpec:
        d = dict(d)
        if "family" in d:  # specs queued by versions that called the corpus "family"
            d["corpus"] = d.pop("family")
        d["config"] = RunConfig.from_dict(d["config"])
        return cls(**d)


def run_key(cfg: RunConfig, code_version: str, data_fingerprint: str) -> str:
    """sha256 hex of the canonical resolved config, code version and data fingerprint."""
    payload = json.dumps(
        {"config": json.loads(cfg.canonical_json()), "code_version": code_version,
         "data_fingerprint": data_fingerprint},
        sort_keys=True, separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def code_version() -> str:
    """Version of the code a run used: ``<commit>`` or ``<commit>+<hash of local changes>``.

    Computed from the package's own directory (not the working directory). Local changes are
    ``git diff HEAD`` over the tracked sources plus untracked source files under ``dlf/``, so an
    edited model never reuses runs of the committed one. Outside a git checkout (a pip install)
    it is ``dlf-ablate==<version>``. ``$DLF_CODE_VERSION`` pins it (containers without .git).
    """
    pinned = os.environ.get("DLF_CODE_VERSION")
    return pinned if pinned else _git_code_version()


@functools.lru_cache(maxsize=1)
def _git_code_version() -> str:
    import dlf

    pkg = Path(dlf.__file__).resolve().parent
    root = pkg.parent

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, check=True).stdout.decode()

    try:
        if Path(git("rev-parse", "--show-toplevel").strip()).resolve() != root:
            raise ValueError("the package is not the top of this git checkout")
        commit = git("rev-parse", "HEAD").strip()
        digest = hashlib.sha256(git("diff", "HEAD", "--", "dlf", "pyproject.toml").encode())
        for name in sorted(git("ls-files", "--others", "--exclude-standard", "--", "dlf").split()):
            if name.endswith(".py"):
                digest.update(name.encode() + b"\0" + (root / name).read_bytes())
    except (OSError, ValueError, subprocess.CalledProcessError):
        return f"dlf-ablate=={dlf.__version__}"
    clean = hashlib.sha256().hexdigest()
    return commit if digest.hexdigest() == clean else f"{commit}+{digest.hexdigest()[:12]}"


def expand(study: StudySpec, data_root=None, set_overrides: Mapping[str, Any] | None = None,
           set_file=None) -> list[RunSpec]:
    """One RunSpec per (seed, dataset, variant), seeds outermost.

    Seed-major order means a study stopped half-way already has every variant at the first
    seeds. Layers per run: preset(corpus) -> study ``set`` -> ``overrides_file`` -> ``set_file``
    -> ``set_overrides`` (CLI --set) -> the variant's overrides, last so that a shared override
    never undoes an ablation. A shared layer may hold paths of several families (``model.pretrained``
    for every BERT family of Table 1): each run takes the paths its own family has, and a path that no
    run of the study takes is refused.
    """
    shared = list(study.shared_layers())
    if set_file is not None:
        shared.append((str(set_file), load_overrides_file(Path(set_file), "--set-file")))
    if set_overrides:
        shared.append(("--set", dict(set_overrides)))
    _reject_seed(shared)
    version = code_version()
    datasets = _Datasets(data_root)
    specs: list[RunSpec] = []
    taken: set[str] = set()
    for seed in study.seeds:
        for dataset in study.datasets:
            for name in study.variants:
                variant = study.variant(name)
                own = (f"variant {name} ({variant.source})", variant.overrides)
                layers = [*_for_family(shared, _family(shared, own), taken), own]
                cfg, ref, fp = datasets.config_for(dataset, layers)
                cfg = apply_overrides(cfg, {"seed": seed}, source=f"{study.path}: seeds")
                specs.append(RunSpec(
                    study=study.name, variant=name, dataset=dataset, data_path=str(ref.path),
                    corpus=ref.corpus, synthetic=bool(ref.synthetic), seed=seed, config=cfg,
                    key=run_key(cfg, version, fp), data_fingerprint=fp, code_version=version,
                    group=variant.group, label=variant.label, latex=variant.latex, order=variant.order,
                ))
    _reject_duplicate_keys(study, specs)
    _reject_untaken(shared, taken)
    return specs


def _family(shared, own) -> str:
    family = DEFAULT_FAMILY
    for _, overrides in [*shared, own]:
        family = str(flatten(overrides).get("model.family", family))
    return family


def _for_family(shared, family: str, taken: set[str]) -> list:
    """The shared layers without the paths of other families (a path no family has is kept, so that
    the config names it as unknown); ``taken`` collects the paths some run applied."""
    from dlf.models.registry import family_names

    own = set(valid_paths(family))
    foreign = {p for f in family_names() if f != family for p in valid_paths(f)} - own
    out = []
    for source, overrides in shared:
        flat = flatten(overrides)
        kept = {k: v for k, v in flat.items() if k not in foreign}
        taken.update(kept)
        out.append((source, kept))
    return out


def _reject_untaken(shared, taken: set[str]) -> None:
    for source, overrides in shared:
        for path in flatten(overrides):
            if path not in taken:
                raise DLFError(f"{source}: {path} belongs to no model family of this study's runs; "
                               f"remove it, or add a variant of a family that has it")


def _reject_seed(layers) -> None:
    for source, overrides in layers:
        if "seed" in overrides:
            raise DLFError(f"{source}: 'seed' cannot be overridden here; list the seeds under the study's 'seeds:'")


class _Datasets:
    """Resolves each dataset once per data config and fingerprints each file once."""

    def __init__(self, data_root) -> None:
        self.data_root = data_root
        self._refs: dict[tuple, Any] = {}
        self._fps: dict[str, str] = {}

    def config_for(self, dataset: str, layers) -> tuple[RunConfig, Any, str]:
        from dlf.data.mmsa import file_fingerprint, resolve_dataset

        # The data section does not depend on the corpus preset, so a 'mosi' probe tells which
        # file (and so which corpus) the layers select; the real config then uses that corpus.
        probe = build_config("mosi", *layers)
        ident = (dataset, probe.data)
        if ident not in self._refs:
            self._refs[ident] = resolve_dataset(dataset, probe.data, data_root=self.data_root)
        ref = self._refs[ident]
        cfg = probe if ref.corpus == "mosi" else build_config(ref.corpus, *layers)
        path = str(ref.path)
        if path not in self._fps:
            self._fps[path] = file_fingerprint(path)
        return cfg, ref, self._fps[path]


def _reject_duplicate_keys(study: StudySpec, specs: list[RunSpec]) -> None:
    seen: dict[str, RunSpec] = {}
    for spec in specs:
        other = seen.setdefault(spec.key, spec)
        if other is not spec:
            raise DLFError(
                f"{study.path}: variants {other.variant!r} and {spec.variant!r} on {spec.dataset!r} resolve "
                "to the same config (same run key); remove one of them from 'variants'"
            )
