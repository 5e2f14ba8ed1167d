"""MSA metrics against hand-computed values and against sklearn's weighted F1."""
import math
import warnings

import numpy as np
import pytest
import torch

from dlf.metrics import METRIC_KEYS, msa_metrics, weighted_f1

TRUE = [2.0, -1.0, 0.0, 0.6, -2.4, 1.2]
PRED = [2.5, -0.5, 0.4, -0.2, -3.6, 1.5]


def test_hand_computed_case():
    m = msa_metrics(PRED, TRUE)
    assert set(m) == set(METRIC_KEYS)
    # acc7: pred -> [2, -0, 0, -0, -3, 2] (2.5 -> 2 half to even), true -> [2, -1, 0, 1, -2, 1]
    assert m["acc7"] == pytest.approx(2 / 6)
    # acc5: pred clip [-2, 2] -> [2, -0, 0, -0, -2, 2], true -> [2, -1, 0, 1, -2, 1]
    assert m["acc5"] == pytest.approx(3 / 6)
    # non0 drops the 0 label: true pos [T, F, T, F, T], pred pos [T, F, F, F, T]
    assert m["acc2"] == pytest.approx(4 / 5)
    assert m["f1"] == pytest.approx((3 * 0.8 + 2 * 0.8) / 5)  # both classes: 2*2 / (3+2) and 2*2 / (2+3)
    # has0: true >= 0 [T, F, T, T, F, T], pred >= 0 [T, F, T, F, F, T]
    assert m["acc2_has0"] == pytest.approx(5 / 6)
    assert m["f1_has0"] == pytest.approx((4 * 6 / 7 + 2 * 4 / 5) / 6)
    assert m["mae"] == pytest.approx(3.7 / 6)
    assert m["corr"] == pytest.approx(np.corrcoef(PRED, TRUE)[0, 1])
    assert all(isinstance(v, float) for v in m.values())


def test_rounding_is_half_to_even():
    # 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> -0 (== 0), -2.5 -> -2; half-up would miss all five.
    m = msa_metrics([0.5, 1.5, 2.5, -0.5, -2.5], [0.0, 2.0, 2.0, 0.0, -2.0])
    assert m["acc7"] == 1.0 and m["acc5"] == 1.0
    m = msa_metrics([0.5, 1.5, 2.5, -0.5, -2.5], [1.0, 1.0, 3.0, -1.0, -3.0])
    assert m["acc7"] == 0.0


def test_clipping_differs_between_acc7_and_acc5():
    # 2.7 -> 3 vs 2.4 -> 2 under acc7; both clip to 2 under acc5. -4 clips to -3 (acc7) / -2 (acc5).
    m = msa_metrics([2.7, -4.0], [2.4, -3.0])
    assert m["acc7"] == 0.5
    assert m["acc5"] == 1.0
    assert m["mae"] == pytest.approx((0.3 + 1.0) / 2)  # MAE on raw, unclipped values


def test_all_zero_labels_give_nan_non0_with_warning():
    with pytest.warns(RuntimeWarning) as caught:
        m = msa_metrics([0.3, -0.2, 0.0], [0.0, 0.0, 0.0])
    messages = " | ".join(str(w.message) for w in caught)
    assert "all labels are 0" in messages and "constant" in messages
    assert math.isnan(m["acc2"]) and math.isnan(m["f1"])
    assert m["acc2_has0"] == pytest.approx(2 / 3)  # 0 counts as non-negative
    assert m["f1_has0"] == pytest.approx(2 * 2 / (3 + 2))  # one true class (>= 0): n_true 3, n_pred 2, tp 2
    assert m["acc7"] == 1.0  # 0.3, -0.2, 0 all round to 0
    assert math.isnan(m["corr"])  # constant labels


def test_constant_predictor_gives_nan_corr_and_zero_division_f1():
    true = [1.0, -1.0, 2.0, -2.0, 0.0]
    with pytest.warns(RuntimeWarning, match="constant"):
        m = msa_metrics([0.3] * 5, true)
    assert math.isnan(m["corr"])
    assert m["acc2"] == 0.5  # predicts positive for the 4 non-zero labels, 2 of them positive
    assert m["f1"] == pytest.approx((2 * (2 * 2 / 6) + 2 * 0.0) / 4)  # negative class: never predicted -> 0
    assert m["mae"] == pytest.approx((0.7 + 1.3 + 1.7 + 2.3 + 0.3) / 5)


def test_non_finite_predictions_give_all_nan_not_a_crash():
    with pytest.warns(RuntimeWarning, match="NaN or inf"):
        m = msa_metrics([np.nan, 1.0], [1.0, -1.0])
    assert all(math.isnan(v) for v in m.values())


def test_accepts_tensors_and_column_vectors():
    ref = msa_metrics(PRED, TRUE)
    pred = torch.tensor(PRED, requires_grad=True).reshape(-1, 1)
    got = msa_metrics(pred, np.asarray(TRUE, dtype=np.float32).reshape(-1, 1))
    for key in METRIC_KEYS:
        assert got[key] == pytest.approx(ref[key], abs=1e-6)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="true has 6"):
        msa_metrics([0.1, 0.2], TRUE)


@pytest.mark.slow
def test_weighted_f1_matches_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    cases = [(rng.random(n) < p_true, rng.random(n) < p_pred)
             for n in (1, 2, 5, 40) for p_true in (0.0, 0.3, 1.0) for p_pred in (0.0, 0.5, 1.0)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns on zero division; the value is what matters
        for y_true, y_pred in cases:
            expected = sk.f1_score(y_true, y_pred, average="weighted")
            assert weighted_f1(y_true, y_pred) == pytest.approx(expected), (y_true, y_pred)


def test_msa_metrics_match_an_independent_computation():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    true = np.round(rng.uniform(-3, 3, 200) * 5) / 5  # multiples of 0.2, some exact zeros
    true[:10] = 0.0
    pred = np.clip(true + rng.normal(0, 1.0, 200), -3.5, 3.5)
    m = msa_metrics(pred, true)
    nz = true != 0
    assert m["f1"] == pytest.approx(sk.f1_score(true[nz] > 0, pred[nz] > 0, average="weighted"))
    assert m["f1_has0"] == pytest.approx(sk.f1_score(true >= 0, pred >= 0, average="weighted"))
    assert m["acc2"] == pytest.approx(sk.accuracy_score(true[nz] > 0, pred[nz] > 0))
    assert m["acc7"] == pytest.approx(np.mean(np.round(np.clip(pred, -3, 3)) == np.round(np.clip(true, -3, 3))))
    assert m["mae"] == pytest.approx(np.mean(np.abs(pred - true)))
