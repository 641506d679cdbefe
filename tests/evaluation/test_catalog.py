"""The metric catalog: one entry per metric the evaluator records, each with a direction and range."""

from __future__ import annotations

import math

import pytest

from sipgrad.evaluation import evaluator
from sipgrad.evaluation.catalog import BOX_METRICS, METRICS, PERTURBATION_METRICS, Metric, metric


def test_every_recorded_metric_has_an_entry_in_the_same_order():
    assert (*BOX_METRICS, *PERTURBATION_METRICS) == tuple(METRICS)
    assert tuple(evaluator.BOX_METRICS) == BOX_METRICS
    assert tuple(evaluator.PERTURBATION_METRICS) == PERTURBATION_METRICS


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
    with pytest.raises(ValueError, match="better"):
        Metric("x", "x", "up", (0.0, 1.0), "box", "x")
    with pytest.raises(ValueError, match="empty"):
        Metric("x", "x", "higher", (1.0, 1.0), "box", "x")
    with pytest.raises(KeyError, match="known"):
        metric("nope")
