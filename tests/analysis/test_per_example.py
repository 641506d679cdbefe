"""Per-example gradients: equal to a Python loop, independent of the batch, chunks and threads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sipgrad.analysis.models import small_model
from sipgrad.analysis.per_example import LayerLayout, layer_gradients, model_parameters, per_example_gradients
from sipgrad.errors import SipgradError


def loop_gradients(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """The reference: one backward pass per example."""
    rows = []
    for x, y in zip(inputs, labels):
        model.zero_grad()
        F.cross_entropy(model(x[None]), y[None]).backward()
        rows.append({name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad})
    return {name: torch.stack([row[name] for row in rows]) for name in rows[0]}


def batch_of(shape, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, *shape, generator=generator), torch.randint(0, 10, (count,), generator=generator)


@settings(max_examples=8, deadline=None)
@given(name=st.sampled_from(["mlp", "cnn"]), count=st.integers(1, 9), chunk=st.one_of(st.none(), st.integers(1, 4)),
       seed=st.integers(0, 1000))
def test_equal_to_a_python_loop(name, count, chunk, seed):
    model = small_model(name, (1, 8, 8), seed=seed)
    inputs, labels = batch_of((1, 8, 8), count, seed)
    gradients, losses = per_example_gradients(model, inputs, labels, chunk_size=chunk)
    expected = loop_gradients(model, inputs, labels)
    assert set(gradients) == set(expected)
    for key in expected:
        torch.testing.assert_close(gradients[key], expected[key], rtol=1e-5, atol=1e-6)
    expected_losses = F.cross_entropy(model(inputs), labels, reduction="none")
    torch.testing.assert_close(losses, expected_losses, rtol=1e-5, atol=1e-6)


def test_mean_is_the_batch_gradient_and_rows_do_not_depend_on_the_batch():
    model = small_model("cnn", (1, 8, 8), seed=3)
    inputs, labels = batch_of((1, 8, 8), 12, seed=4)
    gradients, _ = per_example_gradients(model, inputs, labels)
    model.zero_grad()
    F.cross_entropy(model(inputs), labels).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(gradients[name].mean(dim=0), p.grad, rtol=1e-5, atol=1e-7)
    # Example 5's gradient is the same alone, in a batch of 12, and in a shuffled batch.
    alone, _ = per_example_gradients(model, inputs[5:6], labels[5:6])
    order = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    shuffled, _ = per_example_gradients(model, inputs[order], labels[order])
    position = int((order == 5).nonzero())
    for name in gradients:
        torch.testing.assert_close(alone[name][0], gradients[name][5], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(shuffled[name][position], gradients[name][5], rtol=1e-5, atol=1e-7)


def test_thread_count_does_not_change_the_gradients():
    model = small_model("mlp", (1, 8, 8), seed=1)
    inputs, labels = batch_of((1, 8, 8), 32, seed=2)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, _ = per_example_gradients(model, inputs, labels)
        torch.set_num_threads(2)
        two, _ = per_example_gradients(model, inputs, labels)
    finally:
        torch.set_num_threads(threads)
    for name in one:
        torch.testing.assert_close(one[name], two[name], rtol=1e-5, atol=1e-7)


def test_explicit_params_are_used():
    model = small_model("mlp", (1, 8, 8), seed=0)
    inputs, labels = batch_of((1, 8, 8), 4, seed=0)
    params = {name: torch.zeros_like(p) for name, p in model_parameters(model).items()}
    gradients, losses = per_example_gradients(model, inputs, labels, params)
    # All-zero weights: uniform softmax, loss log(10), and no gradient reaches the first layer.
    torch.testing.assert_close(losses, torch.full((4,), torch.log(torch.tensor(10.0)).item()))
    assert gradients["1.weight"].abs().max() == 0
    assert gradients["3.bias"].abs().max() > 0


def test_layer_layout_round_trip_and_layer_matrices():
    model = small_model("cnn", (1, 8, 8), seed=0)
    params = model_parameters(model)
    layout = LayerLayout.of(params)
    assert list(layout.layers) == ["0", "3", "7"]
    assert layout.size("0") == 16 * 9 + 16
    back = layout.unflatten(layout.flatten(params))
    for name, p in params.items():
        assert torch.equal(back[name], p)
    inputs, labels = batch_of((1, 8, 8), 5, seed=1)
    rows = layer_gradients(model, inputs, labels)
    gradients, _ = per_example_gradients(model, inputs, labels)
    assert rows["0"].shape == (5, layout.size("0"))
    torch.testing.assert_close(rows["0"][:, :144], gradients["0.weight"].reshape(5, -1))
    torch.testing.assert_close(rows["0"][:, 144:], gradients["0.bias"])


def test_batch_norm_in_training_mode_is_refused_and_eval_mode_works():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 36, 10))
    inputs, labels = batch_of((1, 8, 8), 3, seed=0)
    with pytest.raises(SipgradError, match="batch norm in training mode"):
        per_example_gradients(model.train(), inputs, labels)
    gradients, _ = per_example_gradients(model.eval(), inputs, labels)
    expected = loop_gradients(model, inputs, labels)
    torch.testing.assert_close(gradients["1.weight"], expected["1.weight"], rtol=1e-5, atol=1e-6)


def test_bad_inputs_are_one_line_errors():
    model = small_model("mlp", (1, 8, 8))
    inputs, labels = batch_of((1, 8, 8), 3, seed=0)
    with pytest.raises(SipgradError, match="3 inputs but 2 labels"):
        per_example_gradients(model, inputs, labels[:2])
    with pytest.raises(SipgradError, match="chunk_size"):
        per_example_gradients(model, inputs, labels, chunk_size=0)
    with pytest.raises(SipgradError, match="unknown model"):
        small_model("resnet", (1, 8, 8))


def test_a_layer_is_the_module_that_owns_the_parameter_also_when_nested():
    # "blocks.0.conv.weight" belongs to layer "blocks.0.conv": cutting at the first dot would pool whole blocks.
    params = {"blocks.0.conv.weight": torch.zeros(2, 3), "blocks.0.conv.bias": torch.zeros(2),
              "blocks.1.conv.weight": torch.zeros(4, 2), "head.weight": torch.zeros(1, 4), "scale": torch.zeros(())}
    layout = LayerLayout.of(params)
    assert layout.layers == {"blocks.0.conv": ("blocks.0.conv.weight", "blocks.0.conv.bias"),
                             "blocks.1.conv": ("blocks.1.conv.weight",), "head": ("head.weight",), "": ("scale",)}
    assert layout.size("blocks.0.conv") == 8 and layout.size("") == 1
    model = nn.Sequential(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 3)), nn.Linear(3, 2))
    inputs, labels = torch.randn(5, 4, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 1, 0, 1])
    rows = layer_gradients(model, inputs, labels)
    assert list(rows) == ["0.0", "0.2", "1"]
    expected = loop_gradients(model, inputs, labels)
    torch.testing.assert_close(rows["0.2"], torch.cat([expected["0.2.weight"].reshape(5, -1), expected["0.2.bias"]], 1))


def test_the_root_modules_own_parameters_are_one_layer():
    """A bare nn.Linear owns weight and bias itself: one layer "", not a layer per parameter."""
    model = nn.Linear(4, 3)
    inputs, labels = torch.randn(5, 4, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 0, 1])
    rows = layer_gradients(model, inputs, labels)
    assert list(rows) == [""]
    expected = loop_gradients(model, inputs, labels)
    torch.testing.assert_close(rows[""], torch.cat([expected["weight"].reshape(5, -1), expected["bias"]], 1))


def test_frozen_parameters_are_left_out():
    # A parameter with requires_grad=False is not part of the training state: no gradient, never stepped.
    model = small_model("mlp", (1, 8, 8), seed=0)
    model[1].weight.requires_grad_(False)
    params = model_parameters(model)
    assert "1.weight" not in params and set(params) == {"1.bias", "3.weight", "3.bias"}
    inputs, labels = batch_of((1, 8, 8), 3, seed=0)
    gradients, _ = per_example_gradients(model, inputs, labels)
    assert set(gradients) == {"1.bias", "3.weight", "3.bias"}
    expected = loop_gradients(model, inputs, labels)
    torch.testing.assert_close(gradients["1.bias"], expected["1.bias"], rtol=1e-5, atol=1e-6)
