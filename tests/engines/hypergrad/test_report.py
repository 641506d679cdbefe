"""RFHO's report, per outer step and mode."""

from __future__ import annotations

import pytest
import torch

from sipgrad.engines.hypergrad import AdamConfig, reverse_hypergradient, run_experiment, seed_hyperparameters
from tests.engines.hypergrad.conftest import smooth_problem

SEED_LINES = ("step:", "mode:", "test accuracy:", "validation accuracy:", "training accuracy:", "validation error:",
              "memory usage (MiB):", "# weights:", "# hyperparameters:", "# iterations:", "rho_l1_0:", "rho_l2_2:",
              "eta:", "mu:", "Elapsed time (sec):", "peak process memory (MiB):")


def test_both_modes_interleave_and_report_the_seeds_fields():
    problem = smooth_problem(steps=5)
    hyper = seed_hyperparameters(problem.inner, eta=0.1, mu=0.5)
    reports = list(run_experiment(problem, hyper, 2, ("forward", "reverse"), AdamConfig(lr=0.01)))
    assert [(r.step, r.mode) for r in reports] == [(0, "forward"), (0, "reverse"), (1, "forward"), (1, "reverse")]
    forward, reverse = reports[0], reports[1]
    assert forward.weights == problem.inner.weight_count == 6 * 5 + 5 + 5 * 5 + 5 + 5 * 3 + 3
    assert forward.iterations == 5 and forward.validation_error == pytest.approx(reverse.validation_error)
    assert forward.state_mib > reverse.state_mib  # m + 1 = 9 states vs T + 2 = 7 at T = 5
    for name, (value, gradient) in forward.hyperparameters.items():
        assert gradient == pytest.approx(reverse.hyperparameters[name][1], rel=1e-9, abs=1e-12)
    # As in the seed, the value is the one after this step's Adam update: eta 0.1 -> 0.1 + 0.01 (it helps).
    assert forward.hyperparameters["eta"][0] == pytest.approx(0.11, rel=1e-6)
    assert forward.hyperparameters["rho_l1_0"][0] == 0.0  # a penalty that hurts stays at 0
    # each accuracy on its own split, from the trained weights, counted here by hand
    trained = reverse_hypergradient(problem.inner, hyper).weights
    for split, got in ((problem.data.train, reports[1].training_accuracy),
                       (problem.data.validation, reports[1].validation_accuracy),
                       (problem.data.test, reports[1].test_accuracy)):
        logits = torch.func.functional_call(problem.model, trained, (split.flat().double(),))
        assert got == (logits.argmax(1) == split.labels).sum().item() / len(split)
    accuracies = {reports[1].training_accuracy, reports[1].validation_accuracy, reports[1].test_accuracy}
    assert len(accuracies) == 3  # distinct, so a split swapped for another shows
    text = forward.format()
    for line in SEED_LINES:
        assert any(row.startswith(line) for row in text.splitlines()), line
    assert "rho_l1_0: [0.0, " in text
    record = forward.to_json()
    assert set(record) >= {"step", "mode", "test_accuracy", "validation_accuracy", "training_accuracy",
                           "validation_error", "state_mib", "weights", "iterations", "seconds", "hyperparameters"}
    assert record["hyperparameters"]["eta"] == {"value": forward.hyperparameters["eta"][0],
                                                "hypergradient": forward.hyperparameters["eta"][1]}
    assert reports[2].seconds >= reports[0].seconds  # elapsed time is cumulative per mode, as the seed's


def test_forward_state_is_smaller_than_reverse_once_t_exceeds_m():
    problem = smooth_problem(steps=12)
    hyper = seed_hyperparameters(problem.inner)
    forward, reverse = run_experiment(problem, hyper, 1, ("forward", "reverse"))
    assert forward.state_mib == pytest.approx(reverse.state_mib * 9 / 14, rel=1e-2)  # (m + 1) / (T + 2), plus the 8 scalars
    assert torch.isfinite(torch.tensor(forward.peak_process_mib))
