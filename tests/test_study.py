"""Study files: loading, checking, expansion, config layering and run-key identity."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from dlf.config import valid_paths
from dlf.errors import DLFError
from dlf.resources import resource_dir
from dlf.study.spec import RunSpec, code_version, expand, load_study, run_key
from study_fixtures import CODE_VERSION, write_study
from zoo_studies import available_copy


@pytest.fixture(autouse=True)
def pinned_code_version(monkeypatch):
    monkeypatch.setenv("DLF_CODE_VERSION", CODE_VERSION)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """MMSA layout with tiny synthetic stand-ins for the real MOSI and MOSEI files (aligned and
    unaligned: the baselines MMSA trains on unaligned_50 read that one)."""
    from dlf.data.synthetic import write_synthetic

    root = tmp_path_factory.mktemp("mmsa")
    for corpus, folder, scale in (("mosi", "MOSI", 0.04), ("mosei", "MOSEI", 0.003)):
        for aligned in (True, False):
            name = "aligned_50.pkl" if aligned else "unaligned_50.pkl"
            write_synthetic(corpus, root / folder / "Processed" / name, aligned=aligned, scale=scale, seed=0)
    return root


TABLE2 = ["full", "only_a", "only_v", "only_l", "l_and_a", "l_and_v", "wo_lr", "wo_ls", "wo_lm", "wo_lo",
          "wo_fdm", "wo_lfa", "wo_hp"]


@pytest.mark.parametrize("path", sorted(resource_dir("studies").glob("*.yaml")), ids=lambda p: p.name)
@pytest.mark.slow
def test_every_builtin_study_loads_and_expands(path, data_root, tmp_path):
    study = load_study(available_copy(path.stem, tmp_path)[0])  # the baselines this checkout has
    specs = expand(study, data_root=data_root)
    assert len(specs) == len(study.variants) * len(study.datasets) * len(study.seeds)
    assert len({s.key for s in specs}) == len(specs)
    assert [s.seed for s in specs[:len(study.variants) * len(study.datasets)]] == [study.seeds[0]] * (
        len(study.variants) * len(study.datasets))  # seed-major order
    for s in specs:
        assert s.config.seed == s.seed and s.study == study.name
        if s.config.model.family == "dlf":
            assert s.config.model.conv_kernel == (3 if s.corpus == "mosei" else 5)  # corpus preset applied
        assert ("unaligned" in Path(s.data_path).name) == (not s.config.data.aligned)  # the family's file
        if s.variant == "only_a":
            assert s.config.model.modalities == ("a",)
        if s.variant == "wo_lr":
            assert s.config.loss.lambda_r == 0


@pytest.mark.slow
def test_builtin_studies_cover_the_paper_tables(tmp_path):
    from dlf.resources import paper_tables_path

    paper = yaml.safe_load(paper_tables_path().read_text())
    rows = [r["variant"] for r in paper["table2"]["rows"]]
    assert rows == TABLE2
    quick, quick2, t2 = load_study("quickstart"), load_study("quickstart-table2"), load_study("table2")
    t1 = load_study(available_copy("table1", tmp_path)[0])  # tests/test_zoo.py: its baselines
    assert list(quick2.variants) == rows == list(t2.variants) and set(quick.variants) < set(rows)
    assert quick.set == quick2.set and quick.seeds == quick2.seeds  # one flag away: the same settings
    assert quick.datasets == quick2.datasets == ("synthetic-mosi",) and t2.datasets == ("mosi",)
    assert t1.datasets == ("mosi", "mosei") and t1.variants[0] == "dlf"
    assert t1.variant("dlf").overrides["model.text_encoder"] == "bert"  # DLF's row: the paper's protocol
    assert t1.seeds == t2.seeds == (1111, 1112, 1113, 1114, 1115)
    assert t2.set["model.text_encoder"] == "bert"  # the paper's protocol fine-tunes BERT


def test_layers_apply_in_contract_order(tmp_path, tiny_mosi):
    export = tmp_path / "best.yaml"  # the shape `tune --export` writes: overrides + provenance
    export.write_text(yaml.safe_dump({"study": "tune", "trial": 7, "storage": "x.journal",
                                      "overrides": {"train.lr": 0.02, "loss.lambda_s": 0.3}}))
    set_file = tmp_path / "more.yaml"
    set_file.write_text(yaml.safe_dump({"train": {"lr": 0.03}, "loss.beta_l": 2}))  # nested form works too
    path = write_study(tmp_path, tiny_mosi, extra={"overrides_file": "best.yaml"})
    raw = yaml.safe_load(path.read_text())
    raw["set"].update({"train.lr": 0.01, "loss.lambda_r": 0.5, "train.patience": 3})
    path.write_text(yaml.safe_dump(raw))
    specs = expand(load_study(path), set_overrides={"train.lr": 0.04, "loss.lambda_r": 0.9}, set_file=set_file)
    by = {(s.variant, s.seed): s.config for s in specs}
    full, wo_lr = by[("full", 1)], by[("wo_lr", 1)]
    assert full.train.lr == wo_lr.train.lr == 0.04  # CLI --set beats study set, overrides_file and --set-file
    assert full.loss.lambda_r == 0.9 and wo_lr.loss.lambda_r == 0.0  # the variant comes last
    assert full.loss.lambda_s == 0.3 and full.loss.beta_l == 2.0 and full.train.patience == 3
    assert full.model.d_model == 10  # the study's own set


def test_run_key_is_sha256_of_canonical_config_code_and_data(tmp_path, tiny_mosi):
    spec = expand(load_study(write_study(tmp_path, tiny_mosi)))[0]
    payload = {"config": json.loads(spec.config.canonical_json()), "code_version": CODE_VERSION,
               "data_fingerprint": hashlib.sha256(Path(tiny_mosi).read_bytes()).hexdigest()}
    by_hand = hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert spec.key == by_hand == run_key(spec.config, CODE_VERSION, spec.data_fingerprint)


def test_key_ignores_runtime_and_paths_but_not_results_inputs(tmp_path, tiny_mosi, monkeypatch):
    study = load_study(write_study(tmp_path, tiny_mosi))
    base = {(s.variant, s.seed): s.key for s in expand(study)}
    # Runtime-only settings are not config paths at all, and the environment does not leak in.
    assert not [p for p in valid_paths() if re.search(r"device|worker|thread|uri|home|root", p)]
    monkeypatch.setenv("DLF_HOME", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/other.db")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert {(s.variant, s.seed): s.key for s in expand(study)} == base
    moved = tmp_path / "copy" / "same.pkl"  # the same bytes at another path: same runs
    moved.parent.mkdir()
    shutil.copy(tiny_mosi, moved)
    assert {(s.variant, s.seed): s.key for s in expand(load_study(write_study(tmp_path, moved)))} == base
    assert len(set(base.values())) == 4  # seed and variant change the key
    weighted = {(s.variant, s.seed): s.key for s in expand(study, set_overrides={"loss.lambda_m": 0.02})}
    assert not set(weighted.values()) & set(base.values())  # a loss weight changes every key
    monkeypatch.setenv("DLF_CODE_VERSION", "other-code")
    assert not {s.key for s in expand(study)} & set(base.values())


def test_changed_data_content_changes_the_key(tmp_path, tiny_mosi, mmsa_variant):
    base = expand(load_study(write_study(tmp_path, tiny_mosi)))[0]

    def nudge(data):
        data["train"]["regression_labels"][0] = -data["train"]["regression_labels"][0] + 0.2

    changed = expand(load_study(write_study(tmp_path, mmsa_variant(tiny_mosi, nudge))))[0]
    assert changed.data_fingerprint != base.data_fingerprint and changed.key != base.key


def test_runspec_round_trips_through_json(tmp_path, tiny_mosi):
    for spec in expand(load_study(write_study(tmp_path, tiny_mosi, variants=("only_a", "wo_lr")))):
        back = RunSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
        assert back == spec and back.config.model.modalities == spec.config.model.modalities


def test_load_by_builtin_name_and_relative_dataset(tmp_path, tiny_mosi):
    assert load_study("quickstart").path == (resource_dir("studies") / "quickstart.yaml").resolve()
    with pytest.raises(DLFError, match="quickstart"):
        load_study("no_such_study")
    shutil.copy(tiny_mosi, tmp_path / "local.pkl")
    study = load_study(write_study(tmp_path, "local.pkl"))  # relative to the study file, not the cwd
    assert study.datasets == (str((tmp_path / "local.pkl").resolve()),)


def test_tune_section_is_accepted_and_ignored_by_run(tmp_path, tiny_mosi):
    study = load_study(write_study(tmp_path, tiny_mosi, extra={"tune": {"trials": 5, "objective": "val_mae"}}))
    assert study.tune == {"trials": 5, "objective": "val_mae"}
    assert len(expand(study)) == 4


def test_inline_variants_expand_with_their_metadata(tmp_path, tiny_mosi):
    inline = {"half_lr": {"label": "lambda_r / 2", "group": "Mine", "overrides": {"loss.lambda_r": 0.05}}}
    study = load_study(write_study(tmp_path, tiny_mosi, variants=("full", "half_lr"),
                                   extra={"variants_inline": inline}))
    spec = [s for s in expand(study) if s.variant == "half_lr"][0]
    assert spec.config.loss.lambda_r == 0.05 and spec.label == "lambda_r / 2" and spec.group == "Mine"


def test_identical_variants_are_refused_before_running(tmp_path, tiny_mosi):
    study = load_study(write_study(tmp_path, tiny_mosi, variants=("full", "copy"),
                                   extra={"variants_inline": {"copy": {"label": "copy"}}}))
    with pytest.raises(DLFError, match="same config"):
        expand(study)


BAD = [
    ({"datasets": None}, "missing required key 'datasets'"),
    ({"variant": ["full"]}, "unknown key 'variant'"),
    ({"variants": ["full", "nope"]}, "unknown variant 'nope'"),
    ({"variants": []}, "variants: expected a non-empty list"),
    ({"datasets": []}, "datasets: expected a non-empty list"),
    ({"seeds": []}, "seeds: expected a non-empty list"),
    ({"seeds": [1, 1]}, "seeds: 1 is listed twice"),
    ({"seeds": [1, "two"]}, "seeds: expected integers"),
    ({"set": {"loss.lambda_x": 1}}, "set: unknown override path 'loss.lambda_x'"),
    ({"set": {"train.lr": "fast"}}, "set: train.lr"),
    ({"set": {"seed": 3}}, "'seed' cannot be overridden"),
    ({"set": [1]}, "set: expected a mapping"),
    ({"overrides_file": "missing.yaml"}, "overrides_file: file 'missing.yaml' not found"),
    ({"variants_inline": {"x": {"label": "x"}}}, "'x' is defined but not listed under variants"),
    ({"variants": ["full", "x"], "variants_inline": {"x": {"overrides": {"model.fdm": "maybe"}}}}, "model.fdm"),
    ({"variants": ["full", "x"], "variants_inline": {"x": {"colour": 1}}}, "unknown key 'colour'"),
    ({"variants": ["wo_lr"], "variants_inline": {"wo_lr": {}}}, "shadows the catalogue variant"),
    ({"name": ""}, "name: expected a one-line non-empty string"),
    ({"name": "x" * 101}, "name: 101 characters is too long for the tracking store; use at most 100"),
    ({"name": "a\tb"}, "name: 'a\\tb' contains a control character"),
    ({"name": "a\x00b"}, "contains a control character"),
    ({"seeds": [1, -1]}, "seeds: -1 is out of range; expected an integer in [0, 4294967295]"),
    ({"seeds": [2**32]}, "seeds: 4294967296 is out of range"),
    ({"seeds": [1.5]}, "seeds: expected integers, got 1.5"),
    ({"seeds": [True]}, "seeds: expected integers, got True"),
    ({"set": {"train.lr": -1}}, "set: train.lr=-1.0 is out of range; expected a finite number > 0"),
    ({"set": {"loss": {"beta_l": float("nan")}}}, "set: loss.beta_l=nan is out of range"),
    ({"variants": ["full", "x"], "variants_inline": {"x": {"overrides": {"model.n_heads": 0}}}},
     "variants_inline.x: overrides: model.n_heads=0 is out of range"),
]


@pytest.mark.parametrize("change,message", BAD, ids=[m for _, m in BAD])
@pytest.mark.slow
def test_bad_study_fails_at_load_with_one_line(tmp_path, tiny_mosi, change, message):
    path = write_study(tmp_path, tiny_mosi)
    raw = yaml.safe_load(path.read_text())
    for k, v in change.items():
        if v is None:
            raw.pop(k)
        else:
            raw[k] = v
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(DLFError) as err:
        load_study(path)
    assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("text,message", [("- a\n- b\n", "(a mapping), got list"),
                                          ("name: [unclosed\n", "YAML syntax error at line"),
                                          (b"name: \xff\xfe\n", "cannot read the study file"),
                                          ("seeds: [" + "9" * 5000 + "]\n", "cannot read the study file")])
def test_unreadable_study_files(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(DLFError, match=re.escape(message)):
        load_study(path)


def test_bad_cli_overrides_fail_before_anything_runs(tmp_path, tiny_mosi):
    study = load_study(write_study(tmp_path, tiny_mosi))
    with pytest.raises(DLFError, match=r"--set: unknown override path 'train.lrr'"):
        expand(study, set_overrides={"train.lrr": 1})
    with pytest.raises(DLFError, match="'seed' cannot be overridden"):
        expand(study, set_overrides={"seed": 1})


def test_code_version_names_the_commit_in_a_checkout(monkeypatch):
    monkeypatch.delenv("DLF_CODE_VERSION")
    version = code_version()
    if version.startswith("dlf-ablate=="):
        pytest.skip("not running from a git checkout")
    assert re.fullmatch(r"[0-9a-f]{40}(\+[0-9a-f]{12})?", version)
    monkeypatch.setenv("DLF_CODE_VERSION", "pinned")
    assert code_version() == "pinned"
