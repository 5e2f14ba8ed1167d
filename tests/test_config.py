"""The run configuration: presets, the one override function, and its error messages."""
import dataclasses
import math
import typing

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
    # the training recipe is the official trainer's on both: the validation L1 rounded to 4 decimals
    base = RunConfig()
    assert mosi == dataclasses.replace(base, train=dataclasses.replace(base.train, val_decimals=4))
    assert mosei.train == mosi.train
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
        ("loss.lambda_m", -1, "loss.lambda_m=-1.0 is out of range; expected a finite number >= 0"),
        ("data.scale", 0, "data.scale"),
        ("loss.ortho_chunk", 7, "must divide"),
        ("model.n_heads", 3, "must be divisible by model.n_heads (3)"),
        ("model.crossmodal_d", 25, "model.crossmodal_d (25) must be divisible by model.crossmodal_heads (10)"),
        ("model.crossmodal_heads", 3, "model.crossmodal_d (50) must be divisible by model.crossmodal_heads (3)"),
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


# Every numeric field's domain, as a user reads it in the error line, with values outside it.
NAN, INF = math.nan, math.inf
DOMAINS = {
    "a finite number > 0": (["train.lr"], [0, -1.0, -1e-300, NAN, INF, -INF]),
    "a finite number >= 0": ([f"loss.{n}" for n in ("lambda_r", "lambda_s", "lambda_m", "lambda_o", "beta_f",
                                                    "beta_sh", "beta_l", "beta_a", "beta_v", "triplet_margin")]
                             + ["train.weight_decay", "train.min_delta", "train.clip_value"],  # clip 0: none
                             [-1e-9, -2, NAN, INF, -INF]),
    "a number in [0, 1)": ([f"model.{n}" for n in ("text_dropout", "attn_dropout", "attn_dropout_a", "attn_dropout_v",
                                                   "embed_dropout", "relu_dropout", "res_dropout", "output_dropout")],
                           [1, 2, -0.1, NAN, INF]),
    "a number in (0, 1)": (["train.plateau_factor"], [0, 1, 1.5, -0.5, NAN]),
    "a number in (0, 1]": (["data.scale"], [0, 1.01, -1, NAN, INF]),
    "an integer in [1, 2147483647]": (["model.n_heads", "model.n_levels", "model.mem_levels", "model.conv_kernel",
                                       "loss.ortho_chunk", "train.batch_size", "train.accumulation",
                                       "train.max_epochs", "train.patience", "train.eval_batch_size"],
                                      [0, -1, 2**31, 10**20]),
    "an integer in [4, 2147483647]": (["model.d_model"], [3, 0, -50, 2**31]),
    "an integer in [0, 2147483647]": (["train.plateau_patience", "train.val_decimals", "model.crossmodal_d",
                                      "model.crossmodal_heads"], [-1, 2**31]),
    "an integer in [0, 4294967295]": (["seed", "data.synth_seed"], [-1, 2**32, 2**64, -(2**63)]),
}
CASES = [(desc, path, v) for desc, (paths, values) in DOMAINS.items() for path in paths for v in values]


def _numeric_paths(obj=None, prefix=""):
    obj = obj if obj is not None else RunConfig()  # DLF's sections: the family's classes are known per instance
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _numeric_paths(value, f"{prefix}{f.name}.")
        elif hints[f.name] in (int, float):
            yield f"{prefix}{f.name}"


def test_every_numeric_field_has_a_domain_and_a_row_here():
    listed = [p for paths, _ in DOMAINS.values() for p in paths]
    assert sorted(listed) == sorted(_numeric_paths())


@pytest.mark.parametrize("desc,path,value", CASES, ids=[f"{p}={v!r}" for _, p, v in CASES])
def test_out_of_domain_values_are_one_line_naming_path_value_and_range(desc, path, value):
    with pytest.raises(DLFError) as err:
        apply_overrides(RunConfig(), {path: value}, source="--set")
    shown = repr(value if "integer" in desc else float(value))
    assert str(err.value) == f"--set: {path}={shown} is out of range; expected {desc}"


@pytest.mark.parametrize("text,shown", [("-1", "-1.0"), (".nan", "nan"), ("nan", "nan"), ("inf", "inf"),
                                        ("-.inf", "-inf"), ("0", "0.0"), ("1e400", "inf")])
def test_command_line_strings_meet_the_same_domains(text, shown):
    with pytest.raises(DLFError) as err:
        apply_overrides(RunConfig(), parse_set_options([f"train.lr={text}"]), source="--set")
    assert str(err.value) == f"--set: train.lr={shown} is out of range; expected a finite number > 0"


@pytest.mark.parametrize("path,value,needle", [
    ("train.batch_size", NAN, "train.batch_size: expected int, got nan"),
    ("train.batch_size", INF, "train.batch_size: expected int, got inf"),
    ("seed", "abc", "seed: expected int, got 'abc'"),
    ("seed", [1], "seed: expected int, got [1]"),
    ("train.lr", {"a": 1}, "train.lr: expected float, got {'a': 1}"),
    ("train.lr", True, "train.lr: expected float, got True"),
    ("train.lr", 10**400, "train.lr=<an integer of more than 60 digits> is out of range; expected a finite number"),
    ("seed", 10**400, "seed=<an integer of more than 60 digits> is out of range"),
    ("model.modalities", ["x"] * 100, "got ['x', 'x'"),
])
def test_wrong_types_and_huge_values_are_one_short_line(path, value, needle):
    with pytest.raises(DLFError) as err:
        apply_overrides(RunConfig(), {path: value}, source="--set")
    msg = str(err.value)
    assert msg.startswith("--set: ") and needle in msg and "\n" not in msg and len(msg) < 200


def test_boundaries_inside_the_domains_are_accepted():
    edges = {"model.text_dropout": 0, "train.plateau_patience": 0, "train.weight_decay": 0, "loss.lambda_r": 0,
             "train.min_delta": 0, "data.scale": 1, "seed": 2**32 - 1, "data.synth_seed": 0, "train.lr": 1,
             "model.d_model": 4, "model.n_heads": 2, "loss.ortho_chunk": 4, "train.max_epochs": 2**31 - 1}
    cfg = apply_overrides(RunConfig(), edges)
    assert (cfg.train.lr, cfg.seed, cfg.model.d_model) == (1.0, 2**32 - 1, 4) and isinstance(cfg.train.lr, float)
    assert apply_overrides(RunConfig(), {"train.batch_size": 16.0}).train.batch_size == 16  # whole floats: ints


def test_defaults_and_presets_lie_in_their_domains():
    from dlf.config import CORPORA
    from dlf.domains import check_domains
    from dlf.models.registry import family_names

    for family in family_names():
        for corpus in CORPORA:
            check_domains(preset(corpus, family), f"{family}/{corpus}")  # raises on a default outside its domain


def test_a_new_config_section_is_checked_by_its_field_metadata_alone():
    """Other model families add their own dataclasses: declaring domains is all they need to do."""
    from dlf.domains import check_domains, domain, positive, unit_open

    @dataclasses.dataclass(frozen=True)
    class OtherModel:
        width: float = positive(8.0)
        momentum: float = unit_open(0.9)
        gain: float = dataclasses.field(default=1.0, metadata=domain(lo=-1, hi=1))
        name: str = "free text"  # no domain: limited by its type only

    @dataclasses.dataclass(frozen=True)
    class Outer:
        model: OtherModel = OtherModel()

    check_domains(Outer(), "test")
    for bad, line in ((OtherModel(width=-1.0), "model.width=-1.0 is out of range; expected a finite number > 0"),
                      (OtherModel(momentum=1.0), "model.momentum=1.0 is out of range; expected a number in (0, 1)"),
                      (OtherModel(gain=NAN), "model.gain=nan is out of range; expected a number in [-1, 1]")):
        with pytest.raises(DLFError) as err:
            check_domains(Outer(model=bad), "x.yaml: set")
        assert str(err.value) == f"x.yaml: set: {line}"


def test_zero_heads_is_a_domain_error_not_a_division_by_zero():
    with pytest.raises(DLFError, match=r"model.n_heads=0 is out of range"):
        apply_overrides(RunConfig(), {"model.n_heads": 0})
