"""Parameter JVPs in one vmapped call: against autograd and finite differences, BatchNorm, unsupported layers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sipgrad.engines.forward import forward_gradient_step, model_gradient_estimate
from sipgrad.engines.forward.estimators import (
    batchnorm_for_forward_mode,
    directional_derivatives,
    loss_function,
    trainable_parameters,
)
from sipgrad.engines.forward.models import build_model
from sipgrad.engines.forward.samplers import make_sampler
from sipgrad.errors import SipgradError


def _cnn_problem(dtype=torch.float64, model_name="cnn", batch=6):
    model = build_model(model_name, (1, 8, 8), 10, seed=0).to(dtype)
    generator = torch.Generator().manual_seed(0)
    inputs = torch.rand(batch, 1, 8, 8, generator=generator, dtype=dtype)
    labels = torch.randint(0, 10, (batch,), generator=generator)
    return model, inputs, labels


def test_vmapped_jvp_matches_autograd_and_central_differences():
    model, inputs, labels = _cnn_problem()
    params = trainable_parameters(model)
    loss_of = loss_function(model, F.cross_entropy, inputs, labels)
    directions = make_sampler("gaussian").sample(params, 5, torch.Generator().manual_seed(1))
    loss, derivatives = directional_derivatives(loss_of, params, directions)
    gradient = torch.func.grad(loss_of)(params)
    expected = torch.stack([sum((gradient[k] * directions[k][i]).sum() for k in params) for i in range(5)])
    torch.testing.assert_close(derivatives, expected, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(loss, loss_of(params))
    step = 1e-6
    for i in range(5):
        plus = loss_of({k: p + step * directions[k][i] for k, p in params.items()})
        minus = loss_of({k: p - step * directions[k][i] for k, p in params.items()})
        torch.testing.assert_close(derivatives[i], (plus - minus) / (2 * step), atol=1e-7, rtol=1e-6)


def test_one_vmapped_call_equals_one_jvp_per_direction_and_chunks_do_not_matter():
    model, inputs, labels = _cnn_problem(torch.float32)
    params = trainable_parameters(model)
    loss_of = loss_function(model, F.cross_entropy, inputs, labels)
    directions = make_sampler("rademacher").sample(params, 6, torch.Generator().manual_seed(2))
    _, together = directional_derivatives(loss_of, params, directions)
    one_by_one = torch.cat([directional_derivatives(loss_of, params, {k: v[i:i + 1] for k, v in directions.items()})[1]
                            for i in range(6)])
    torch.testing.assert_close(together, one_by_one, atol=1e-5, rtol=1e-4)
    _, chunked = directional_derivatives(loss_of, params, directions, chunk_size=4)
    torch.testing.assert_close(together, chunked, atol=1e-6, rtol=1e-5)


def test_estimate_does_not_depend_on_thread_count():
    model, inputs, labels = _cnn_problem(torch.float32, batch=32)
    results = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(model_gradient_estimate(model, F.cross_entropy, inputs, labels, make_sampler("gaussian"), 4,
                                                   generator=torch.Generator().manual_seed(0)).gradient)
    finally:
        torch.set_num_threads(before)
    for name in results[0]:
        torch.testing.assert_close(results[0][name], results[1][name], atol=1e-5, rtol=1e-4)


def test_batchnorm_in_training_mode_uses_batch_statistics_and_keeps_running_ones():
    model, inputs, labels = _cnn_problem(model_name="cnn-bn")
    model.train()
    running = {k: v.clone() for k, v in model.named_buffers()}
    estimate = model_gradient_estimate(model, F.cross_entropy, inputs, labels, make_sampler("gaussian"), 3,
                                       generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(running[k], v) for k, v in model.named_buffers())  # untouched
    assert all(m.track_running_stats for m in model.modules() if isinstance(m, nn.BatchNorm2d))  # restored
    # the derivatives are those of the batch-statistics network
    params = trainable_parameters(model)
    with batchnorm_for_forward_mode(model):
        gradient = torch.func.grad(loss_function(model, F.cross_entropy, inputs, labels))(params)
    directions = make_sampler("gaussian").sample(params, 3, torch.Generator().manual_seed(0))
    expected = torch.stack([sum((gradient[k] * directions[k][i]).sum() for k in params) for i in range(3)])
    torch.testing.assert_close(estimate.derivatives, expected, atol=1e-10, rtol=1e-8)
    batch_stats = model(inputs)
    model.eval()
    assert not torch.allclose(batch_stats, model(inputs))  # eval mode would have given another function
    eval_estimate = model_gradient_estimate(model, F.cross_entropy, inputs, labels, make_sampler("gaussian"), 3,
                                            generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(eval_estimate.derivatives, estimate.derivatives)


class NoForwardMode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        return grad * 2


class Doubler(nn.Module):
    def forward(self, x):
        return NoForwardMode.apply(x)


def test_a_layer_forward_mode_cannot_handle_is_named():
    model = nn.Sequential(nn.Linear(4, 3), Doubler(), nn.Linear(3, 2))
    with pytest.raises(SipgradError, match=r"cannot run through layer '1' \(Doubler\)"):
        model_gradient_estimate(model, F.cross_entropy, torch.randn(5, 4), torch.zeros(5, dtype=torch.long),
                                directions=2)


def test_dropout_shares_one_mask_across_directions():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.5), nn.Linear(8, 3)).train()
    estimate = model_gradient_estimate(model, F.cross_entropy, torch.randn(4, 6), torch.tensor([0, 1, 2, 0]),
                                       directions=3, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(estimate.derivatives).all() and estimate.derivatives.shape == (3,)


def test_forward_gradient_step_accepts_a_sampler():
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    before = model.weight.clone()
    loss = forward_gradient_step(model, F.cross_entropy, torch.randn(8, 5), torch.zeros(8, dtype=torch.long), lr=0.1,
                                 directions=4, generator=torch.Generator().manual_seed(0),
                                 sampler=make_sampler("orthonormal"))
    assert loss.shape == () and not torch.equal(before, model.weight)


def test_automatic_chunks_give_the_same_estimate():
    from sipgrad.engines.forward.estimators import auto_chunk_size

    assert auto_chunk_size(256, 64) == 8 and auto_chunk_size(64, 8) is None and auto_chunk_size(4096, 3) == 1
    model, inputs, labels = _cnn_problem(torch.float64, batch=6)
    results = [model_gradient_estimate(model, F.cross_entropy, inputs, labels, make_sampler("gaussian"), 5,
                                       generator=torch.Generator().manual_seed(0), chunk_size=chunk).gradient
               for chunk in (None, 2, "auto")]
    for other in results[1:]:
        for name in results[0]:
            torch.testing.assert_close(other[name], results[0][name], atol=1e-12, rtol=1e-10)
