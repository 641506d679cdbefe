"""pca-sgd, SGD and momentum: exact equivalences, label noise, reproducibility."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from sipgrad.analysis.models import small_model
from sipgrad.analysis.projected_training import (
    BatchSubspace,
    ProjectedTrainConfig,
    _batches,
    randomize_labels,
    summarize_runs,
    train_projected,
)
from sipgrad.datasets import load_digits
from sipgrad.errors import SipgradError


@pytest.fixture(scope="module")
def digits():
    return load_digits(seed=0)


@settings(max_examples=40, deadline=None)
@given(size=st.integers(0, 300), share=st.floats(0, 1), classes=st.integers(2, 12), seed=st.integers(0, 1000))
def test_label_noise_changes_exactly_the_requested_share(size, share, classes, seed):
    labels = torch.randint(0, classes, (size,), generator=torch.Generator().manual_seed(seed))
    noisy, corrupted = randomize_labels(labels, share, classes, seed)
    changed = noisy != labels
    assert int(changed.sum()) == round(share * size)
    assert torch.equal(changed, corrupted)
    assert noisy.min() >= 0 if size else True
    assert noisy.max() < classes if size else True
    again, _ = randomize_labels(labels, share, classes, seed)
    assert torch.equal(noisy, again)


def test_wrong_labels_are_spread_over_the_other_classes():
    labels = torch.zeros(9000, dtype=torch.long)
    noisy, _ = randomize_labels(labels, 1.0, 10, seed=0)
    counts = torch.bincount(noisy, minlength=10)
    assert counts[0] == 0
    assert counts[1:].min() > 900 and counts[1:].max() < 1100  # uniform: 1000 each


def run(digits, **options):
    config = ProjectedTrainConfig(steps=options.pop("steps", 12), batch_size=32, eval_every=6, **options)
    return train_projected(small_model("mlp", digits.image_shape, seed=config.seed), digits, config)


def test_pca_sgd_with_k_at_least_every_layer_size_is_sgd_exactly(digits):
    sgd = run(digits, optimizer="sgd", label_noise=0.2)
    full = run(digits, optimizer="pca-sgd", k=64 * 64 + 64, label_noise=0.2)
    for name in sgd.params:
        assert torch.equal(sgd.params[name], full.params[name])
    assert sgd.test_accuracy == full.test_accuracy
    low = run(digits, optimizer="pca-sgd", k=4, label_noise=0.2)
    assert not torch.equal(low.params["1.weight"], sgd.params["1.weight"])


def test_pca_sgd_on_the_batch_subspace_with_k_at_least_the_batch_is_sgd(digits):
    sgd = run(digits, optimizer="sgd")
    batch = run(digits, optimizer="pca-sgd", k=32, subspace="batch")  # 32 examples: rank <= 32
    for name in sgd.params:
        torch.testing.assert_close(batch.params[name], sgd.params[name], rtol=1e-4, atol=1e-5)
    assert batch.probe["cos(g, Pg)"] == pytest.approx([1.0] * len(batch.steps), abs=1e-5)
    fewer = run(digits, optimizer="pca-sgd", k=4, subspace="batch")
    assert max(fewer.probe["cos(g, Pg)"]) < 0.99


def test_momentum_is_torch_sgd_with_dampening(digits):
    config = ProjectedTrainConfig(optimizer="momentum", momentum=0.8, lr=0.2, steps=10, batch_size=32, eval_every=5,
                         label_noise=0.2, seed=3)
    model = small_model("mlp", digits.image_shape, seed=3)
    ours = train_projected(model, digits, config)
    reference = copy.deepcopy(model)
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.2, momentum=0.8, dampening=0.8)
    labels, _ = randomize_labels(digits.train.labels, 0.2, 10, seed=3)
    batches = _batches(len(digits.train), 32, torch.Generator().manual_seed(3))
    for _ in range(10):
        index = next(batches)
        optimizer.zero_grad()
        F.cross_entropy(reference(digits.train.inputs[index]), labels[index]).backward()
        optimizer.step()
    for name, p in reference.named_parameters():
        torch.testing.assert_close(ours.params[name], p.detach(), rtol=1e-4, atol=1e-6)
    assert set(ours.probe) >= {"cos(v, Pg)", "cos(v, g)", "|Pv|/|v|"}
    assert all(-1 <= c <= 1 for c in ours.probe["cos(v, Pg)"])


def test_runs_are_reproducible_and_record_what_they_say(digits):
    first = run(digits, optimizer="pca-sgd", k=8, label_noise=0.5, steps=12)
    second = run(digits, optimizer="pca-sgd", k=8, label_noise=0.5, steps=12)
    assert first.test_accuracy == second.test_accuracy and first.probe == second.probe
    assert first.steps == [6, 12]
    assert len(first.noise_fit) == 2 and all(0 <= v <= 1 for v in first.noise_fit)
    assert not run(digits, optimizer="sgd", steps=6).noise_fit  # no noise, nothing memorised
    summary = summarize_runs([first.to_dict(), second.to_dict()])
    assert len(summary) == 1 and summary[0]["seeds"] == 2
    assert summary[0]["final test accuracy"] == pytest.approx(first.test_accuracy[-1])
    assert "params" not in first.to_dict()


def test_sgd_learns_digits(digits):
    result = run(digits, optimizer="sgd", steps=90, lr=0.3)
    assert result.test_accuracy[-1] > 0.7
    assert result.train_loss[-1] < result.train_loss[0]


@pytest.mark.parametrize("options, message", [
    ({"optimizer": "adam"}, "unknown optimizer"), ({"subspace": "full"}, "unknown subspace"),
    ({"lr": 0.0}, "lr"), ({"momentum": 1.0}, "momentum"), ({"k": 0}, "k must"),
    ({"k": 8, "sketch_size": 4}, "sketch_size"), ({"decay": 0.0}, "decay"), ({"label_noise": 1.5}, "label_noise"),
    ({"steps": 0}, "steps"),
])
def test_config_is_validated(options, message):
    with pytest.raises(SipgradError, match=message):
        ProjectedTrainConfig(**options)


def test_batch_larger_than_the_data_is_refused(digits):
    with pytest.raises(SipgradError, match="exceeds the"):
        train_projected(small_model("mlp", digits.image_shape), digits, ProjectedTrainConfig(batch_size=5000, steps=1))


def test_batch_subspace_keeps_the_top_k_right_singular_vectors_of_its_rank():
    generator = torch.Generator().manual_seed(0)
    scales = torch.linspace(3.0, 0.1, 30, dtype=torch.float64)  # distinct strengths: a well-defined top 3
    rows = torch.randn(12, 30, generator=generator, dtype=torch.float64) * scales
    small = torch.randn(2, dtype=torch.float64)
    subspace = BatchSubspace({"a": 30, "small": 2}, ProjectedTrainConfig(k=3, subspace="batch"))
    subspace.update({"a": rows, "small": torch.randn(12, 2, generator=generator, dtype=torch.float64)})
    vector = torch.randn(30, generator=generator, dtype=torch.float64)
    top = np.linalg.svd(rows.numpy(), full_matrices=False)[2][:3]
    projected = subspace.project({"a": vector, "small": small})
    np.testing.assert_allclose(projected["a"].numpy(), top.T @ (top @ vector.numpy()), atol=1e-10)
    assert projected["small"] is small
    # Rank 2 < k: only the two directions the rows span, never an arbitrary null-space vector.
    rank_two = torch.randn(12, 2, generator=generator, dtype=torch.float64) @ torch.randn(2, 30, generator=generator,
                                                                                          dtype=torch.float64)
    subspace.update({"a": rank_two, "small": torch.randn(12, 2, dtype=torch.float64)})
    span = np.linalg.svd(rank_two.numpy(), full_matrices=False)[2][:2]
    np.testing.assert_allclose(subspace.project({"a": vector})["a"].numpy(), span.T @ (span @ vector.numpy()),
                               atol=1e-10)


def test_probe_ratios_are_those_of_an_orthogonal_projection(digits):
    # For an orthogonal projection P, cos(g, Pg) = |Pg| / |g| <= 1; with k at least every layer size P = I.
    low = run(digits, optimizer="momentum", k=4, steps=6)
    assert low.probe["|Pg|/|g|"] == pytest.approx(low.probe["cos(g, Pg)"], rel=1e-4)
    assert all(0 < v <= 1 + 1e-6 for v in low.probe["|Pg|/|g|"] + low.probe["|Pv|/|v|"])
    full = run(digits, optimizer="momentum", k=64 * 64 + 64, steps=6)
    assert full.probe["|Pg|/|g|"] == pytest.approx([1.0], rel=1e-6)
    assert full.probe["|Pv|/|v|"] == pytest.approx([1.0], rel=1e-6)
    assert full.probe["cos(v, Pg)"] == pytest.approx(full.probe["cos(v, g)"], rel=1e-6)


def test_batches_are_full_and_never_span_two_epochs():
    batches = _batches(10, 4, torch.Generator().manual_seed(0))
    drawn = [next(batches) for _ in range(4)]  # two per epoch of 10: the last 2 examples of each are left out
    assert [len(b) for b in drawn] == [4, 4, 4, 4]
    assert len(set(torch.cat(drawn[:2]).tolist())) == 8 and len(set(torch.cat(drawn[2:]).tolist())) == 8


def test_an_sgd_step_is_the_mean_gradient_for_any_batch_size(digits):
    model = small_model("mlp", digits.image_shape, seed=0)
    ours = train_projected(model, digits, ProjectedTrainConfig(optimizer="sgd", lr=0.5, steps=1, batch_size=16, eval_every=1))
    index = next(_batches(len(digits.train), 16, torch.Generator().manual_seed(0)))
    reference = copy.deepcopy(model)
    F.cross_entropy(reference(digits.train.inputs[index]), digits.train.labels[index]).backward()
    for name, p in reference.named_parameters():
        torch.testing.assert_close(ours.params[name], p.detach() - 0.5 * p.grad, rtol=1e-4, atol=1e-6)


def test_a_diverging_run_is_stopped_with_one_error(digits):
    # A learning rate of 1e30 used to run on and fail later inside an eigendecomposition of NaN gradients.
    message = r"sgd \(label noise 0.0, seed 0\): the training diverged by step [1-5] .*try a smaller learning rate"
    with pytest.raises(SipgradError, match=message):
        run(digits, optimizer="sgd", lr=1e30, steps=5)


def test_training_reads_nothing_on_the_host_between_evaluations(digits, monkeypatch):
    # Each host read (float(), int(), bool(), .item(), .tolist()) is a device sync on a GPU. The per-step
    # probes and the sketch's row trimming used to make about 8 a step; now only each evaluation reads.
    reads = []
    for name in ("__float__", "__int__", "__bool__", "item", "tolist"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name,
                            lambda self, *a, _original=original, **k: reads.append(1) or _original(self, *a, **k))
    def reads_of(steps, eval_every):
        reads.clear()
        config = ProjectedTrainConfig(optimizer="pca-sgd", k=4, steps=steps, batch_size=32, eval_every=eval_every)
        train_projected(small_model("mlp", digits.image_shape), digits, config)
        return len(reads)

    per_evaluation = reads_of(24, 6) / 4  # evaluations at steps 6, 12, 18 and 24
    assert per_evaluation < 10
    assert reads_of(48, 24) <= 2 * per_evaluation + 2  # twice the steps, half the evaluations
