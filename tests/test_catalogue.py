"""The ablation catalogue: built-in Table 2 rows, user folders, validation errors, override order."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from dlf.study.catalogue import get_variant, load_catalogue, variant_config
from dlf.config import preset
from dlf.errors import DLFError
from dlf.resources import paper_tables_path, resource_dir

TABLE2 = yaml.safe_load(paper_tables_path().read_text())["table2"]["rows"]


def write(folder: Path, name: str, filename: str | None = None, **fields) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = {"name": name, "label": name.upper(), "overrides": {}} | fields
    path = folder / (filename or f"{name}.yaml")
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Run from an empty directory with no $DLF_ABLATIONS, so only the built-ins are found."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DLF_ABLATIONS", raising=False)
    return tmp_path


def test_builtins_cover_table2_with_paper_groups_labels_and_order(isolated):
    cat = load_catalogue()
    names = [row["variant"] for row in TABLE2]
    for row in TABLE2:
        v = cat[row["variant"]]
        assert (v.group, v.label) == (row["group"], row["label"]), v.name
        assert v.description and v.latex
    table_order = [n for n in cat if n in names]
    assert table_order == names  # sorted by `order`, exactly as the paper prints the rows
    extras = [v for v in cat.values() if v.name not in names]
    assert extras and all(v.group in ("Extras", "Baselines") for v in extras)  # Baselines: Table 1's families


@pytest.mark.parametrize("name,check", [
    ("full", lambda c: c == preset("mosi")),
    ("only_a", lambda c: c.model.modalities == ("a",)),
    ("only_v", lambda c: c.model.modalities == ("v",)),
    ("only_l", lambda c: c.model.modalities == ("l",)),
    ("l_and_a", lambda c: c.model.modalities == ("l", "a")),
    ("l_and_v", lambda c: c.model.modalities == ("l", "v")),
    ("wo_lr", lambda c: c.loss.lambda_r == 0 and c.loss.lambda_s == 0.1),
    ("wo_ls", lambda c: c.loss.lambda_s == 0 and c.loss.lambda_r == 0.1),
    ("wo_lm", lambda c: c.loss.lambda_m == 0 and c.loss.lambda_o == 0.01),
    ("wo_lo", lambda c: c.loss.lambda_o == 0 and c.loss.lambda_m == 0.01),
    ("wo_fdm", lambda c: c.model.fdm is False and c.model.lfa and c.model.hp),
    ("wo_lfa", lambda c: c.model.lfa is False and c.model.fdm and c.model.hp),
    ("wo_hp", lambda c: c.model.hp is False and c.model.fdm and c.model.lfa),
    ("wo_lfa_matched", lambda c: c.model.lfa is False and (c.model.crossmodal_d, c.model.crossmodal_heads) == (25, 5)),
    ("paper_triplet", lambda c: c.model.triplet == "paper"),
    ("bert", lambda c: c.model.text_encoder == "bert"),
])
@pytest.mark.slow
def test_builtin_variant_resolves_to_the_intended_config(isolated, name, check):
    assert check(variant_config("mosi", get_variant(name)))


def test_variant_overrides_are_applied_after_set_so_a_shared_override_cannot_undo_them(isolated):
    cfg = variant_config("mosei", get_variant("only_a"), {"model.modalities": ["l", "a", "v"], "loss.lambda_r": 0.5})
    assert cfg.model.modalities == ("a",)
    assert cfg.loss.lambda_r == 0.5 and cfg.model.conv_kernel == 3  # --set and the MOSEI preset still apply


def test_user_folders_cwd_and_env_are_merged(isolated, monkeypatch):
    write(isolated / "ablations", "mine", order=5, group="Mine", overrides={"loss.lambda_r": 0.3})
    env1, env2 = isolated / "e1", isolated / "e2"
    write(env1, "first", overrides={"model.modalities": "la"})
    write(env2, "second", overrides={"train.lr": 0.001})
    monkeypatch.setenv("DLF_ABLATIONS", os.pathsep.join([str(env1), str(env2)]))
    cat = load_catalogue()
    assert {"mine", "first", "second", "full"} <= set(cat)
    assert list(cat).index("mine") == 1  # order 5 sorts right after full (order 0)
    assert variant_config("mosi", cat["first"]).model.modalities == ("l", "a")
    assert cat["mine"].source == str((isolated / "ablations" / "mine.yaml").resolve())


def test_running_from_the_checkout_does_not_read_the_builtins_twice(monkeypatch):
    monkeypatch.chdir(resource_dir("ablations").parent)
    monkeypatch.delenv("DLF_ABLATIONS", raising=False)
    assert "full" in load_catalogue()


def test_name_clash_names_both_files(isolated):
    path = write(isolated / "ablations", "clash", overrides={})
    (isolated / "ablations" / "other.yaml").write_text(path.read_text())
    with pytest.raises(DLFError, match=r"other\.yaml.*'clash'.*clash\.yaml"):
        load_catalogue()
    path.unlink()
    (isolated / "ablations" / "other.yaml").write_text(yaml.safe_dump({"name": "full", "label": "x", "overrides": {}}))
    with pytest.raises(DLFError, match=r"other\.yaml: variant name 'full' is already defined in .*full\.yaml"):
        load_catalogue()


@pytest.mark.parametrize("fields,message", [
    ({"overrides": {"loss.lambda_x": 0}}, r"bad\.yaml: overrides: unknown override path 'loss\.lambda_x'"),
    ({"overrides": {"model.modalities": ["x"]}}, r"bad\.yaml: overrides: model\.modalities: expected a non-empty"),
    ({"overrides": {"model.fdm": "maybe"}}, r"bad\.yaml: overrides: model\.fdm: expected bool"),
    ({"overrides": ["loss.lambda_r=0"]}, r"bad\.yaml: key 'overrides' must be a mapping"),
    ({"colour": "red"}, r"bad\.yaml: unknown key 'colour'"),
    ({"order": "first"}, r"bad\.yaml: key 'order' must be int"),
    ({"group": 3}, r"bad\.yaml: key 'group' must be str"),
    ({"name": "has space"}, r"bad\.yaml: name 'has space' must use letters"),
])
def test_bad_variant_file_is_one_clear_error_naming_file_and_key(isolated, fields, message):
    write(isolated / "ablations", **({"name": "bad"} | fields), filename="bad.yaml")
    with pytest.raises(DLFError, match=message) as err:
        load_catalogue()
    assert "\n" not in str(err.value)


def test_missing_key_and_broken_yaml_are_errors(isolated):
    folder = isolated / "ablations"
    folder.mkdir()
    (folder / "nolabel.yaml").write_text("name: nolabel\noverrides: {}\n")
    with pytest.raises(DLFError, match=r"nolabel\.yaml: missing key 'label'"):
        load_catalogue()
    (folder / "nolabel.yaml").write_text("name: [unclosed\n")
    with pytest.raises(DLFError, match=r"nolabel\.yaml: YAML syntax error at line 2, column 1: .*fix the variant file's syntax"):
        load_catalogue()


def test_unknown_variant_lists_the_known_names(isolated):
    with pytest.raises(DLFError, match=r"unknown variant 'wo_everything'; known variants: full, only_a, .*wo_hp"):
        get_variant("wo_everything")
