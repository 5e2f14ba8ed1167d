"""The BERT-level baselines (MISA, MAG-BERT and any later one) as a user runs them: a study of them
in their BERT text mode trains, resumes, reports and tunes through the CLI on synthetic data.

The BERT is a random 2-layer one of width 24 with bert-base's vocabulary (the synthetic token ids are
bert-base's), saved with ``save_pretrained`` and loaded by the families' own ``from_pretrained(path)``.
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
import yaml

from small_bert import save_bert
from zoo_studies import available_copy, bert_baselines

pytestmark = pytest.mark.slow
ENTRY = [sys.executable, "-c", "from dlf.cli import main; main()"]


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return save_bert(tmp_path_factory.mktemp("bert-vocab30522"), 24, vocab=30522)


@pytest.fixture
def env(tmp_path):
    return {**os.environ, "DLF_HOME": str(tmp_path / "home"), "COLUMNS": "200"}


def cli(env, *args):
    return subprocess.run([*ENTRY, *map(str, args)], capture_output=True, text=True, env=env, timeout=900)


def test_a_study_of_the_bert_baselines_trains_resumes_and_reports(tmp_path, env, bert):
    names = bert_baselines()
    assert {"misa", "mag_bert", "dmd"} <= set(names)
    study = tmp_path / "bert.yaml"
    study.write_text(yaml.safe_dump({
        "name": "bert", "datasets": ["synthetic-mosi"], "variants": names, "seeds": [1],
        "set": {"model.pretrained": str(bert), "data.scale": 0.04, "train.max_epochs": 1,
                "train.accumulation": 1}}))
    first = cli(env, "run", study, "--threads", "1")
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"{len(names)} finished, 0 cached, 0 failed" in first.stdout
    again = cli(env, "run", study, "--threads", "1")
    assert f"0 finished, {len(names)} cached, 0 failed" in again.stdout, again.stdout + again.stderr
    report = cli(env, "report", "bert", "--csv", "--out", tmp_path / "out")
    assert report.returncode == 0, report.stderr
    rows = [r for f in (tmp_path / "out").glob("*.csv") for r in csv.DictReader(f.open())]
    shown = {v for r in rows for v in r.values()}
    from dlf.study.catalogue import load_catalogue

    for name in names:  # a measured row per family, under its Table 1 label
        assert load_catalogue()[name].label in shown, (name, rows)


@pytest.mark.parametrize("variant", bert_baselines())
def test_a_bert_baseline_tunes_its_own_space_with_a_local_bert(tmp_path, env, bert, variant):
    from dlf.config import preset
    from dlf.resources import resource_dir
    from dlf.tune.space import load_space

    study, _ = available_copy("tune", tmp_path)
    export = tmp_path / "best.yaml"
    out = cli(env, "tune", study, "--variant", variant, "--dataset", "synthetic-mosi", "--trials", "2",
              "--set", f"model.pretrained={bert}", "--set", "data.scale=0.04", "--set", "train.max_epochs=1",
              "--set", "train.accumulation=1", "--storage", tmp_path / "j.journal", "--seeds", "1111",
              "--top-k", "1", "--threads", "1", "--export", export, "--no-progress", "--no-plots")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 finished (2 complete, 0 pruned), 0 failed" in out.stdout
    winner = yaml.safe_load(export.read_text())["overrides"]
    space = load_space(resource_dir("spaces") / f"{variant}.yaml", preset("mosi", variant))
    assert set(winner) == set(space.paths)  # a point of the family's own space, ready for run --set-file


BERT_BASE = {"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
             "intermediate_size": 3072, "max_position_embeddings": 512, "type_vocab_size": 2}
DIMS = {"mosi": {"l": 768, "a": 5, "v": 20}, "mosei": {"l": 768, "a": 74, "v": 35}}
LENS = {"mosi": {"l": 50, "a": 375, "v": 500}, "mosei": {"l": 50, "a": 500, "v": 500}}


@pytest.mark.parametrize(("family", "corpus", "total"), [
    ("misa", "mosi", 110_620_273), ("misa", "mosei", 110_917_345),
    ("mag_bert", "mosi", 110_705_665), ("mag_bert", "mosei", 110_834_689)])
def test_parameter_counts_with_a_bert_base_shaped_encoder_are_mmsas(family, corpus, total):
    """MMSA's counts with bert-base-uncased (reference README section 6), built from a bert-base-shaped
    BertConfig without any weights: bert-base itself holds 109,482,240 parameters, pooler included."""
    from dlf.config import preset
    from dlf.models.registry import implementation

    impl = implementation(family)
    model = impl.build(preset(corpus, family), DIMS[corpus], LENS[corpus], bert_config=BERT_BASE)
    summary = impl.summary(model)
    assert summary["total"] == total and summary["text_encoder"] == 109_482_240
