"""Aggregating records: intervals, the paired test's effect size, skipped cases, equal metrics."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import sipgrad.evaluation.summary as summary_module
from sipgrad.evaluation.catalog import METRICS
from sipgrad.evaluation.summary import (bootstrap_interval, equal_metrics, format_interval, format_number, format_p,
                                        markdown, paired_comparison, rank_biserial, shown_metrics, summarize)


def _record(case: str, config: str, **values) -> dict:
    method, sip = config.split("/")
    scores = {name: 0.5 for name in METRICS}
    scores.update(values)
    return {"case": case, "config": config, "method": method, "sip": sip, "box_fraction": 0.25, **scores}


def test_rank_biserial_by_hand():
    # |d| = 1, 2, 3 -> ranks 1, 2, 3; R+ = 1 + 3, R- = 2: (4 - 2) / 6.
    assert rank_biserial(np.array([1.0, -2.0, 3.0])) == pytest.approx(1 / 3)
    # Ties share the mean rank; zeros are dropped: |d| = 1, 1, 2 -> 1.5, 1.5, 3; R+ = 4.5, R- = 1.5.
    assert rank_biserial(np.array([1.0, -1.0, 2.0, 0.0])) == pytest.approx(3 / 6)
    assert rank_biserial(np.array([0.0, 0.0])) == 0.0
    assert rank_biserial(np.array([-0.1, -0.2])) == -1.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-5, 5, allow_nan=False, allow_infinity=False), min_size=1, max_size=30))
def test_rank_biserial_is_bounded_and_antisymmetric(values):
    improvements = np.array(values)
    r = rank_biserial(improvements)
    assert -1.0 <= r <= 1.0
    assert rank_biserial(-improvements) == pytest.approx(-r)


def test_paired_comparison_counts_in_the_metrics_direction():
    a = np.array([0.5, 0.4, 0.3, 0.6, 0.2, 0.45])
    lower = a - np.array([0.1, 0.05, 0.02, 0.2, 0.01, 0.07])  # lower is better: b improves every case
    result = paired_comparison(a, lower, higher_is_better=False)
    assert result["win_rate"] == 1.0 and result["loss_rate"] == 0.0 and result["tie_rate"] == 0.0
    assert result["effect_size"] == 1.0
    assert result["mean_difference"] == pytest.approx(float((lower - a).mean()))  # raw b - a, not flipped
    assert result["difference_low"] <= result["mean_difference"] <= result["difference_high"] < 0
    assert result["wilcoxon_p"] == pytest.approx(stats.wilcoxon(a - lower).pvalue)
    assert not result["identical"]
    flipped = paired_comparison(a, lower, higher_is_better=True)
    assert flipped["win_rate"] == 0.0 and flipped["effect_size"] == -1.0


def test_few_untied_pairs_get_an_exact_p_even_when_most_pairs_tie():
    """scipy's default falls back to the normal approximation at the first tied pair, which made a 0/1 metric's
    5 wins of 5 untied pairs look significant (p = 0.025); the exact p is 0.0625."""
    plain = np.zeros(20)
    sip = np.r_[np.ones(5), np.zeros(15)]
    assert paired_comparison(plain, sip)["wilcoxon_p"] == pytest.approx(0.0625)
    sip = np.r_[np.ones(12), -np.ones(3), np.zeros(225)]  # a 0/1 metric: the ranks all tie, so the sign test
    assert paired_comparison(np.zeros(240), sip)["wilcoxon_p"] == pytest.approx(stats.binomtest(12, 15).pvalue)
    rng = np.random.default_rng(0)
    continuous = np.r_[rng.normal(0.2, 1.0, 12), np.zeros(8)]
    assert paired_comparison(np.zeros(20), continuous)["wilcoxon_p"] == pytest.approx(
        stats.wilcoxon(continuous, method="exact").pvalue)


def test_one_case_has_no_interval():
    assert all(np.isnan(bootstrap_interval(np.array([0.7]))))
    result = paired_comparison(np.array([0.4]), np.array([0.7]))
    assert np.isnan(result["difference_low"]) and np.isnan(result["difference_high"])


def test_identical_results_are_named_as_such():
    a = np.array([0.1, 0.2, 0.3])
    result = paired_comparison(a, a.copy())
    assert result["identical"] and result["tie_rate"] == 1.0 and result["wilcoxon_p"] == 1.0
    assert result["effect_size"] == 0.0 and result["mean_difference"] == 0.0


def test_bootstrap_interval_does_not_depend_on_its_memory_block(monkeypatch):
    values = np.random.default_rng(1).random(37)
    whole = bootstrap_interval(values)
    monkeypatch.setattr(summary_module, "_BOOTSTRAP_BLOCK", 37 * 7)  # 7 resamples per block
    assert bootstrap_interval(values) == whole
    low, high = whole
    assert values.min() <= low < values.mean() < high <= values.max()


def test_summary_skips_failed_cases_and_pairs_the_rest():
    records = []
    for i in range(6):
        energy = 0.2 + 0.1 * i
        records.append(_record(f"c{i}", "grad/none", energy=energy, mu_in=energy))
        records.append(_record(f"c{i}", "grad/topq:0.25", energy=energy + 0.05, mu_in=energy + 0.05))
    records += [{"case": "broken", "config": key, "method": "grad", "sip": sip, "error": "broken.png: unreadable"}
                for key, sip in (("grad/none", "none"), ("grad/topq:0.25", "topq:0.25"))]
    summary = summarize(records)
    assert summary["skipped"] == [{"case": "broken", "error": "broken.png: unreadable"}]
    assert summary["configs"]["grad/none"]["n"] == 6
    assert summary["configs"]["grad/none"]["metrics"]["energy"]["mean"] == pytest.approx(0.45)
    comparison = summary["comparisons"]["grad/topq:0.25"]
    assert comparison["against"] == "grad/none" and comparison["n"] == 6
    assert "centre" not in comparison["metrics"]  # a baseline is not compared
    assert comparison["metrics"]["energy"]["win_rate"] == 1.0
    assert comparison["metrics"]["energy"]["mean_difference"] == pytest.approx(0.05)
    assert comparison["metrics"]["pointing"]["identical"]
    assert summary["same_as"] == {"mu_in": "energy"}
    assert "mu_in" not in shown_metrics(summary) and "centre" not in shown_metrics(summary)
    text = markdown(summary, "t")
    assert "broken: broken.png: unreadable" in text and "0.00 / 1" not in text
    assert "0.45 [" in text


def test_signed_maps_keep_both_mu_in_and_energy():
    records = [_record("a", "grad/none", energy=0.4, mu_in=0.3), _record("b", "grad/none", energy=0.5, mu_in=0.5)]
    assert equal_metrics(records, ["energy", "mu_in"]) == {}
    assert "mu_in" in shown_metrics(summarize(records))


def test_number_formats():
    assert format_interval(0.5213, 0.4849, 0.5671) == "0.52 [0.48, 0.57]"
    assert format_interval(-0.02, -0.07, 0.02, signed=True) == "\u22120.02 [\u22120.07, +0.02]"
    assert format_number(-0.0001, 2, signed=True) == "0.00"  # never "+0.00" or "-0.00"
    assert format_p(0.0004) == "<0.001" and format_p(0.0456) == "0.046" and format_p(1.0) == "1"


@settings(max_examples=50, deadline=None)
@given(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1))
def test_intervals_always_read_mean_then_bracketed_bounds(a, b, c):
    low, mean, high = sorted((a, b, c))
    assert re.fullmatch(r"\d\.\d\d \[\d\.\d\d, \d\.\d\d\]", format_interval(mean, low, high))


def test_no_comparison_without_shared_cases():
    records = [_record("a", "grad/none"), _record("b", "grad/topq:0.25")]
    summary = summarize(records)
    assert summary["comparisons"] == {} and summary["configs"]["grad/topq:0.25"]["n"] == 1


def test_bootstrap_interval_is_a_95_percent_interval_of_the_mean():
    # For 400 normal values the percentile interval of the resampled means is close to mean +- 1.96 se:
    # resampling the wrong axis would make it far narrower, a 90% interval 16% narrower.
    values = np.random.default_rng(5).normal(size=400)
    low, high = bootstrap_interval(values)
    se = values.std() / np.sqrt(len(values))
    assert (high - low) / (2 * 1.96 * se) == pytest.approx(1.0, abs=0.07)
    assert (low + high) / 2 == pytest.approx(values.mean(), abs=0.2 * se)
    assert bootstrap_interval(values, seed=1) != (low, high)  # the seed is used
    assert bootstrap_interval(values, seed=1) == bootstrap_interval(values, seed=1)


def test_comparison_pairs_records_by_case_not_by_position():
    # A resumed or sharded run writes records in any order; pairs must be the same case under both configs.
    plain = [_record(f"c{i}", "grad/none", energy=0.1 * i) for i in range(6)]
    sip = [_record(f"c{i}", "grad/topq:0.25", energy=0.1 * i + 0.01) for i in range(6)]
    energy = summarize(plain[::-1] + sip)["comparisons"]["grad/topq:0.25"]["metrics"]["energy"]
    assert energy["win_rate"] == 1.0 and energy["effect_size"] == 1.0
    assert energy["mean_difference"] == pytest.approx(0.01)
    by_case = np.array([0.1 * i + 0.01 for i in range(6)]) - np.array([0.1 * i for i in range(6)])
    assert energy["wilcoxon_p"] == pytest.approx(stats.wilcoxon(by_case).pvalue) and energy["wilcoxon_p"] < 0.05
