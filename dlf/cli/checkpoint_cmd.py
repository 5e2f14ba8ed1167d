"""``convert-official`` and ``evaluate``: import the authors' weights, and score any saved model."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from dlf.cli.options import DataRootOpt, DatasetOpt, DeviceOpt, ForceOpt, JsonOpt

METRIC_LABELS = {"acc7": "Acc-7", "acc5": "Acc-5", "acc2": "Acc-2 (non0)", "f1": "F1 (non0)",
                 "acc2_has0": "Acc-2 (has0)", "f1_has0": "F1 (has0)", "corr": "Corr", "mae": "MAE"}


def register(app: typer.Typer) -> None:
    app.command("convert-official")(convert_official)
    app.command("evaluate")(evaluate)


def convert_official(
    checkpoint: Path = typer.Argument(..., help="Reference checkpoint (a state_dict .pth, e.g. DLFmosi.pth, or DMD's dmd.pth)."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset it was trained on: mosi, mosei or a pickle path."),
    out: Path = typer.Option(..., "--out", "-o", help="dlf-ablate checkpoint file to write."),
    data_root: DataRootOpt = None,
    pretrained: Optional[str] = typer.Option(
        None, "--pretrained", help="BERT name or folder whose config to use (BERT checkpoints; default: inferred)."),
    force: ForceOpt = False,
    family: str = typer.Option("dlf", "--family", help="Model family whose reference code saved the weights."),
    gd_homo: Optional[Path] = typer.Option(
        None, "--gd-homo", help="State_dict of a unit the reference code saves apart from the model: DMD's "
        "homogeneous graph-distillation unit (not needed when the checkpoint holds it under gd_homo.)."),
    gd_hetero: Optional[Path] = typer.Option(
        None, "--gd-hetero", help="Likewise for DMD's heterogeneous graph-distillation unit (gd_hetero.)."),
    fresh_units: bool = typer.Option(
        False, "--fresh-units", help="Start the units that neither the checkpoint nor a unit file gives from their "
        "initial values (seeded) instead of refusing."),
) -> None:
    """Convert weights saved by a family's reference code (the authors' DLF or DMD, MMSA) into a dlf-ablate checkpoint."""
    from dlf.train.convert import convert_official as run

    conv = run(checkpoint, dataset, out, data_root=data_root, pretrained=pretrained, overwrite=force, family=family,
               units={"gd_homo": gd_homo, "gd_hetero": gd_hetero}, fresh_units=fresh_units)
    m = conv.config.model
    kernel = f", kernel {m.conv_kernel}" if hasattr(m, "conv_kernel") else ""
    typer.echo(f"wrote {out}: {m.family}, {m.text_encoder} text mode{kernel}, dims {conv.dims}, lengths {conv.seq_lens}")
    for note in conv.notes:
        typer.echo(f"note: {note}")


def evaluate(
    checkpoint: Path = typer.Option(..., "--checkpoint", "-c", help="dlf-ablate checkpoint (train, run or convert-official)."),
    dataset: DatasetOpt = ...,
    split: str = typer.Option("test", "--split", help="train, valid or test."),
    predictions: Optional[Path] = typer.Option(None, "--predictions", help="Write id,label,pred per sample to this CSV."),
    as_json: JsonOpt = False,
    data_root: DataRootOpt = None,
    device: DeviceOpt = "cpu",
    outputs: Optional[Path] = typer.Option(
        None, "--outputs", help="Write every named output of the model per sample (with id, label) to this .npz."),
    features: Optional[Path] = typer.Option(
        None, "--features", help="Write the model's representations per sample to this .npz: 'fused' (what its "
        "output layer reads) and each branch's vector, with id, label and class7 (families that expose them)."),
) -> None:
    """Metrics of a saved model on one split, and optionally its per-sample predictions and outputs."""
    from dlf.data.fingerprint import check_output_file
    from dlf.train.checkpoint import evaluate_checkpoint, write_features, write_outputs, write_predictions

    for path, flag in ((predictions, "--predictions"), (outputs, "--outputs"), (features, "--features")):
        if path is not None:  # refused now, not after a possibly long evaluation
            check_output_file(path, flag)
    result = evaluate_checkpoint(checkpoint, dataset, split, data_root=data_root, device=device,
                                 outputs=outputs is not None, features=features is not None)
    if predictions is not None:
        write_predictions(predictions, result.ids, result.labels, result.preds)
    if outputs is not None:
        write_outputs(outputs, result)
    if features is not None:
        write_features(features, result)
    if as_json:
        typer.echo(json.dumps({"dataset": result.dataset, "split": split, "n": len(result.ids),
                               "metrics": result.metrics, "predictions": str(predictions) if predictions else None,
                               "features": str(features) if features else None}))
        return
    _print(result, checkpoint, predictions)


def _print(result, checkpoint: Path, predictions: Optional[Path]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"{checkpoint} on {result.dataset} {result.split} ({len(result.ids)} samples)", highlight=False)
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, label in METRIC_LABELS.items():
        value = result.metrics[key]
        table.add_row(label, f"{value:.4f}" if key in ("corr", "mae") else f"{100 * value:.2f}")
    console.print(table)
    if predictions is not None:
        console.print(f"predictions: {predictions}", highlight=False)
