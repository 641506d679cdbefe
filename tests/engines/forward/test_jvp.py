"""Forward mode: JVPs against autograd, forward-gradient estimates, training without backprop."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits

from sipgrad.engines import (
    forward_gradient,
    forward_gradient_step,
    model_jvp,
    target_logit,
)
from sipgrad.errors import SipgradError
from tests.conftest import make_small_cnn


def _input_gradient(model, inputs, targets):
    x = inputs.clone().requires_grad_(True)
    grad, = torch.autograd.grad(model(x).gather(1, targets[:, None]).sum(), x)
    return grad


def test_jvp_equals_gradient_dot_tangent_with_inplace_relu(small_batch):
    model = make_small_cnn()  # in-place ReLUs
    tangents = torch.randn(small_batch.shape, generator=torch.Generator().manual_seed(3))
    logits, derivative = model_jvp(model, small_batch, tangents)
    torch.testing.assert_close(logits, model(small_batch).detach())
    for target in (0, 5):
        targets = torch.full((small_batch.shape[0],), target)
        expected = (_input_gradient(model, small_batch, targets) * tangents).sum(dim=(1, 2, 3))
        torch.testing.assert_close(derivative[:, target], expected, atol=1e-5, rtol=1e-4)
    assert derivative.grad_fn is None  # no reverse-mode graph kept
    with pytest.raises(SipgradError, match="shape"):
        model_jvp(model, small_batch, tangents[:1])


def test_forward_gradient_with_a_basis_is_exact():
    model = make_small_cnn()
    inputs = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([1, 7])
    dims = inputs[0].numel()
    basis = torch.eye(dims).reshape(dims, 1, *inputs.shape[1:]).expand(dims, *inputs.shape).contiguous()
    expected = _input_gradient(model, inputs, targets)
    # The basis scaled by sqrt(D) averages v v^T to the identity: the gradient itself (as the docs say).
    exact = forward_gradient(target_logit(model, targets), inputs, tangents=basis * dims ** 0.5)
    torch.testing.assert_close(exact, expected, atol=1e-5, rtol=1e-4)
    # Unscaled, K = D orthonormal directions average (g . e_k) e_k / K: the gradient divided by D.
    estimate = forward_gradient(target_logit(model, targets), inputs, tangents=basis) * dims
    torch.testing.assert_close(estimate, expected, atol=1e-5, rtol=1e-4)


def test_forward_gradient_is_unbiased_and_reproducible():
    weights = torch.linspace(-1.0, 2.0, 12).reshape(1, 3, 2, 2)
    fn = lambda x: (x * weights).sum(dim=(1, 2, 3))  # gradient: weights, for every row
    inputs = torch.zeros(2, 3, 2, 2)
    estimate = forward_gradient(fn, inputs, directions=4000, generator=torch.Generator().manual_seed(0))
    # Each entry's standard error is sqrt((|w|^2 + w_i^2) / K) <= 0.11 here; allow four of them.
    assert (estimate - weights).abs().max() < 0.45
    assert torch.corrcoef(torch.stack([estimate.flatten(), weights.expand_as(estimate).flatten()]))[0, 1] > 0.95
    again = forward_gradient(fn, inputs, directions=5, generator=torch.Generator().manual_seed(7))
    same = forward_gradient(fn, inputs, directions=5, generator=torch.Generator().manual_seed(7))
    other = forward_gradient(fn, inputs, directions=5, generator=torch.Generator().manual_seed(8))
    assert torch.equal(again, same) and not torch.equal(again, other)
    with pytest.raises(SipgradError, match="one scalar per row"):
        forward_gradient(lambda x: x.sum(), inputs, directions=1)


def test_forward_gradient_training_learns_digits():
    features, labels = load_digits(return_X_y=True)
    inputs, labels = torch.tensor(features / 16.0, dtype=torch.float32), torch.tensor(labels)
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 10)
    loss_fn = torch.nn.functional.cross_entropy
    with torch.no_grad():
        before = float(loss_fn(model(inputs), labels))
    generator = torch.Generator().manual_seed(0)
    for _ in range(150):
        rows = torch.randint(0, len(inputs), (64,), generator=generator)
        loss = forward_gradient_step(model, loss_fn, inputs[rows], labels[rows], lr=0.05, directions=8,
                                     generator=generator)
        assert loss.shape == () and torch.isfinite(loss)
    with torch.no_grad():
        after = float(loss_fn(model(inputs), labels))
        accuracy = float((model(inputs).argmax(dim=1) == labels).float().mean())
    assert after < 0.75 * before and accuracy > 0.6  # chance is 0.1
    assert all(p.grad is None for p in model.parameters())  # no backprop happened


def test_frozen_parameters_stay_put():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    model[0].weight.requires_grad_(False)
    frozen = model[0].weight.clone()
    moving = model[1].weight.clone()
    forward_gradient_step(model, torch.nn.functional.cross_entropy, torch.randn(5, 4), torch.tensor([0, 1, 0, 1, 1]),
                          lr=0.1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model[0].weight, frozen) and not torch.equal(model[1].weight, moving)
    with pytest.raises(SipgradError, match="at least one direction"):
        forward_gradient_step(model, torch.nn.functional.cross_entropy, torch.randn(5, 4), torch.zeros(5).long(),
                              lr=0.1, directions=0)
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(SipgradError, match="no trainable parameters"):
        forward_gradient_step(model, torch.nn.functional.cross_entropy, torch.randn(5, 4), torch.zeros(5).long(), lr=0.1)


def test_sip_does_not_touch_forward_mode(small_batch):
    """SIP's hooks act on the backward pass; a JVP inside a SIP context is the plain one."""
    from sipgrad import SIP

    model = make_small_cnn()
    tangents = torch.randn_like(small_batch)
    plain = model_jvp(model, small_batch, tangents)[1]
    with SIP(model, "topq:0.25"):
        inside = model_jvp(model, small_batch, tangents)[1]
    assert torch.equal(plain, inside)


def test_forward_gradient_is_the_mean_of_derivative_times_direction_over_standard_gaussian_draws():
    """Hand-computed: K = 3 draws of N(0, I) from the generator, (g . v_k) v_k averaged (not summed, not rescaled)."""
    weights = torch.linspace(-1.0, 2.0, 12, dtype=torch.float64).reshape(1, 3, 2, 2)
    fn = lambda x: (x * weights).sum(dim=(1, 2, 3)) + (x ** 2).sum(dim=(1, 2, 3))  # gradient: weights + 2 x
    inputs = torch.randn(2, 3, 2, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    estimate = forward_gradient(fn, inputs, directions=3, generator=torch.Generator().manual_seed(11))
    tangents = torch.randn((3, *inputs.shape), generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    gradient = weights + 2 * inputs
    derivatives = (tangents * gradient).sum(dim=(2, 3, 4))  # K x B
    torch.testing.assert_close(estimate, (derivatives[..., None, None, None] * tangents).mean(dim=0))
    torch.testing.assert_close(forward_gradient(fn, inputs, tangents=tangents), estimate)


def test_forward_gradient_step_moves_the_parameters_by_minus_lr_times_the_estimate():
    from sipgrad.engines.forward import model_gradient_estimate

    loss_fn = torch.nn.functional.cross_entropy
    inputs = torch.randn(6, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    torch.manual_seed(0)
    for model in (torch.nn.Linear(5, 3).double(),  # the fused path
                  torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3)).double()):
        for directions in (1, 3):
            expected = model_gradient_estimate(model, loss_fn, inputs, labels, directions=directions,
                                               generator=torch.Generator().manual_seed(4))
            gradient = {k: v.clone() for k, v in expected.gradient.items()}
            before = {k: p.detach().clone() for k, p in model.named_parameters()}
            forward_gradient_step(model, loss_fn, inputs, labels, lr=0.3, directions=directions,
                                  generator=torch.Generator().manual_seed(4))
            for name, p in model.named_parameters():
                torch.testing.assert_close(p.detach(), before[name] - 0.3 * gradient[name], atol=1e-12, rtol=1e-10)
