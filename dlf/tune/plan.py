"""Planning a tuning run: study YAML ``tune:`` mapping + CLI options -> a checked :class:`TunePlan`.

Nothing trains here: the study, dataset, variant, seeds, search space, objectives and storage are
resolved and every input is checked first, so a typo fails in a second, with one line.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from dlf.config import RunConfig, build_config
from dlf.domains import INT_MAX, SEED_MAX, Domain, out_of_range, show
from dlf.errors import DLFError

TUNE_KEYS = {
    "trials": int, "objective": str, "multi_objective": list, "pruner": str, "pruner_startup_trials": int,
    "pruner_warmup_epochs": int, "n_startup_trials": int, "sampler_seed": int, "top_k": int, "space": (str, dict),
}
TUNE_DEFAULTS: dict[str, Any] = {
    "trials": None, "objective": "val_mae", "multi_objective": None, "pruner": "median",
    "pruner_startup_trials": 5, "pruner_warmup_epochs": 3, "n_startup_trials": 10, "sampler_seed": 0,
    "top_k": 3, "space": None,
}

TUNE_DOMAINS = {  # Optuna refuses negative counts only once the search starts: check them with the file
    "trials": Domain(1, INT_MAX), "top_k": Domain(1, INT_MAX), "pruner_startup_trials": Domain(0, INT_MAX),
    "pruner_warmup_epochs": Domain(0, INT_MAX), "n_startup_trials": Domain(0, INT_MAX),
    "sampler_seed": Domain(0, SEED_MAX),
}


@dataclass
class TuneOptions:
    """Command-line inputs; None means 'take the study's tune: value, then the default'."""

    study: str = "tune"
    dataset: str | None = None
    variant: str | None = None
    trials: int | None = None
    space: str | None = None
    storage: str | None = None
    study_name: str | None = None
    workers: int = 1
    devices: str | None = None
    pruner: str | None = None
    objective: str | None = None
    multi_objective: list[str] | None = None
    top_k: int | None = None
    seeds: list[int] | None = None
    export: str | None = None
    tracking_uri: str | None = None
    set_overrides: dict[str, Any] = field(default_factory=dict)
    set_file: str | None = None
    data_root: str | None = None
    device: str = "auto"
    threads: int | None = None  # per worker; default max(1, cores // workers)
    progress: bool = True
    plots: bool = True
    ray: str | None = None  # a Ray cluster address: the workers run as its tasks (dlf.cluster.ray_tune)
    gpus_per_run: float | None = None  # with ray: GPUs per worker (a fraction packs several on one GPU)


@dataclass
class TunePlan:
    setup: Any  # dlf.tune.worker.TuneSetup
    seeds: tuple[int, ...]
    configs: dict[int, RunConfig]  # seed -> base config (before the trial's overrides)
    top_k: int
    export: Path
    study_file: Path
    code_version: str
    data_fingerprint: str
    spec: Any  # the first RunSpec of the expansion (tags, data path)


def tune_section(study: Any) -> dict[str, Any]:
    """The study's ``tune:`` mapping checked and merged over :data:`TUNE_DEFAULTS`."""
    raw = study.tune or {}
    if not isinstance(raw, Mapping):
        raise DLFError(f"{study.path}: tune: expected a mapping of {', '.join(TUNE_KEYS)}")
    for key, value in raw.items():
        if key not in TUNE_KEYS:
            raise DLFError(f"{study.path}: tune: unknown key {key!r}; valid keys: {', '.join(TUNE_KEYS)}")
        kind = TUNE_KEYS[key]
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise DLFError(f"{study.path}: tune.{key}: expected {getattr(kind, '__name__', 'a file or mapping')}, "
                           f"got {show(value)}")
        if value is not None and key in TUNE_DOMAINS and not TUNE_DOMAINS[key].contains(value):
            raise DLFError(out_of_range(str(study.path), f"tune.{key}", value, TUNE_DOMAINS[key]))
    return {**TUNE_DEFAULTS, **{k: v for k, v in raw.items() if v is not None}}


def prepare(opts: TuneOptions) -> TunePlan:
    """Resolve study, dataset, variant, seeds, space and objectives into a plan; check everything."""
    from dlf.run.local import parse_devices
    from dlf.study.spec import expand, load_study
    from dlf.train.loop import resolve_device
    from dlf.tune.worker import TuneSetup

    parse_devices(opts.devices)  # no CUDA for --devices / --device: one line before any store is opened
    resolve_device(opts.device)
    study = load_study(opts.study)
    t = tune_section(study)
    dataset = opts.dataset or study.datasets[0]
    variant = _pick_variant(study, opts.variant)
    seeds = tuple(opts.seeds or study.seeds)
    space_raw, space_source = _space_input(opts.space, t["space"], study.path)
    probe = _probe(study, variant, dataset, opts.set_overrides)
    _parse(space_raw, space_source, probe, _named_corpus(dataset))  # fails before any data is generated or read
    _check_data_available(study, dataset, probe.data, opts.data_root)
    narrowed = dataclasses.replace(study, datasets=(dataset,), variants=(variant,), seeds=seeds)
    specs = expand(narrowed, data_root=opts.data_root, set_overrides=opts.set_overrides or None,
                   set_file=opts.set_file)
    configs = {s.seed: s.config for s in specs}
    base = configs[seeds[0]]
    space = _parse(space_raw, space_source, base, specs[0].corpus)
    objectives, trials, pruner = _search_settings(opts, t)
    name = _checked_name(opts.study_name or default_study_name(study.name, variant, dataset), opts.study_name)
    storage = opts.storage or _default_storage(name)
    setup = TuneSetup(
        study_name=name, storage=storage, trials=trials, objectives=objectives,
        space=json.loads(space.canonical_json()), space_source=space.source, base=base, dataset=dataset,
        data_path=specs[0].data_path, variant=variant, study=study.name, pruner=pruner,
        pruner_startup=t["pruner_startup_trials"], pruner_warmup=t["pruner_warmup_epochs"],
        sampler_seed=t["sampler_seed"], startup_trials=t["n_startup_trials"],
    )
    top_k = opts.top_k if opts.top_k is not None else t["top_k"]
    export = Path(opts.export) if opts.export else _default_export(storage, name)
    return TunePlan(setup=setup, seeds=seeds, configs=configs, top_k=max(1, top_k), export=export,
                    study_file=study.path, code_version=specs[0].code_version, data_fingerprint=specs[0].data_fingerprint,
                    spec=specs[0])


def _search_settings(opts: TuneOptions, t: dict[str, Any]) -> tuple[tuple[str, ...], int, str]:
    """(objectives, total trials, pruner): CLI first, then the study's tune: mapping; all checked."""
    from dlf.tune.worker import direction_of

    objectives = tuple(opts.multi_objective or ([opts.objective] if opts.objective else None)
                       or t["multi_objective"] or [t["objective"]])
    for o in objectives:
        direction_of(o)
    trials = opts.trials if opts.trials is not None else t["trials"]
    if not isinstance(trials, int) or trials < 1:
        raise DLFError(f"--trials: give the total number of trials (>= 1), e.g. --trials 100 (got {trials!r})")
    pruner = opts.pruner or t["pruner"]
    if pruner not in ("median", "hyperband", "none"):
        raise DLFError(f"--pruner {pruner!r}: expected median, hyperband or none")
    return objectives, trials, pruner


def _parse(raw: Any, source: str, base: RunConfig, corpus: str | None = None) -> Any:
    from dlf.tune.space import default_space, parse_space

    return default_space(base, corpus) if raw is None else parse_space(raw, source, base)


def _probe(study: Any, variant: str, dataset: str, set_overrides: Mapping[str, Any] | None) -> RunConfig:
    """The tuned base as far as it is known before any data is read: the variant's own layer and the
    corpus's preset included (a baseline's space names its family's paths, not DLF's, and its MOSEI
    space fits its MOSEI preset). A pickle path's corpus is known only once the file is read: it is
    probed as MOSI, and the space is checked again against the real base."""
    chosen = study.variant(variant)
    return build_config(_named_corpus(dataset) or "mosi", *study.shared_layers(), ("--set", set_overrides or {}),
                        (f"variant {variant} ({chosen.source})", chosen.overrides))


def _named_corpus(dataset: str) -> str | None:
    """'mosi' / 'mosei' for the named datasets (real or synthetic), None for a pickle path."""
    key = dataset.strip().lower().removeprefix("synthetic-")
    return key if key in ("mosi", "mosei") else None


def _space_input(cli: str | None, section: Any, study_path: Path) -> tuple[Any, str]:
    """--space FILE, else the study's tune.space (a file relative to the study, or inline), else default."""
    from dlf.tune.space import read_space_file

    if cli:
        return read_space_file(Path(cli)), str(Path(cli))
    if isinstance(section, str):
        path = Path(section).expanduser()
        path = path if path.is_absolute() else Path(study_path).parent / path
        return read_space_file(path), str(path)
    if isinstance(section, dict):
        return section, f"{study_path}: tune.space"
    return None, "default space"


def _pick_variant(study: Any, wanted: str | None) -> str:
    if wanted is None:
        return "full" if "full" in study.variants else study.variants[0]
    if wanted not in study.variants:
        raise DLFError(f"--variant {wanted!r}: not in {study.path} (variants: {', '.join(study.variants)}); "
                       "add it to the study's variants or pick one of those")
    return wanted


def _check_data_available(study: Any, dataset: str, data: Any, data_root: str | None) -> None:
    """Real MOSI/MOSEI must be present; else say where the files go and how to tune on synthetic data."""
    from dlf.data.mmsa import resolve_dataset

    corpus = {"mosi": "MOSI", "mosei": "MOSEI"}.get(dataset.lower())
    if corpus is None:
        return
    try:
        resolve_dataset(dataset, data, data_root=data_root)
    except DLFError:
        name = "aligned_50.pkl" if data.aligned else "unaligned_50.pkl"
        raise DLFError(
            f"{study.path}: dataset {dataset!r}: no {corpus} files found; put the MMSA pickle at "
            f"$DLF_DATA_ROOT/{corpus}/Processed/{name} (or pass --data-root), "
            f"or tune on synthetic data with --dataset synthetic-{dataset.lower()}") from None


# The Optuna study name becomes file names ('<name>.journal', '<name>.best_importance.png'): 255 bytes at most.
MAX_STUDY_NAME_LENGTH = 200


def _checked_name(name: str, given: str | None) -> str:
    if given is not None and (not given.strip() or not given.isprintable()):
        raise DLFError(f"--study-name {given!r}: expected a non-empty printable name")
    if len(name) > MAX_STUDY_NAME_LENGTH:
        flag = "--study-name" if given is not None else "the Optuna study name <study>-<variant>@<dataset>"
        raise DLFError(f"{flag}: {len(name)} characters is too long (it names the journal and export files); "
                       f"use at most {MAX_STUDY_NAME_LENGTH}" + ("" if given else ", e.g. pass a shorter --study-name"))
    return name


def default_study_name(study: str, variant: str, dataset: str) -> str:
    """'<study>-<variant>@<dataset>'; a dataset path contributes its file stem."""
    label = Path(dataset).stem if dataset.endswith((".pkl", ".pickle")) else dataset
    return f"{study}-{variant}@{label}"


def _default_storage(name: str) -> str:
    from dlf.tune.storage import default_storage

    return default_storage(name)


def _default_export(storage: str, name: str) -> Path:
    """Next to a journal file; under ``<DLF_HOME>/tune`` for an RDB storage."""
    from dlf.resources import home_dir
    from dlf.tune.storage import is_rdb, safe_name

    folder = home_dir() / "tune" if is_rdb(storage) else Path(storage).expanduser().resolve().parent
    return folder / f"{safe_name(name)}.best.yaml"


