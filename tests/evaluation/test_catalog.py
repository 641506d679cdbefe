"""The metric catalog: one entry per metric the evaluator records, each with a direction and range."""

from __future__ import annotations

import math

import pytest
import torch

from sipgrad.evaluation import evaluator
from sipgrad.evaluation.catalog import BOX_METRICS, METRICS, PERTURBATION_METRICS, Metric, metric
from tests.evaluation.png_cases import random_png_cases


def _small_cases(tmp_path, count):
    return random_png_cases(tmp_path, count, lambda i: i % 10, lambda i: ((4.0, 4.0, 30.0, 30.0),))


def _score_columns(record: dict) -> tuple[str, ...]:
    return tuple(key for key in record if key in METRICS or key == "peak")


def test_the_evaluator_records_every_entry_in_catalog_order(small_classifier, tmp_path):
    assert (*BOX_METRICS, *PERTURBATION_METRICS) == tuple(METRICS)
    cases = _small_cases(tmp_path, count=2)
    with_curves = evaluator.Evaluator(small_classifier, evaluator.EvalSettings(steps=2)).evaluate(cases)
    assert [_score_columns(r) for r in with_curves] == [tuple(METRICS)] * 2
    box_only = evaluator.Evaluator(small_classifier, evaluator.EvalSettings(steps=0)).evaluate(cases)
    assert [_score_columns(r) for r in box_only] == [BOX_METRICS] * 2


def test_adding_a_metric_is_one_entry(small_classifier, tmp_path, monkeypatch):
    # One entry in the catalog, and the evaluator computes it: here the map's peak value.
    peak = Metric("peak", "peak", "higher", (0.0, math.inf), "box", "the map's largest value",
                  compute=lambda s: s.maps.flatten(1).amax(1))
    monkeypatch.setitem(METRICS, "peak", peak)
    cases = _small_cases(tmp_path, count=2)
    records = evaluator.Evaluator(small_classifier, evaluator.EvalSettings(steps=0)).evaluate(cases, keep_maps=True)
    assert [_score_columns(r) for r in records] == [(*BOX_METRICS, "peak")] * 2
    assert [r["peak"] for r in records] == pytest.approx([float(r["_map"].max()) for r in records], rel=1e-6)


def test_directions_and_ranges_are_the_documented_ones():
    lower = {name for name, entry in METRICS.items() if entry.better == "lower"}
    assert lower == {"deletion_auc", "insertion_lerf_auc"}
    assert METRICS["mu_in_w"].range == (0.0, math.inf)
    assert METRICS["deletion_aopc"].range == (-1.0, 1.0)
    assert METRICS["centre"].baseline_of == "pointing" and METRICS["mu_in"].same_as == "energy"
    assert metric("deletion_auc").best([0.3, 0.1, 0.2]) == 0.1 and metric("energy").best([0.3, 0.1]) == 0.3
    assert metric("energy").arrow == "\u2191" and metric("deletion_auc").arrow == "\u2193"
    for entry in METRICS.values():
        assert entry.description and entry.label and entry.family in ("box", "perturbation")


def test_a_bad_entry_is_refused():
    def compute(inputs):
        return inputs.maps.sum()

    with pytest.raises(ValueError, match="better"):
        Metric("x", "x", "up", (0.0, 1.0), "box", "x", compute=compute)
    with pytest.raises(ValueError, match="empty"):
        Metric("x", "x", "higher", (1.0, 1.0), "box", "x", compute=compute)
    with pytest.raises(ValueError, match="compute"):
        Metric("x", "x", "higher", (0.0, 1.0), "box", "x")
    with pytest.raises(KeyError, match="known"):
        metric("nope")


def _inputs(curves=None):
    from sipgrad.evaluation.catalog import ScoringInputs
    maps = torch.zeros(1, 10, 30); maps[0, :5, :5] = 1.0  # all mass inside a 5 x 5 box
    mask = torch.zeros(1, 10, 30, dtype=torch.bool); mask[0, :5, :5] = True
    return ScoringInputs(maps, torch.tensor([[[0.0, 0.0, 5.0, 5.0]]]), torch.tensor([[True]]), mask, 1.0, curves)


def test_mu_in_w_entry_is_weighted():
    from sipgrad.evaluation.catalog import METRICS
    assert float(METRICS["mu_in"].compute(_inputs())[0]) == pytest.approx(1.0)
    assert float(METRICS["mu_in_w"].compute(_inputs())[0]) == pytest.approx(300 / 25)


def test_each_curve_metric_reads_its_own_curve():
    from sipgrad.evaluation.catalog import METRICS, PERTURBATION_METRICS
    names = ("deletion", "deletion_lerf", "insertion", "insertion_lerf")
    curves = {n: torch.full((1, 3), 0.1 * (i + 1)) for i, n in enumerate(names)}
    got = {m: round(float(METRICS[m].compute(_inputs(curves))[0]), 6) for m in PERTURBATION_METRICS}
    assert got["insertion_lerf_auc"] == 0.4 and got["insertion_auc"] == 0.3 and got["deletion_lerf_auc"] == 0.2
