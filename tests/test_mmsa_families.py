"""Rules the MMSA baseline families share (dlf/models/mmsa_config.py), checked across all of them: no
gradient accumulation for the BatchNorm models, refused when a run is planned; one modality-subset rule;
the config side stays torch-free."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from dlf.config import build_config
from dlf.errors import DLFError

BATCHNORM_FAMILIES = ("tfn", "lmf", "ef_lstm", "lf_dnn")
ENTRY = [sys.executable, "-c", "from dlf.cli import main; main()"]


@pytest.mark.slow
def test_plan_refuses_accumulation_for_a_batchnorm_family_in_one_line(tmp_path):
    study = tmp_path / "baselines.yaml"
    study.write_text(yaml.safe_dump({"name": "baselines", "datasets": ["synthetic-mosi"], "seeds": [1],
                                     "variants": ["full", "mult", "mfn", "graph_mfn", "tfn", "lmf", "ef_lstm",
                                                  "lf_dnn"]}))
    home = tmp_path / "home"
    env = {**os.environ, "DLF_HOME": str(home), "COLUMNS": "200"}
    run = subprocess.run([*ENTRY, "plan", str(study), "--set", "train.accumulation=4"], capture_output=True,
                         text=True, env=env, timeout=300)
    assert run.returncode == 2 and run.stdout == "", run.stdout + run.stderr
    # DLF, MulT, MFN and Graph-MFN accumulate; the first BatchNorm family in the study is the one named
    assert run.stderr.startswith("error: --set: train.accumulation=4: tfn needs 1 ") and run.stderr.count("\n") == 1
    assert "use --set train.accumulation=1" in run.stderr and "Traceback" not in run.stderr
    assert not home.exists() or not any(home.iterdir())


@pytest.mark.parametrize("family", BATCHNORM_FAMILIES)
def test_every_batchnorm_family_refuses_accumulation_wherever_it_comes_from(family):
    with pytest.raises(DLFError, match=rf"^--set: train.accumulation=2: {family} needs 1 \(its BatchNorm"):
        build_config("mosei", ("--set", {"train.accumulation": 2}), ("variant", {"model.family": family}))
    with pytest.raises(DLFError, match=rf"^study.yaml: set: train.accumulation=8: {family} needs 1"):
        build_config("mosi", ("study.yaml: set", {"model.family": family, "train.accumulation": 8}))
    assert build_config("mosi", ("variant", {"model.family": family})).train.accumulation == 1  # MMSA's recipe


@pytest.mark.parametrize("family", ("dlf", "mult", "mfn", "graph_mfn"))
def test_families_without_batchnorm_still_accumulate(family):
    cfg = build_config("mosi", ("--set", {"train.accumulation": 4}), ("variant", {"model.family": family}))
    assert cfg.train.accumulation == 4


@pytest.mark.parametrize("family,subsets", [("tfn", False), ("lmf", False), ("mfn", False), ("graph_mfn", False),
                                            ("mult", False), ("ef_lstm", True), ("lf_dnn", True)])
def test_a_modality_subset_is_refused_unless_the_fusion_only_concatenates(family, subsets):
    """MMSA always fuses l, a, v. TFN and LMF fuse by a product over the three, MFN's memory and
    Graph-MFN's graph read the three streams together, MulT crosses every pair: without one the fusion
    would mean something else, so a subset is refused. EF-LSTM and LF-DNN only concatenate streams /
    subnet outputs: a subset is the same architecture on fewer inputs (docs/fidelity.md, Modalities)."""
    layer = ("--set", {"model.family": family, "model.modalities": "la"})
    if subsets:
        assert build_config("mosi", layer).model.modalities == ("l", "a")
    else:
        with pytest.raises(DLFError, match=rf"^--set: model.modalities=\['l', 'a'\]: {family} fuses all three "
                                           r"modalities \(l, a, v\); set model.modalities=\[l,a,v\]$"):
            build_config("mosi", layer)


@pytest.mark.slow
def test_building_mmsa_configs_imports_no_torch():
    code = """
import sys
from dlf.config import build_config
from dlf.errors import DLFError
for family in ("tfn", "lmf", "ef_lstm", "lf_dnn", "mfn", "graph_mfn", "mult"):
    for corpus in ("mosi", "mosei"):
        build_config(corpus, ("variant", {"model.family": family}))
try:
    build_config("mosi", ("--set", {"model.family": "tfn", "train.accumulation": 2}))
except DLFError:
    pass
print('torch' in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"], out.stdout + out.stderr


@pytest.mark.parametrize("family", BATCHNORM_FAMILIES)
def test_a_last_batch_of_one_sample_is_refused_before_training_for_a_batchnorm_family(family, tiny_mosi):
    """MMSA keeps the last partial batch, and BatchNorm cannot normalise one sample in training: a
    batch size that leaves one (51 samples in batches of 50) is one line naming a size that works."""
    from dlf.data.mmsa import load_dataset
    from dlf.train.loop import Runtime, train_run

    cfg = build_config("mosi", ("t", {"model.family": family, "train.batch_size": 50, "train.max_epochs": 1}))
    with pytest.raises(DLFError, match=r"^train.batch_size=50: the 51 training samples of .* leave a last batch "
                                       r"of one sample, .*; use e.g. --set train.batch_size=51$"):
        train_run(cfg, load_dataset(str(tiny_mosi)), Runtime(device="cpu", threads=1))
