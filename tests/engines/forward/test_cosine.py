"""The cosine table: the isotropic closed form, measured cosines against it, the input-span gain, row correlations."""

from __future__ import annotations

import math

import pytest
import torch

from sipgrad.datasets import load_digits
from sipgrad.engines.forward.cosine import (
    closed_form_cosine,
    cosine_table,
    estimate_cosines,
    gradient_row_correlations,
)
from sipgrad.engines.forward.models import build_model
from sipgrad.errors import SipgradError


def test_closed_form_values():
    # K = 1: Gamma(n/2) / (sqrt(pi) Gamma((n+1)/2)); n = 2 gives 2 / pi, n = 3 gives 1/2
    assert closed_form_cosine(2, 1) == pytest.approx(2 / math.pi)
    assert closed_form_cosine(3, 1) == pytest.approx(0.5)
    assert closed_form_cosine(1.2e7, 1) == pytest.approx(math.sqrt(2 / (math.pi * 1.2e7)), rel=1e-6)
    assert closed_form_cosine(12_000_000, 1) == pytest.approx(0.000230, abs=2e-6)  # the notes' 0.000228 at n ~ 1.2e7
    assert closed_form_cosine(10_000_000, 100) == pytest.approx(math.sqrt(100 / 1e7), rel=1e-2)
    assert closed_form_cosine(50, 50) == 1.0
    with pytest.raises(SipgradError, match="directions"):
        closed_form_cosine(5, 6)


@pytest.fixture(scope="module")
def digits_mlp():
    data = load_digits()
    return build_model("mlp", data.image_shape, seed=0), data


@pytest.mark.parametrize("sampler,directions", [("gaussian", 1), ("orthonormal", 8)])
def test_mean_cosine_is_within_three_standard_errors_of_the_closed_form(digits_mlp, sampler, directions):
    model, data = digits_mlp
    values = torch.tensor(estimate_cosines(model, data.train, 32, sampler, directions, 300,
                                           torch.Generator().manual_seed(0)), dtype=torch.float64)
    if sampler == "gaussian":  # K = 1: the cosine is |cos| between gradient and direction, never negative
        assert values.min() >= 0
    stderr = float(values.std()) / math.sqrt(len(values))
    n = sum(p.numel() for p in model.parameters())
    assert abs(float(values.mean()) - closed_form_cosine(n, directions)) < 3 * stderr


def test_input_span_sampler_beats_naive_at_small_batches_and_the_gain_shrinks(digits_mlp):
    model, data = digits_mlp
    table = cosine_table(model, data.train, [8, 256], ["gaussian", "activity"], directions=4, trials=30, seed=0)
    cell = {(row.batch_size, row.sampler): row for row in table.rows}
    small = cell[8, "activity"].cosine / cell[8, "gaussian"].cosine
    large = cell[256, "activity"].cosine / cell[256, "gaussian"].cosine
    assert small > 2.0 and small > large
    assert cell[8, "activity"].cosine - cell[8, "gaussian"].cosine > 3 * (cell[8, "activity"].stderr
                                                                          + cell[8, "gaussian"].stderr)
    assert table.parameters == 64 * 128 + 128 + 128 * 10 + 10
    document = table.to_json()
    assert set(document) == {"parameters", "directions", "closed_form", "rows"}
    assert set(document["rows"][0]) == {"batch_size", "sampler", "cosine", "stderr", "trials"}


def test_row_correlations_are_correlation_matrices(digits_mlp):
    model, data = digits_mlp
    batch = data.train.subset(slice(0, 64))
    correlations = gradient_row_correlations(model, batch.inputs, batch.labels)
    assert set(correlations) == {"1.weight", "3.weight"}
    last = correlations["3.weight"]  # 10 x 10; the output layer's rows are all non-zero
    assert last.shape == (10, 10)
    torch.testing.assert_close(last, last.T)
    torch.testing.assert_close(torch.diagonal(last), torch.ones(10, dtype=last.dtype))
    gradient = torch.func.grad(lambda p: torch.nn.functional.cross_entropy(
        torch.func.functional_call(model, p, (batch.inputs,)), batch.labels))(dict(model.named_parameters()))
    torch.testing.assert_close(last, torch.corrcoef(gradient["3.weight"].double()))


def test_table_rows_are_mean_and_standard_error_of_trials_that_share_the_seed(digits_mlp):
    """Each row: the mean of R cosines and their standard error std / sqrt(R) (std with Bessel's correction),
    every sampler's trials starting from the same seed."""
    model, data = digits_mlp
    table = cosine_table(model, data.train, [16], ["gaussian", "rademacher"], directions=2, trials=5, seed=3)
    assert [row.sampler for row in table.rows] == ["gaussian", "rademacher"]
    for row in table.rows:
        values = estimate_cosines(model, data.train, 16, row.sampler, 2, 5, torch.Generator().manual_seed(3))
        mean = sum(values) / 5
        assert row.cosine == pytest.approx(mean, rel=1e-12)
        assert row.stderr == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in values) / 4) / math.sqrt(5),
                                           rel=1e-9)
