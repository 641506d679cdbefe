"""The fused tangent path: same derivatives as torch's forward mode, same estimate as the per-parameter path."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import jvp, vmap

from sipgrad.engines.forward import model_gradient_estimate
from sipgrad.engines.forward.binary import BinaryLinear
from sipgrad.engines.forward.estimators import (
    combine,
    directional_derivatives,
    loss_function,
    trainable_parameters,
)
from sipgrad.engines.forward.fused import (
    _conv,
    _Layer,
    flat_combine,
    flat_gaussian,
    fused_chunk_size,
    plan_for,
)
from sipgrad.engines.forward.models import GlobalAveragePool, build_model
from sipgrad.engines.forward.samplers import (
    DirectionSampler,
    flatten_directions,
    make_sampler,
)
from sipgrad.errors import SipgradError


def _problem(model_name="cnn", dtype=torch.float64, batch=6, seed=0):
    model = build_model(model_name, (1, 8, 8), 10, seed=seed).to(dtype)
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.rand(batch, 1, 8, 8, generator=generator, dtype=dtype)
    labels = torch.randint(0, 10, (batch,), generator=generator)
    return model, inputs, labels


class Fixed(DirectionSampler):
    """Hands out given directions (to run two paths on the same ones)."""

    name = "fixed"

    def __init__(self, directions):
        self.directions = directions

    def sample(self, params, count, generator=None, layer_inputs=None):
        return {k: v.clone() for k, v in self.directions.items()}


@pytest.mark.parametrize("model_name", ["mlp", "cnn"])
@pytest.mark.parametrize("count", [1, 5])
@pytest.mark.parametrize("sampler", ["gaussian", "rademacher", "orthonormal"])
def test_fused_derivatives_equal_vmapped_jvp_and_autograd(model_name, count, sampler):
    model, inputs, labels = _problem(model_name)
    plan = plan_for(model, F.cross_entropy, inputs, labels)
    assert plan is not None
    params = trainable_parameters(model)
    directions = make_sampler(sampler).sample(params, count, torch.Generator().manual_seed(1))
    loss, fused = plan.derivatives(inputs, labels, directions)
    loss_of = loss_function(model, F.cross_entropy, inputs, labels)
    reference_loss, reference = directional_derivatives(loss_of, params, directions)
    torch.testing.assert_close(fused, reference, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(loss, reference_loss, atol=1e-14, rtol=1e-12)
    gradient = torch.func.grad(loss_of)(params)
    expected = torch.stack([sum((gradient[k] * directions[k][i]).sum() for k in params) for i in range(count)])
    torch.testing.assert_close(fused, expected, atol=1e-12, rtol=1e-10)


def test_fused_float32_and_chunks_and_a_features_input():
    model, inputs, labels = _problem("cnn", torch.float32, batch=32)
    params = trainable_parameters(model)
    directions = make_sampler("gaussian").sample(params, 7, torch.Generator().manual_seed(2))
    plan = plan_for(model, F.cross_entropy, inputs, labels)
    _, together = plan.derivatives(inputs, labels, directions)
    _, chunked = plan.derivatives(inputs, labels, directions, chunk_size=3)
    _, reference = directional_derivatives(loss_function(model, F.cross_entropy, inputs, labels), params, directions)
    torch.testing.assert_close(together, reference, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(chunked, together, atol=1e-6, rtol=1e-5)
    assert fused_chunk_size(256, 64) == 8 and fused_chunk_size(64, 8) is None and fused_chunk_size(4096, 3) == 1
    # B x features inputs, a frozen layer, a layer without bias
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 4, bias=False), nn.ReLU(), nn.Linear(4, 3)).double()
    mlp[2].weight.requires_grad_(False)
    x, y = torch.randn(9, 5, dtype=torch.float64), torch.randint(0, 3, (9,))
    plan = plan_for(mlp, F.cross_entropy, x, y)
    params = trainable_parameters(mlp)
    assert plan is not None and set(plan.params) == set(params) == {"0.weight", "0.bias", "4.weight", "4.bias"}
    directions = make_sampler("gaussian").sample(params, 3, torch.Generator().manual_seed(3))
    _, fused = plan.derivatives(x, y, directions)
    _, reference = directional_derivatives(loss_function(mlp, F.cross_entropy, x, y), params, directions)
    torch.testing.assert_close(fused, reference, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("incoming", [False, True])
@pytest.mark.parametrize("count", [1, 4])
def test_stacked_weight_conv_tangents_equal_vmapped_jvp(incoming, count):
    """conv(x, cat(V_k)) + conv(t_k, W): one conv for the K weight tangents, one for the incoming ones."""
    generator = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, padding=1, stride=2).double()
    x = torch.randn(4, 3, 9, 9, generator=generator, dtype=torch.float64)
    v = torch.randn(count, *conv.weight.shape, generator=generator, dtype=torch.float64)
    u = torch.randn(count, 5, generator=generator, dtype=torch.float64)
    t = torch.randn(4, count, 3, 9, 9, generator=generator, dtype=torch.float64) if incoming else None
    out, tangent = _conv(_Layer(conv, _conv, "weight", "bias"), x, t, {"weight": v, "bias": u}, count)

    def f(weight, bias, inputs):
        return F.conv2d(inputs, weight, bias, conv.stride, conv.padding)

    def one(vk, uk, tk):
        return jvp(f, (conv.weight.detach(), conv.bias.detach(), x), (vk, uk, tk))

    tangents_in = t.transpose(0, 1) if incoming else torch.zeros(count, *x.shape, dtype=x.dtype)
    primal, expected = vmap(one)(v, u, tangents_in)
    torch.testing.assert_close(out, primal[0], atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(tangent.transpose(0, 1), expected, atol=1e-12, rtol=1e-10)


def test_flat_direction_estimate_equals_the_per_parameter_estimate():
    """One randn, views, g = d v: the same estimate as the per-parameter path on the same directions."""
    for model_name, count in (("mlp", 1), ("cnn", 1), ("mlp", 6), ("cnn", 6)):
        model, inputs, labels = _problem(model_name, torch.float32, batch=16)
        fused = model_gradient_estimate(model, F.cross_entropy, inputs, labels, make_sampler("gaussian"), count,
                                        generator=torch.Generator().manual_seed(5))
        flat, directions = flat_gaussian(trainable_parameters(model), count, torch.Generator().manual_seed(5))
        assert flat.numel() == count * sum(p.numel() for p in model.parameters())
        reference = model_gradient_estimate(model, F.cross_entropy, inputs, labels, Fixed(directions), count,
                                            fused=False)
        for name, g in reference.gradient.items():
            assert fused.gradient[name].shape == g.shape
            torch.testing.assert_close(fused.gradient[name], g, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(fused.derivatives, reference.derivatives, atol=1e-6, rtol=1e-5)
        # and the flat combine is the per-parameter mean_k d_k v_k
        for name, g in flat_combine(reference.derivatives, flat, trainable_parameters(model)).items():
            torch.testing.assert_close(g, combine(reference.derivatives, directions)[name], atol=1e-7, rtol=1e-6)


def test_fused_gaussian_estimate_is_unbiased():
    """The mean of 3,000 one-direction fused estimates is within 4.5 standard errors of the true gradient."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)).double()
    inputs, labels = torch.randn(5, 1, 2, 3, dtype=torch.float64), torch.tensor([0, 2, 1, 1, 0])
    params = trainable_parameters(model)
    true = flatten_directions({k: v[None] for k, v in torch.func.grad(
        loss_function(model, F.cross_entropy, inputs, labels))(params).items()})[0]
    generator = torch.Generator().manual_seed(1)
    estimates = torch.stack([flatten_directions({k: v[None] for k, v in model_gradient_estimate(
        model, F.cross_entropy, inputs, labels, directions=2, generator=generator).gradient.items()})[0]
        for _ in range(3000)])
    z = (estimates.mean(0) - true) / (estimates.std(0) / math.sqrt(len(estimates)))
    assert z.abs().max() < 4.5
    assert plan_for(model, F.cross_entropy, inputs, labels) is not None  # this was the fused path


def test_unsupported_models_fall_back_to_the_general_path():
    x, y = torch.randn(4, 6), torch.tensor([0, 1, 2, 0])
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    assert plan_for(plain, F.cross_entropy, x, y) is not None
    assert plan_for(plain, F.mse_loss, x, y) is None
    assert plan_for(plain, F.cross_entropy, x, torch.randn(4, 3)) is None  # probabilities, not class indices
    assert plan_for(nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)), F.cross_entropy, x, y) is None
    assert plan_for(nn.Sequential(nn.Linear(6, 5), nn.Dropout(0.5), nn.Linear(5, 3)).train(),
                    F.cross_entropy, x, y) is None
    assert plan_for(nn.Sequential(BinaryLinear(6, 5), nn.ReLU(), nn.Linear(5, 3)), F.cross_entropy, x, y) is None
    assert plan_for(nn.Sequential(nn.Linear(6, 5), nn.ReLU()), F.cross_entropy, x, y) is not None
    images = torch.randn(4, 2, 6, 6)
    assert plan_for(nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.Flatten(), nn.Linear(64, 3)),
                    F.cross_entropy, images, y) is None
    assert plan_for(nn.Sequential(nn.Conv2d(2, 4, 3)), F.cross_entropy, images, y) is None  # no logits
    assert plan_for(build_model("cnn-bn", (1, 8, 8)), F.cross_entropy, torch.randn(4, 1, 8, 8), y) is None
    assert plan_for(build_model("binary-cnn", (1, 8, 8)), F.cross_entropy, torch.randn(4, 1, 8, 8), y) is None
    # a hook changes the function: the fused path must not skip it
    hooked = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    hooked.load_state_dict(plain.state_dict())
    handle = hooked[0].register_forward_hook(lambda _m, _a, out: out * 3)
    assert plan_for(hooked, F.cross_entropy, x, y) is None
    estimate, expected, _ = _estimate_and_general_path(hooked, x, y, 2)
    torch.testing.assert_close(estimate, expected)
    handle.remove()
    assert plan_for(hooked, F.cross_entropy, x, y) is not None


def test_labels_cross_entropy_ignores_take_the_general_path_and_are_ignored():
    """-100 (cross_entropy's ignore_index) used to reach the fused pass's gather and fail there."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, -100, 1])
    assert plan_for(model, F.cross_entropy, x, y) is None
    estimate, expected, directions = _estimate_and_general_path(model, x, y, 3)
    torch.testing.assert_close(estimate, expected)
    kept = torch.tensor([0, 1, 2, 4])  # the ignored example counts nowhere, not even in the mean's divisor
    _, without = directional_derivatives(loss_function(model, F.cross_entropy, x[kept], y[kept]),
                                         trainable_parameters(model), directions)
    torch.testing.assert_close(estimate, without)


def _estimate_and_general_path(model: nn.Module, x: torch.Tensor, y: torch.Tensor, count: int):
    """(model_gradient_estimate's derivatives, the general path's, the directions) along seeded Gaussian ones."""
    directions = make_sampler("gaussian").sample(trainable_parameters(model), count, torch.Generator().manual_seed(0))
    estimate = model_gradient_estimate(model, F.cross_entropy, x, y, Fixed(directions), count)
    _, expected = directional_derivatives(loss_function(model, F.cross_entropy, x, y), trainable_parameters(model),
                                          directions)
    return estimate.derivatives, expected, directions


def test_ties_at_zero_in_relu_then_max_pool_give_torchs_derivatives():
    """Digits have blank patches: conv outputs equal to the bias, ties in every pooling window.

    The fused path pools before the ReLU; on ties and all-negative windows it must still pick
    what torch's forward mode picks."""
    from sipgrad.datasets import load_digits

    data = load_digits()
    model = build_model("cnn", data.image_shape, 10, seed=0).double()
    with torch.no_grad():
        model[0].bias[::2] = -model[0].bias[::2].abs()  # all-negative windows on blank patches
        model[0].bias[1::2] = model[0].bias[1::2].abs()  # positive ties on blank patches
    inputs, labels = data.train.inputs[:16].double(), data.train.labels[:16]
    assert (inputs == 0).float().mean() > 0.3
    params = trainable_parameters(model)
    directions = make_sampler("gaussian").sample(params, 3, torch.Generator().manual_seed(0))
    _, fused = plan_for(model, F.cross_entropy, inputs, labels).derivatives(inputs, labels, directions)
    _, reference = directional_derivatives(loss_function(model, F.cross_entropy, inputs, labels), params, directions)
    torch.testing.assert_close(fused, reference, atol=1e-12, rtol=1e-10)


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("cc") is None,
                    reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_fused_step_equals_the_eager_one():
    model, inputs, labels = _problem("cnn", torch.float32, batch=16)
    for count in (1, 3):
        eager = model_gradient_estimate(model, F.cross_entropy, inputs, labels, directions=count,
                                        generator=torch.Generator().manual_seed(4))
        compiled = model_gradient_estimate(model, F.cross_entropy, inputs, labels, directions=count,
                                           generator=torch.Generator().manual_seed(4), compiled=True)
        torch.testing.assert_close(compiled.derivatives, eager.derivatives, atol=1e-6, rtol=1e-5)
        for name, g in eager.gradient.items():
            torch.testing.assert_close(compiled.gradient[name], g, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("conv", [
    lambda: nn.Conv2d(2, 4, 3, padding=1, padding_mode="reflect"),  # not the fused path's zero padding
    lambda: nn.Conv2d(2, 4, 3, padding=2, dilation=2),
    lambda: nn.Conv2d(2, 4, 3, padding=1, stride=2),
], ids=["reflect", "dilated", "strided"])
def test_conv_geometry_and_padding_give_torchs_derivatives(conv):
    """Global average pooling hides a wrong output size, so a conv run with the wrong geometry or padding
    would still give numbers: they must be the derivatives of the model as torch runs it."""
    torch.manual_seed(0)
    model = nn.Sequential(conv(), nn.ReLU(), GlobalAveragePool(), nn.Linear(4, 3)).double()
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(3, 2, 6, 6, generator=generator, dtype=torch.float64), torch.tensor([0, 2, 1])
    params = trainable_parameters(model)
    directions = make_sampler("gaussian").sample(params, 2, generator)
    estimate = model_gradient_estimate(model, F.cross_entropy, x, y, Fixed(directions), 2)
    loss_of = loss_function(model, F.cross_entropy, x, y)
    gradient = torch.func.grad(loss_of)(params)
    expected = torch.stack([sum((gradient[k] * directions[k][i]).sum() for k in params) for i in range(2)])
    torch.testing.assert_close(estimate.derivatives, expected, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(estimate.loss, loss_of(params), atol=1e-14, rtol=1e-12)


def test_relu_at_exactly_zero_passes_no_tangent_as_in_torch():
    """Zero inputs and a zero bias put pre-activations at exactly 0, where the bias tangent arrives."""
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    with torch.no_grad():
        mlp[0].bias.zero_()
    x = torch.cat([torch.zeros(3, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)])
    y = torch.tensor([0, 1, 2, 0, 1])
    params = trainable_parameters(mlp)
    directions = make_sampler("gaussian").sample(params, 3, torch.Generator().manual_seed(0))
    plan = plan_for(mlp, F.cross_entropy, x, y)
    assert plan is not None
    _, fused = plan.derivatives(x, y, directions)
    _, reference = directional_derivatives(loss_function(mlp, F.cross_entropy, x, y), params, directions)
    torch.testing.assert_close(fused, reference, atol=1e-12, rtol=1e-10)


def test_a_dtype_mismatch_leaves_the_fused_path_and_names_the_layer():
    model = nn.Sequential(nn.Linear(4, 3))  # float32 parameters, float64 inputs
    x, y = torch.randn(5, 4, dtype=torch.float64), torch.zeros(5, dtype=torch.long)
    assert plan_for(model, F.cross_entropy, x, y) is None
    with pytest.raises(SipgradError, match=r"cannot run through layer '0' \(Linear\)"):
        model_gradient_estimate(model, F.cross_entropy, x, y, directions=2)
