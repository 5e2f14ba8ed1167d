"""``dlf-ablate tune``: search loss weights with Optuna on validation metrics, resumable and tracked.

Flow: :func:`prepare` (study YAML + CLI -> :class:`TunePlan`), :func:`open_study` (create or resume
the Optuna study, refuse a changed space or setup, enqueue the official weights as trial 0 of a new
study), the search (``dlf.tune_worker``, in this process or ``--workers`` spawned processes), the
top-K re-evaluation over seeds and the export (``dlf.tune_eval``), plots (``dlf.tune_report``).

The ``tune:`` mapping of a study YAML (``studies/tune.yaml``) sets the defaults; CLI flags win.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from dlf.config import RunConfig
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


@dataclass
class TunePlan:
    setup: Any  # dlf.tune_worker.TuneSetup
    seeds: tuple[int, ...]
    configs: dict[int, RunConfig]  # seed -> base config (before the trial's overrides)
    top_k: int
    export: Path
    study_file: Path
    settings: dict[str, Any]  # the resolved tune: values, for provenance
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
                           f"got {value!r}")
    return {**TUNE_DEFAULTS, **{k: v for k, v in raw.items() if v is not None}}


def prepare(opts: TuneOptions) -> TunePlan:
    """Resolve study, dataset, variant, seeds, space and objectives into a plan; check everything."""
    from dlf.study import expand, load_study
    from dlf.tune_worker import TuneSetup, direction_of

    study = load_study(opts.study)
    t = tune_section(study)
    dataset = opts.dataset or study.datasets[0]
    variant = _pick_variant(study, opts.variant)
    seeds = tuple(opts.seeds or study.seeds)
    _check_data_available(study, dataset, opts)
    narrowed = dataclasses.replace(study, datasets=(dataset,), variants=(variant,), seeds=seeds)
    specs = expand(narrowed, data_root=opts.data_root, set_overrides=opts.set_overrides or None,
                   set_file=opts.set_file)
    configs = {s.seed: s.config for s in specs}
    base = configs[seeds[0]]
    space_raw, space_source = _space_input(opts.space, t["space"], study.path)
    space = _parse(space_raw, space_source, base)
    objectives = tuple(opts.multi_objective or ([opts.objective] if opts.objective else None)
                       or t["multi_objective"] or [t["objective"]])
    for o in objectives:
        direction_of(o)
    trials = opts.trials if opts.trials is not None else t["trials"]
    if not isinstance(trials, int) or trials < 1:
        raise DLFError(f"--trials: give the total number of trials (>= 1), e.g. --trials 100 (got {trials!r})")
    name = opts.study_name or default_study_name(study.name, variant, dataset)
    storage = opts.storage or _default_storage(name)
    pruner = opts.pruner or t["pruner"]
    if pruner not in ("median", "hyperband", "none"):
        raise DLFError(f"--pruner {pruner!r}: expected median, hyperband or none")
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
                    study_file=study.path, settings={**t, "objectives": list(objectives), "pruner": pruner},
                    code_version=specs[0].code_version, data_fingerprint=specs[0].data_fingerprint,
                    spec=specs[0])


def _parse(raw: Any, source: str, base: RunConfig) -> Any:
    from dlf.tune_space import default_space, parse_space

    return default_space(base) if raw is None else parse_space(raw, source, base)


def _space_input(cli: str | None, section: Any, study_path: Path) -> tuple[Any, str]:
    """--space FILE, else the study's tune.space (a file relative to the study, or inline), else default."""
    from dlf.tune_space import read_space_file

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


def _check_data_available(study: Any, dataset: str, opts: TuneOptions) -> None:
    """Real MOSI/MOSEI must be present; else say where the files go and how to tune on synthetic data."""
    from dlf.config import build_config
    from dlf.data import resolve_dataset

    family = {"mosi": "MOSI", "mosei": "MOSEI"}.get(dataset.lower())
    if family is None:
        return
    data = build_config("mosi", *study.shared_layers(), ("--set", opts.set_overrides or {})).data
    try:
        resolve_dataset(dataset, data, data_root=opts.data_root)
    except DLFError:
        name = "aligned_50.pkl" if data.aligned else "unaligned_50.pkl"
        raise DLFError(
            f"{study.path}: dataset {dataset!r}: no {family} files found; put the MMSA pickle at "
            f"$DLF_DATA_ROOT/{family}/Processed/{name} (or pass --data-root), "
            f"or tune on synthetic data with --dataset synthetic-{dataset.lower()}") from None


def default_study_name(study: str, variant: str, dataset: str) -> str:
    """'<study>-<variant>@<dataset>'; a dataset path contributes its file stem."""
    label = Path(dataset).stem if dataset.endswith((".pkl", ".pickle")) else dataset
    return f"{study}-{variant}@{label}"


def _default_storage(name: str) -> str:
    from dlf.tune_storage import default_storage

    return default_storage(name)


def _default_export(storage: str, name: str) -> Path:
    """Next to a journal file; under ``<DLF_HOME>/tune`` for an RDB storage."""
    from dlf.resources import home_dir
    from dlf.tune_storage import is_rdb, safe_name

    folder = home_dir() / "tune" if is_rdb(storage) else Path(storage).expanduser().resolve().parent
    return folder / f"{safe_name(name)}.best.yaml"


@dataclass
class TuneResult:
    study_name: str
    storage: str
    objectives: tuple[str, ...]
    pruning: bool
    created: bool
    reaped: int
    counts: dict[str, int]
    candidates: list  # dlf.tune_eval.Candidate, best mean first
    pareto: list[tuple[int, list[float]]]
    export: Path | None
    plots: list[Path]
    notes: list[str]
    errors: list[str]
    parent_run_id: str


def tune(opts: TuneOptions) -> TuneResult:
    """Search, re-evaluate the top K over seeds, export the winner, plot; see the module docstring."""
    from dlf.tune_eval import export_winner, reevaluate
    from dlf.tune_report import ProgressBoard, save_plots, study_counts
    from dlf.tune_search import open_study, reap_before_start, run_search
    from dlf.tune_track import close_parent

    plan = prepare(opts)
    setup = plan.setup = _attach_tracking(plan, opts)
    study, created = open_study(setup)
    reaped = reap_before_start(setup)
    runtime, envs, warning = _workers(opts)
    with ProgressBoard(setup.trials, setup.objectives[0], enabled=opts.progress) as board:
        if warning:
            board.note(f"warning: {warning}")
        board.update(study)
        errors = run_search(setup, runtime, envs, board.update)
        candidates = [] if errors else reevaluate(study, setup, plan.configs, plan.top_k, runtime,
                                                  plan.code_version, board.note)
    export = None
    if candidates:
        export = export_winner(plan.export, candidates[0], setup, _provenance(plan, opts, study))
    plots, notes = save_plots(study, setup.objectives, plan.export.with_suffix(""))
    counts = study_counts(study)
    summary = {"trials_finished": counts["finished"], "trials_pruned": counts["PRUNED"]}
    if candidates:
        summary.update(winner_trial=candidates[0].trial, winner_mean=candidates[0].mean, winner_std=candidates[0].std)
    close_parent(setup.tracking_uri, setup.parent_run_id, summary, plots + ([export] if export else []), not errors)
    pareto = [(t.number, list(t.values)) for t in study.best_trials] if len(setup.objectives) > 1 else []
    return TuneResult(study_name=setup.study_name, storage=setup.storage, objectives=setup.objectives,
                      pruning=setup.pruning, created=created, reaped=reaped, counts=counts, candidates=candidates,
                      pareto=pareto, export=export, plots=plots, notes=notes, errors=errors,
                      parent_run_id=setup.parent_run_id)


def _workers(opts: TuneOptions) -> tuple[Any, list[dict[str, str]], str | None]:
    """(runtime, per-worker environments, oversubscription warning) by the same rules as ``run``."""
    from dlf.pool import cpu_cores, parse_devices, thread_budget
    from dlf.train import Runtime
    from dlf.tune_search import worker_envs

    devices = parse_devices(opts.devices)
    gpus = devices if devices and devices != ["cpu"] else None
    threads, warning = thread_budget(opts.workers, cpu_cores(), opts.threads)
    device = "cuda" if gpus else ("cpu" if devices == ["cpu"] else opts.device)
    if gpus and opts.workers == 1:  # trials run in this process: address the GPU directly
        device = f"cuda:{gpus[0]}"
    runtime = Runtime(device=device, threads=threads, progress=False)
    return runtime, worker_envs(opts.workers, gpus, threads), None if gpus else warning


def _attach_tracking(plan: TunePlan, opts: TuneOptions) -> Any:
    """Resolve the tracking URI, tag set, experiment and parent run (before any worker starts)."""
    from dlf.tracking import common_tags, resolve_tracking_uri
    from dlf.train import resolve_device
    from dlf.tune_track import open_parent, tune_tags

    uri = resolve_tracking_uri(opts.tracking_uri)
    tags = tune_tags(common_tags(plan.spec), str(resolve_device(opts.device)), opts.threads)
    tags.update({"dlf.code_version": plan.code_version, "dlf.data_fingerprint": plan.data_fingerprint})
    setup = dataclasses.replace(plan.setup, tracking_uri=uri, tags=tags)
    extra = {"dlf.storage": setup.storage, "dlf.objective": ",".join(setup.objectives), "dlf.pruner": setup.pruner}
    exp, parent = open_parent(uri, setup, extra)
    return dataclasses.replace(setup, experiment_id=exp, parent_run_id=parent)


def _provenance(plan: TunePlan, opts: TuneOptions, study: Any) -> dict[str, Any]:
    from dlf.tune_report import study_counts

    return {"study_file": str(plan.study_file), "seeds": list(plan.seeds), "top_k": plan.top_k,
            "trials_finished": study_counts(study)["finished"], "tuned_with_set": dict(opts.set_overrides),
            "code_version": plan.code_version, "data_fingerprint": plan.data_fingerprint}
