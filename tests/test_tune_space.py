"""Search spaces: the default nine loss weights, YAML space files and their validation."""
import json

import optuna
import pytest
import yaml

from dlf.config import RunConfig, apply_overrides
from dlf.errors import DLFError
from dlf.tune.space import default_space, load_space, parse_space, space_file

NINE = ["loss.lambda_r", "loss.lambda_s", "loss.lambda_m", "loss.lambda_o", "loss.beta_f", "loss.beta_sh",
        "loss.beta_l", "loss.beta_a", "loss.beta_v"]


def test_default_space_is_the_nine_loss_weights_log_uniform_around_the_official_values():
    space = default_space()
    assert space.paths == NINE
    assert all(p.kind == "float" and p.log and 0 < p.low < p.high for p in space.params)
    official = space.baseline(RunConfig())
    # Trial 0 is the official weights: every one of them lies inside its range.
    assert official == {"loss.lambda_r": 0.1, "loss.lambda_s": 0.1, "loss.lambda_m": 0.01, "loss.lambda_o": 0.01,
                        "loss.beta_f": 1.0, "loss.beta_sh": 1.0, "loss.beta_l": 3.0, "loss.beta_a": 1.0,
                        "loss.beta_v": 1.0}
    lam_r = space.params[0]
    assert (lam_r.low, lam_r.high) == (0.01, 1.0)  # one decade either side of 0.1


def test_suggested_values_lie_in_range_and_build_a_config():
    space = default_space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(5):
        trial = study.ask()
        values = space.suggest(trial)
        cfg = apply_overrides(RunConfig(), values, source="test")
        for p in space.params:
            assert p.low <= values[p.path] <= p.high
        assert cfg.loss.lambda_r == values["loss.lambda_r"]
        study.tell(trial, 0.0)


def test_space_file_with_float_int_and_categorical(tmp_path):
    f = tmp_path / "space.yaml"
    f.write_text("loss.lambda_r: {low: 0.01, high: 1, log: true}\n"
                 "train.batch_size: {low: 8, high: 32}\n"
                 "model.triplet: {choices: [official, paper]}\n")
    space = load_space(f)
    kinds = {p.path: p.kind for p in space.params}
    assert kinds == {"loss.lambda_r": "float", "train.batch_size": "int", "model.triplet": "categorical"}
    trial = optuna.trial.FixedTrial({"loss.lambda_r": 0.5, "train.batch_size": 12, "model.triplet": "paper"})
    values = space.suggest(trial)
    assert values == {"loss.lambda_r": 0.5, "train.batch_size": 12, "model.triplet": "paper"}
    assert isinstance(values["train.batch_size"], int)


@pytest.mark.parametrize("body, fragment", [
    ("loss.lambda_x: {low: 0.1, high: 1}", "unknown override path 'loss.lambda_x'"),
    ("loss.lambda_r: {low: 1, high: 0.1}", "low (1) must be smaller than high (0.1)"),
    ("loss.lambda_r: {low: 0.5, high: 0.5}", "must be smaller than high"),
    ("loss.lambda_r: {low: 0, high: 1, log: true}", "a log range needs low > 0"),
    ("loss.lambda_r: {low: 0.1, high: 1, lg: true}", "unknown key(s) ['lg']"),
    ("loss.lambda_r: {low: 0.1}", "needs both low and high"),
    ("loss.lambda_r: {low: 0.1, high: one}", "high must be a finite number"),
    ("loss.lambda_r: {low: -1, high: 1}", "loss.lambda_r=-1.0 is out of range; expected a finite number >= 0"),
    ("model.text_dropout: {low: 0.1, high: 1}", "model.text_dropout=1.0 is out of range; expected a number in [0, 1)"),
    ("loss.lambda_r: {low: 0.1, high: 1, log: maybe}", "log must be true or false"),
    ("model.triplet: {choices: [official, bogus]}", "expected one of ['official', 'paper']"),
    ("model.triplet: {choices: [official]}", "at least two values"),
    ("model.triplet: {choices: [official, paper], low: 1}", "cannot be combined"),
    ("train.batch_size: {low: 8.5, high: 32}", "low and high must be whole numbers"),
    ("loss.lambda_r: 0.1", "expected {low, high, log} or {choices"),
    ("[1, 2]", "a search space must be a non-empty mapping"),
])
def test_bad_space_files_name_the_file_and_key(tmp_path, body, fragment):
    f = tmp_path / "bad_space.yaml"
    f.write_text(body + "\n")
    with pytest.raises(DLFError) as err:
        load_space(f)
    msg = str(err.value)
    assert fragment in msg
    assert str(f) in msg and "\n" not in msg
    if body.startswith(("loss.", "model.", "train.")):
        assert body.split(":")[0] in msg  # the key


def test_missing_and_unparsable_space_files(tmp_path):
    with pytest.raises(DLFError, match="search space file not found"):
        load_space(tmp_path / "nope.yaml")
    bad = tmp_path / "broken.yaml"
    bad.write_text("loss.lambda_r: {low: 0.1, high: [\n")
    with pytest.raises(DLFError, match="broken.yaml: YAML syntax error at line .*fix the search space file's syntax"):
        load_space(bad)


def test_canonical_json_ignores_order_and_sees_every_change():
    a = parse_space({"loss.lambda_r": {"low": 0.01, "high": 1.0, "log": True},
                     "loss.beta_l": {"low": 0.3, "high": 30, "log": True}}, "a")
    b = parse_space({"loss.beta_l": {"low": 0.3, "high": 30.0, "log": True},
                     "loss.lambda_r": {"low": 0.01, "high": 1, "log": True}}, "b")
    c = parse_space({"loss.beta_l": {"low": 0.3, "high": 20.0, "log": True},
                     "loss.lambda_r": {"low": 0.01, "high": 1, "log": True}}, "c")
    assert a.canonical_json() == b.canonical_json() != c.canonical_json()
    assert json.loads(default_space().canonical_json()).keys() == yaml.safe_load(space_file('dlf').read_text()).keys()


def test_baseline_skips_values_outside_the_space():
    space = parse_space({"loss.lambda_r": {"low": 0.2, "high": 1.0, "log": True},
                         "loss.beta_l": {"low": 1.0, "high": 5.0}}, "s")
    assert space.baseline(RunConfig()) == {"loss.beta_l": 3.0}  # 0.1 is below 0.2: sampled instead
