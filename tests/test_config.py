"""The run configuration: presets, the one override function, and its error messages."""
import dataclasses

import pytest

from dlf.config import (
    RunConfig,
    apply_overrides,
    build_config,
    parse_set_options,
    preset,
    valid_paths,
)
from dlf.errors import DLFError


def test_defaults_are_the_official_weights_and_protocol():
    cfg = RunConfig()
    loss, train = cfg.loss, cfg.train
    assert (loss.beta_f, loss.beta_sh, loss.beta_l, loss.beta_v, loss.beta_a) == (1, 1, 3, 1, 1)
    assert (loss.lambda_r, loss.lambda_s, loss.lambda_m, loss.lambda_o) == (0.1, 0.1, 0.01, 0.01)
    assert (train.lr, train.batch_size, train.accumulation, train.clip_value) == (1e-4, 16, 10, 0.6)
    assert (train.patience, train.plateau_patience, train.plateau_factor) == (10, 5, 0.5)
    assert cfg.model.modalities == ("l", "a", "v")


def test_mosei_preset_changes_only_the_dataset_specific_values():
    mosi, mosei = preset("mosi"), preset("mosei")
    assert mosi == RunConfig()
    assert (mosei.model.conv_kernel, mosei.loss.ortho_chunk) == (3, 10)
    assert (mosei.model.text_dropout, mosei.model.attn_dropout, mosei.model.embed_dropout) == (0.1, 0.5, 0.0)
    assert mosei.loss == dataclasses.replace(mosi.loss, ortho_chunk=10)


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        RunConfig().loss.lambda_r = 0.0  # type: ignore[misc]


def test_overrides_apply_by_dot_path_and_nested_mapping():
    cfg = apply_overrides(RunConfig(), {"loss.lambda_r": 0, "model": {"fdm": False}, "seed": 7})
    assert cfg.loss.lambda_r == 0.0 and isinstance(cfg.loss.lambda_r, float)
    assert cfg.model.fdm is False and cfg.seed == 7
    assert RunConfig().loss.lambda_r == 0.1  # the original is untouched


@pytest.mark.parametrize("value", [["l", "a"], "l,a", "al", ["A", "L"], "[l, a]"])
def test_modalities_accept_several_spellings_in_canonical_order(value):
    assert apply_overrides(RunConfig(), {"model.modalities": value}).model.modalities == ("l", "a")


def test_unknown_path_is_rejected_with_the_valid_ones():
    with pytest.raises(DLFError) as err:
        apply_overrides(RunConfig(), {"loss.lamda_r": 0}, source="studies/x.yaml: set")
    msg = str(err.value)
    assert msg.startswith("studies/x.yaml: set: unknown override path 'loss.lamda_r'")
    assert "loss.lambda_r" in msg and "\n" not in msg


@pytest.mark.parametrize(
    "path,value,needle",
    [
        ("model.fdm", "maybe", "expected bool"),
        ("train.batch_size", 2.5, "expected int"),
        ("loss.lambda_r", [1], "expected float"),
        ("model.triplet", "cosine", "expected one of ['official', 'paper']"),
        ("model.modalities", [], "non-empty subset"),
        ("model.modalities", ["l", "x"], "non-empty subset"),
        ("loss.lambda_m", -1, "must be >= 0"),
        ("data.scale", 0, "data.scale"),
        ("loss.ortho_chunk", 7, "must divide"),
    ],
)
def test_bad_values_name_the_path(path, value, needle):
    with pytest.raises(DLFError) as err:
        apply_overrides(RunConfig(), {path: value}, source="--set")
    assert needle in str(err.value) and path.split(".")[0] in str(err.value)


def test_strings_from_the_command_line_are_parsed_by_type():
    cfg = apply_overrides(RunConfig(), {"model.hp": "false", "train.max_epochs": "3", "loss.beta_l": "2.5"})
    assert (cfg.model.hp, cfg.train.max_epochs, cfg.loss.beta_l) == (False, 3, 2.5)


def test_parse_set_options_reads_values_as_yaml():
    parsed = parse_set_options(["loss.lambda_r=0", "model.modalities=[l,a]", "model.pretrained=/x/y=z"])
    assert parsed == {"loss.lambda_r": 0, "model.modalities": ["l", "a"], "model.pretrained": "/x/y=z"}
    with pytest.raises(DLFError, match="expected key=value"):
        parse_set_options(["loss.lambda_r"])


def test_build_config_layers_in_order_and_digest_tracks_changes():
    a = build_config("mosei", ("study", {"loss.lambda_r": 0.5}), ("variant", {"loss.lambda_r": 0}))
    assert a.loss.lambda_r == 0 and a.model.conv_kernel == 3
    b = build_config("mosei", ("study", {"loss.lambda_r": 0.5}))
    assert a.digest() != b.digest()
    assert RunConfig.from_dict(a.to_dict()) == a
    assert a.digest() == RunConfig.from_dict(a.to_dict()).digest()


def test_canonical_paths_of_the_design_exist():
    required = """model.fdm model.lfa model.hp model.modalities model.triplet model.text_encoder
    model.pretrained loss.lambda_r loss.lambda_s loss.lambda_m loss.lambda_o loss.beta_f loss.beta_sh
    loss.beta_l loss.beta_a loss.beta_v train.lr train.batch_size train.accumulation train.clip_value
    train.max_epochs train.patience data.scale""".split()
    assert set(required) <= set(valid_paths())
