"""What the MLflow UI shows of a study: the experiment's kind, each run's data, the runs page's URL.

MLflow 3's UI has two workflows: "GenAI apps & agents" (opens an experiment on its traces
overview) and "Machine learning" (opens it on the runs table). A study's experiment is tagged
``mlflow.experimentKind = custom_model_development``, the tag and value that the UI's kind selector
writes ("Machine learning"). MLflow 3.17's UI reads the workflow from the address
(``?workflowType=machine_learning``) or the browser's last choice, so :func:`runs_url` puts it in
the address too. Each seed run and its parent log the data file as a dataset input (the runs
table's Dataset column), as do tuning trials: named as in the study, its digest the start of the file's sha256, its source the file
(or, for synthetic data, the generator's settings), its split sizes in the profile.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
WORKFLOW_QUERY = "workflowType=machine_learning"
CONTEXT_TAG = "mlflow.data.context"
CONTEXT = "train/valid/test"  # one file: trained on, selected on and tested on its three splits
DIGEST_CHARS = 12  # MLflow keeps at most 36 characters of a digest; the profile has the whole sha256


def experiment_tags() -> dict[str, str]:
    """Tags a new study experiment is created with."""
    return {KIND_TAG: MODEL_TRAINING}


def mark_model_training(c, experiment) -> None:
    """Tag an existing experiment as model training, unless someone chose a kind for it already."""
    if (experiment.tags or {}).get(KIND_TAG):
        return
    try:
        c.set_experiment_tag(experiment.experiment_id, KIND_TAG, MODEL_TRAINING)
    except Exception:  # noqa: BLE001 - only how the UI opens it: a read-only store still serves its runs
        pass


def runs_url(base: str, experiment_id: str) -> str:
    """The runs table of an experiment, e.g. http://127.0.0.1:5000/#/experiments/3/runs?workflowType=..."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{WORKFLOW_QUERY}"


def home_url(base: str) -> str:
    """The list of experiments, in the model-training workflow."""
    return f"{base.rstrip('/')}/#/experiments?{WORKFLOW_QUERY}"


def dataset_input(name: str, data, dataset) -> Any:
    """The MLflow ``DatasetInput`` of a run's data: ``name`` as the study writes it, ``data`` the
    run's data config, ``dataset`` the loaded ``MSADataset``."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    source_type, source = _source(name, data, dataset)
    profile = {"sha256": dataset.fingerprint, "corpus": dataset.corpus, "aligned": bool(dataset.aligned),
               "synthetic": bool(dataset.synthetic),
               **{f"{split}_samples": len(part) for split, part in dataset.splits.items()}}
    entity = Dataset(name=dataset_name(name, dataset.aligned), digest=dataset.fingerprint[:DIGEST_CHARS],
                     source_type=source_type, source=json.dumps(source, sort_keys=True),
                     profile=json.dumps(profile, sort_keys=True))
    return DatasetInput(entity, tags=[InputTag(CONTEXT_TAG, CONTEXT)])


def log_dataset_input(c, run_ids: list[str], name: str, data, dataset) -> None:
    """Log the data on a run and on its parent (the row the runs table shows collapsed).

    Workers starting the first seeds of several variants at once log the same new dataset at
    once; the store keeps one row and refuses the other insert, which finds it on a second try.
    """
    given = [dataset_input(name, data, dataset)]
    for run_id in run_ids:
        try:
            c.log_inputs(run_id, datasets=given)
        except Exception:  # noqa: BLE001 - lost the race for the dataset's row: it exists now
            c.log_inputs(run_id, datasets=given)


def dataset_name(spec_dataset: str, aligned: bool) -> str:
    """The study's name for the data ('mosi', 'synthetic-mosi'; a path's file name), and which file
    of a corpus when it is not the aligned one (the baselines that read unaligned_50.pkl)."""
    name = Path(spec_dataset).name if ("/" in spec_dataset or spec_dataset.endswith(".pkl")) else spec_dataset
    return name if aligned or name.endswith(".pkl") else f"{name} (unaligned)"


def _source(name: str, data, dataset) -> tuple[str, dict[str, Any]]:
    """('code', the generator's settings) for synthetic-mosi/-mosei, else ('local', the file)."""
    from dlf.data.synthetic import GENERATOR_VERSION

    if dataset.synthetic and name.strip().lower() == f"synthetic-{dataset.corpus}":
        settings = {"generator": "dlf.data.synthetic", "corpus": dataset.corpus, "aligned": str(data.aligned).lower(),
                    "scale": f"{data.scale:g}", "seed": str(data.synth_seed), "version": str(GENERATOR_VERSION)}
        return "code", {"tags": settings}  # the layout of mlflow.data's CodeDatasetSource
    return "local", {"uri": str(Path(dataset.path).resolve())}
