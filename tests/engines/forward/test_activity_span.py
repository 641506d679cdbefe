"""The activity sampler's span claim: every captured weight's true gradient lies in the captured span.

``ActivitySampler`` is unbiased only if each weight gradient's rows lie in the span of the
rows ``capture_layer_inputs`` returns for it. These tests compute the true gradient by
backprop (float64) and measure the share of it outside that span, for the cases a
module-level capture got wrong: non-zero padding modes, ``padding="same"``, grouped and
strided / dilated convs, a module called twice, weights tied between modules, a conv
subclass padding in its own forward, dropout. A weight that meets other operations must be
left out (it then gets Gaussian directions).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sipgrad.engines.forward.binary import BinaryLinear
from sipgrad.engines.forward.estimators import (
    capture_layer_inputs,
    model_gradient_estimate,
)
from sipgrad.engines.forward.samplers import make_sampler, span_basis
from sipgrad.models.efficientnet_lite import Conv2dSame


class _Twice(nn.Module):
    """One Linear applied twice in a pass (weight sharing)."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Linear(6, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.shared(torch.tanh(self.shared(x)))))


class _Keyword(nn.Module):
    """A Linear called with its input as a keyword (a forward hook sees no positional argument)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(6, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.layer(input=x)))


class _Tied(nn.Module):
    """Two Linear modules holding one weight tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(6, 6)
        self.second = nn.Linear(6, 6)
        self.second.weight = self.first.weight
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.second(torch.tanh(self.first(x)))))


def _conv_net(conv: nn.Conv2d, size: int) -> tuple[nn.Module, tuple[int, ...]]:
    """``conv`` then a linear head, with the input shape of two ``size`` x ``size`` images."""
    shape = (2, conv.in_channels, size, size)
    with torch.no_grad():
        features = conv(torch.zeros(shape)).shape[1:].numel()
    return nn.Sequential(conv, nn.Tanh(), nn.Flatten(), nn.Linear(features, 3)), shape


# Each case: (model, input shape). Sizes are small enough that the captured weight's span is
# a proper subspace of its fan-in (else any gradient lies in it and the test proves nothing).
CASES = {
    "zeros": lambda: _conv_net(nn.Conv2d(4, 3, 3, padding=1), 3),
    "reflect": lambda: _conv_net(nn.Conv2d(4, 3, 3, padding=1, padding_mode="reflect"), 3),
    "circular": lambda: _conv_net(nn.Conv2d(4, 3, 3, padding=1, padding_mode="circular"), 3),
    "replicate": lambda: _conv_net(nn.Conv2d(4, 3, 3, padding=1, padding_mode="replicate"), 3),
    "reflect-stride-dilation": lambda: _conv_net(nn.Conv2d(4, 3, 3, padding=2, stride=2, dilation=2,
                                                           padding_mode="reflect"), 7),
    "same-even-kernel": lambda: _conv_net(nn.Conv2d(4, 3, 2, padding="same"), 2),
    "grouped": lambda: _conv_net(nn.Conv2d(16, 4, 3, padding=1, groups=2), 3),
    "conv2d-same-subclass": lambda: _conv_net(Conv2dSame(4, 3, 3, stride=2), 6),
    "linear-twice": lambda: (_Twice(), (2, 6)),
    "linear-keyword-input": lambda: (_Keyword(), (2, 6)),
    "tied-weights": lambda: (_Tied(), (2, 6)),
}
CAPTURED = {"linear-twice": "shared.weight", "linear-keyword-input": "layer.weight", "tied-weights": "first.weight"}


def _problem(case: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor, str]:
    """The case's float64 model, two inputs, their labels, and the weight under test."""
    torch.manual_seed(0)
    model, shape = CASES[case]()
    torch.manual_seed(3)
    return model.double(), torch.randn(shape, dtype=torch.float64), torch.tensor([0, 2]), CAPTURED.get(case, "0.weight")


def _share_outside(gradient: torch.Tensor, rows: torch.Tensor) -> float:
    """|| G - G Q Q^T || / || G || for the weight gradient's rows G and an orthonormal basis Q of ``rows``."""
    matrix = gradient.reshape(gradient.shape[0], -1)
    basis = span_basis(rows)
    return float((matrix - matrix @ basis @ basis.T).norm() / matrix.norm())


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_captured_weight_gradient_lies_in_its_captured_span(case):
    model, inputs, labels, weight = _problem(case)
    model.zero_grad()
    F.cross_entropy(model(inputs), labels).backward()
    captured = capture_layer_inputs(model, inputs)
    assert weight in captured  # the case is really tested, not skipped
    rows = captured[weight]
    assert span_basis(rows).shape[1] < rows.shape[1]  # a proper subspace: a wrong span would show
    for name, parameter in model.named_parameters():
        if name in captured:
            share = _share_outside(parameter.grad, captured[name])
            assert share < 1e-10, (case, name, share)


def test_a_weight_that_meets_other_operations_is_left_out():
    """Binarised weights and a weight also used outside linear / conv get no span (Gaussian directions)."""
    torch.manual_seed(0)
    binary = nn.Sequential(BinaryLinear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    assert set(capture_layer_inputs(binary, torch.randn(2, 6, dtype=torch.float64))) == {"2.weight"}

    class Masked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(6, 3)

        def forward(self, x):
            return self.layer(x) + F.linear(x, self.layer.weight * 0.5)

    masked = Masked().double()
    assert capture_layer_inputs(masked, torch.randn(2, 6, dtype=torch.float64)) == {}
    directions = make_sampler("activity").sample(dict(masked.named_parameters()), 4, torch.Generator().manual_seed(0),
                                                 {})
    assert torch.linalg.matrix_rank(directions["layer.weight"].reshape(-1, 6)) == 6  # not confined to 2 inputs


def _mean_error(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, name: str, true: torch.Tensor,
                directions: int, repeats: int) -> float:
    """Mean over ``repeats`` seeds of || mean of ``directions`` estimates - true || / || true ||."""
    errors = []
    for seed in range(repeats):
        generator = torch.Generator().manual_seed(seed)
        estimate = model_gradient_estimate(model, F.cross_entropy, inputs, labels, make_sampler("activity"),
                                           directions, generator=generator, fused=False)
        errors.append(float((estimate.gradient[name] - true).norm() / true.norm()))
    return sum(errors) / len(errors)


@pytest.mark.parametrize("case", ["reflect", "linear-twice"])
def test_the_mean_estimate_converges_to_the_true_gradient(case):
    """The error of a mean of N activity directions falls like 1 / sqrt(N): 16x the directions, ~4x smaller.

    A biased sampler stalls at its bias (about 0.3 of the gradient's norm for these cases
    with the old module-hook capture), so the ratio stays near 1.
    """
    model, inputs, labels, name = _problem(case)
    model.zero_grad()
    F.cross_entropy(model(inputs), labels).backward()
    true = model.get_parameter(name).grad.clone()
    few, many = (_mean_error(model, inputs, labels, name, true, n, repeats=6) for n in (250, 4000))
    assert 2.5 < few / many < 6.5, (few, many)
    assert many < 0.5, (few, many)


class _Recording(type(make_sampler("activity"))):
    """The activity sampler, keeping the layer inputs and directions of its last draw."""

    def sample(self, params, count, generator=None, layer_inputs=None):
        self.layer_inputs = dict(layer_inputs or {})
        self.directions = super().sample(params, count, generator, layer_inputs)
        return self.directions


def test_dropout_capture_sees_the_estimates_mask():
    """With dropout the capture pass and the estimate's pass share one mask (the generator state is replayed).

    Two masks would put the gradient (of the estimate's mask) outside the captured span
    (the other mask's): the derivatives would be those of another mask's loss.
    """
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Dropout(0.5), nn.Linear(8, 3)).double()
    inputs, labels = torch.randn(2, 6, dtype=torch.float64), torch.tensor([0, 2])
    torch.manual_seed(5)
    model.zero_grad()
    F.cross_entropy(model(inputs), labels).backward()
    true = {name: p.grad.clone() for name, p in model.named_parameters()}
    for directions in (1, 40):  # one direction: plain dual numbers; several: vmap in chunks of 16
        sampler = _Recording()
        torch.manual_seed(5)  # the backprop pass's mask
        estimate = model_gradient_estimate(model, F.cross_entropy, inputs, labels, sampler, directions,
                                           generator=torch.Generator().manual_seed(0), fused=False, chunk_size=16)
        assert _share_outside(true["3.weight"], sampler.layer_inputs["3.weight"]) < 1e-10
        expected = torch.stack([sum((true[name] * v[k]).sum() for name, v in sampler.directions.items())
                                for k in range(directions)])
        torch.testing.assert_close(estimate.derivatives, expected, rtol=1e-10, atol=1e-12)
    before = torch.get_rng_state()
    model_gradient_estimate(model, F.cross_entropy, inputs, labels, make_sampler("activity"), 3, fused=False)
    assert not torch.equal(torch.get_rng_state(), before)  # the global stream still moves on


class _ReadsItsShape(nn.Linear):
    """A Linear that reads its weight's shape, dtype and device in forward: metadata, not a use of the weight."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert self.weight.ndim == 2 and self.weight.shape[1] == x.shape[-1]
        assert self.weight.dtype == x.dtype and self.weight.device == x.device
        return F.linear(x, self.weight, self.bias)


def test_reading_a_weights_shape_dtype_or_device_is_not_a_use():
    model = nn.Sequential(_ReadsItsShape(4, 3))
    inputs = torch.randn(5, 4)
    captured = capture_layer_inputs(model, inputs)
    assert list(captured) == ["0.weight"] and torch.equal(captured["0.weight"], inputs)
    # a property that gives the weight's values (w.T) is a use: that weight is left out
    transposed = nn.Linear(4, 3)
    transposed.forward = lambda x: x @ transposed.weight.T + transposed.bias
    assert capture_layer_inputs(nn.Sequential(transposed), inputs) == {}


@pytest.mark.parametrize("groups", [1, 2, 6])
def test_grouped_conv_rows_are_each_groups_patches_in_group_order(groups):
    conv = nn.Conv2d(6, 6, 3, padding=1, groups=groups)
    inputs = torch.randn(2, 6, 5, 5)
    rows = capture_layer_inputs(nn.Sequential(conv), inputs)["0.weight"]
    expected = torch.cat([F.unfold(part, 3, padding=1).transpose(1, 2).reshape(-1, 9 * 6 // groups)
                          for part in inputs.chunk(groups, dim=1)])
    assert torch.equal(rows, expected)


def test_the_fused_path_gives_the_activity_sampler_its_layer_inputs():
    """The MLP takes the fused path; its activity directions must still lie in the batch's input span,
    and equal the general path's (same generator)."""
    from sipgrad.engines.forward.fused import plan_for
    from sipgrad.engines.forward.models import build_model

    model = build_model("mlp", (1, 8, 8), 10, seed=0).double()
    inputs = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    labels = torch.tensor([0, 3, 5, 9])
    assert plan_for(model, F.cross_entropy, inputs, labels) is not None
    sampler = _Recording()
    fused = model_gradient_estimate(model, F.cross_entropy, inputs, labels, sampler, 3,
                                    generator=torch.Generator().manual_seed(1))
    assert set(sampler.layer_inputs) == {"1.weight", "3.weight"}
    first = sampler.directions["1.weight"]  # 3 x 128 x 64, rows combinations of the 4 flattened images
    flat = inputs.flatten(1)
    torch.testing.assert_close(first @ (flat.T @ torch.linalg.pinv(flat.T)), first, atol=1e-10, rtol=0)
    general = model_gradient_estimate(model, F.cross_entropy, inputs, labels, make_sampler("activity"), 3,
                                      generator=torch.Generator().manual_seed(1), fused=False)
    for name, g in general.gradient.items():
        torch.testing.assert_close(fused.gradient[name], g, atol=1e-12, rtol=1e-10)


def test_the_draws_do_not_depend_on_which_basis_of_the_span_eigh_returns(monkeypatch):
    # eigh's eigenvector signs (and any rotation inside the span) changed with the thread count, and with
    # them a seed's activity directions: the draws must depend on the span alone.
    from sipgrad.engines.forward import samplers

    params = {"w": torch.zeros(5, 6), "b": torch.zeros(5)}
    rows = torch.randn(3, 6, generator=torch.Generator().manual_seed(1))  # a 3-dimensional span in 6
    reference = make_sampler("activity").sample(params, 4, torch.Generator().manual_seed(0), {"w": rows})
    basis = span_basis(rows)
    rotation, _ = torch.linalg.qr(torch.randn(basis.shape[1], basis.shape[1], generator=torch.Generator().manual_seed(2)))
    for other in (basis * torch.tensor([-1.0, 1.0, -1.0]), basis @ rotation):
        monkeypatch.setattr(samplers, "span_basis", lambda rows, other=other: other)
        drawn = make_sampler("activity").sample(params, 4, torch.Generator().manual_seed(0), {"w": rows})
        assert torch.allclose(drawn["w"], reference["w"], atol=1e-6) and torch.equal(drawn["b"], reference["b"])
