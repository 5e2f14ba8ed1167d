"""Aggregate: statistics on hand-built tidy frames, with expected numbers derived by hand.

The paired t-test numbers use closed forms of Student's t CDF: for df = 2,
p = 1 - |t| / sqrt(2 + t^2); for df = 1 (Cauchy), p = 1 - (2/pi) arctan|t|.
"""
from __future__ import annotations

import math

import pandas as pd
import pytest

from dlf.report.aggregate import aggregate, best_flags, holm, mark_best, reference_variant
from dlf.report.paper import load_paper_tables

GROUPS = {"full": None, "a": "Different Modalities", "b": "Different Components", "c": "Extras"}


def tidy(rows: list[tuple[str, int, float, float]], dataset="synthetic-mosi", synthetic=True,
         corpus="mosi", study="s") -> pd.DataFrame:
    """(variant, seed, acc7 in points, mae) -> collect's tidy rows (accuracies as fractions)."""
    out = []
    for variant, seed, acc7, mae in rows:
        out.append({"study": study, "variant": variant, "dataset": dataset, "corpus": corpus,
                    "synthetic": synthetic, "group": GROUPS.get(variant), "label": variant.upper(),
                    "latex": None, "order": list(GROUPS).index(variant) if variant in GROUPS else 9,
                    "seed": seed, "run_key": f"k{variant}{seed}", "status": "FINISHED",
                    "run_id": f"r{variant}{seed}", "start_time": 0,
                    "test_acc7": acc7 / 100, "test_mae": mae})
    return pd.DataFrame(out)


# full: acc7 40, 42, 41 (mean 41, sample std 1). a = full + (1, 2, 3): t = 2 / (1/sqrt 3) = 2 sqrt 3,
# df 2 -> p = 1 - 2sqrt3/sqrt14 = 0.0741799. b = full - (4, 5, 6): t = -5 sqrt 3, p = 1 - 5sqrt3/sqrt77
# = 0.0130719. c has seeds 0 and 1 only, full + (1, 3): t = 2 / (sqrt2/sqrt2) = 2, df 1 ->
# p = 1 - (2/pi) arctan 2 = 0.2951672. Holm over m = 3: b 3 x 0.0130719 = 0.0392157; a 2 x 0.0741799
# = 0.1483598; c max(0.1483598, 1 x 0.2951672) = 0.2951672.
ROWS = [("full", 0, 40, 0.80), ("full", 1, 42, 0.82), ("full", 2, 41, 0.81),
        ("a", 0, 41, 0.90), ("a", 1, 44, 0.90), ("a", 2, 44, 0.90),
        ("b", 0, 36, 0.70), ("b", 1, 37, 0.72), ("b", 2, 35, 0.74),
        ("c", 0, 41, 0.85), ("c", 1, 45, 0.95)]
P = {"a": 1 - 2 * math.sqrt(3) / math.sqrt(14), "b": 1 - 5 * math.sqrt(3) / math.sqrt(77),
     "c": 1 - 2 / math.pi * math.atan(2)}


def by_variant(frame: pd.DataFrame) -> dict[str, dict]:
    return {r["variant"]: r for r in frame.to_dict("records")}


def test_holm_matches_a_hand_computed_example():
    # sorted: 0.01 x 4 = 0.04; 0.03 x 3 = 0.09; 0.04 x 2 = 0.08 -> monotone 0.09; 0.20 x 1 = 0.20
    assert holm([0.01, 0.04, 0.03, 0.20]) == pytest.approx([0.04, 0.09, 0.09, 0.20])
    got = holm([math.nan, 0.02, 0.5])  # NaN (untested row) is not counted: m = 2
    assert math.isnan(got[0]) and got[1:] == pytest.approx([0.04, 0.5])
    assert holm([0.6, 0.7]) == [1.0, 1.0]  # capped at 1, monotone
    assert holm([]) == []


def test_closed_form_p_values_agree_with_scipy():
    from scipy import stats

    assert stats.ttest_rel([41, 44, 44], [40, 42, 41]).pvalue == pytest.approx(P["a"], rel=1e-9)
    assert stats.ttest_rel([36, 37, 35], [40, 42, 41]).pvalue == pytest.approx(P["b"], rel=1e-9)


def test_mean_std_ci_and_paired_tests_with_holm():
    frame = by_variant(aggregate(tidy(ROWS), ddof=1, alpha=0.05))
    full = frame["full"]
    assert full["acc7_mean"] == pytest.approx(41.0) and full["acc7_std"] == pytest.approx(1.0)
    assert full["acc7_n"] == 3 and full["n"] == 3 and full["seeds"] == "0,1,2"
    half = 4.302652729911275 / math.sqrt(3)  # t_{0.975, 2} * s / sqrt(n)
    assert (full["acc7_ci_low"], full["acc7_ci_high"]) == pytest.approx((41 - half, 41 + half))
    assert math.isnan(full["acc7_p"]) and full["is_reference"]
    for v in "abc":
        assert frame[v]["acc7_p"] == pytest.approx(P[v], abs=1e-9)
    assert frame["c"]["acc7_pairs"] == 2 and frame["c"]["n"] == 2  # matching seeds only
    assert frame["b"]["acc7_p_holm"] == pytest.approx(3 * P["b"], abs=1e-9)
    assert frame["a"]["acc7_p_holm"] == pytest.approx(2 * P["a"], abs=1e-9)
    assert frame["c"]["acc7_p_holm"] == pytest.approx(P["c"], abs=1e-9)
    assert [frame[v]["acc7_sig"] for v in "abc"] == [False, True, False]


def test_ddof_zero_is_the_population_std():
    frame = by_variant(aggregate(tidy(ROWS), ddof=0))
    assert frame["full"]["acc7_std"] == pytest.approx(math.sqrt(2 / 3))
    # the CI keeps the sample std whatever the table shows
    assert frame["full"]["acc7_ci_high"] == pytest.approx(41 + 4.302652729911275 / math.sqrt(3))
    with pytest.raises(ValueError):
        aggregate(tidy(ROWS), ddof=2)


def test_single_seed_has_no_std_and_no_test():
    frame = by_variant(aggregate(tidy([("full", 0, 40, 0.8), ("a", 0, 41, 0.9)])))
    assert math.isnan(frame["a"]["acc7_std"]) and math.isnan(frame["a"]["acc7_p"])
    assert math.isnan(frame["a"]["acc7_ci_low"])


def test_identical_results_give_p_one_and_a_constant_shift_no_test():
    frame = by_variant(aggregate(tidy([("full", 0, 40, 0.8), ("full", 1, 42, 0.8),
                                       ("a", 0, 40, 0.8), ("a", 1, 42, 0.8),
                                       ("b", 0, 41.45, 0.8), ("b", 1, 43.45, 0.8)])))
    assert frame["a"]["acc7_p"] == 1.0 and not frame["a"]["acc7_sig"]
    # b - full = +1.45 on both seeds (up to float noise): t is infinite, scipy says p = 0; no test
    assert math.isnan(frame["b"]["acc7_p"]) and not frame["b"]["acc7_sig"]


def test_best_flags_follow_direction_and_printed_precision():
    frame = by_variant(aggregate(tidy(ROWS)))
    # acc7 means: full 41, a 43, b 36, c 43 -> a and c tie (higher is better)
    assert {v for v in frame if frame[v]["acc7_best"]} == {"a", "c"}
    # mae means: full 0.81, a 0.90, b 0.72, c 0.90 -> b (lower is better)
    assert {v for v in frame if frame[v]["mae_best"]} == {"b"}
    assert best_flags([85.004, 85.001, 84.0], "acc2") == [True, True, False]  # both print 85.00
    assert best_flags([0.7314, 0.7306], "mae") == [True, True]  # both print 0.731
    assert best_flags([0.5, None], "mae") == [False, False]  # a lone value is not "best"


def test_mark_best_is_per_table():
    frame = pd.DataFrame({"study": ["s"] * 4, "dataset": ["x", "x", "y", "y"], "f1_mean": [1.0, 2.0, 5.0, 3.0]})
    assert mark_best(frame, ["f1"])["f1_best"].tolist() == [False, True, True, False]


def test_gap_to_the_paper_only_for_real_mosi_mosei():
    paper = load_paper_tables()
    real = by_variant(aggregate(tidy(ROWS, dataset="mosi", synthetic=False), paper=paper))
    # full on MOSI: the paper's Table 1 says Acc-7 47.08, MAE 0.731; mean 41, std 1 -> gap -6.08 = -6.08 std
    assert real["full"]["acc7_paper"] == 47.08 and real["full"]["acc7_gap"] == pytest.approx(-6.08)
    assert real["full"]["acc7_gap_std"] == pytest.approx(-6.08)
    assert real["full"]["mae_gap"] == pytest.approx(0.81 - 0.731)
    assert math.isnan(real["a"]["acc7_paper"])  # 'a' is no variant of the paper
    synth = by_variant(aggregate(tidy(ROWS), paper=paper))
    assert math.isnan(synth["full"]["acc7_paper"]) and math.isnan(synth["full"]["acc7_gap"])


def test_the_reference_gets_the_papers_dlf_numbers_whatever_its_name():
    # table1's DLF row is the inline variant `dlf` (BERT): as the only ungrouped variant it is the
    # reference, and its gap is to the paper's DLF row (Acc-7 47.08 on MOSI), as `full`'s would be
    rows = [("dlf" if v == "full" else v, s, acc, mae) for v, s, acc, mae in ROWS]
    real = by_variant(aggregate(tidy(rows, dataset="mosi", synthetic=False), paper=load_paper_tables()))
    assert real["dlf"]["is_reference"] and real["dlf"]["acc7_paper"] == 47.08
    assert real["dlf"]["acc7_gap"] == pytest.approx(-6.08)
    assert math.isnan(real["a"]["acc7_paper"])  # a measured ablation is still no paper row


def test_paper_ablation_numbers_come_from_table2_on_mosi_only():
    paper = load_paper_tables()
    assert paper.value("wo_lfa", "mosi", "acc7") == 42.71
    assert paper.value("wo_lfa", "mosei", "acc7") is None  # Table 2 is MOSI only
    assert paper.value("full", "mosei", "mae") == 0.536  # Table 1
    assert paper.value("full", "mosi", "acc5") == 52.33


def test_reference_variant():
    assert reference_variant(tidy(ROWS)) == "full"
    no_full = tidy(ROWS).query("variant != 'full'").assign(group=lambda f: f["group"].where(f["variant"] != "a"))
    assert reference_variant(no_full) == "a"  # the only ungrouped variant
    assert reference_variant(tidy(ROWS).query("variant in ['a', 'b']")) is None
