"""BatchNorm folding for the perturbation passes: same outputs, user's model untouched."""

from __future__ import annotations

import copy

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sipgrad.models.inference import fold_batchnorm
from tests.conftest import make_small_cnn


class RegisteredButNotApplied(nn.Module):
    """A conv and a BatchNorm registered side by side, but the BatchNorm runs on the input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.5, 2)

    def forward(self, x):
        return self.conv(self.bn(x)).mean(dim=(2, 3))


def test_folded_copy_gives_the_same_logits_and_leaves_the_model_alone():
    model = make_small_cnn()  # stem conv then a BatchNorm with non-trivial statistics
    before = copy.deepcopy(model.state_dict())
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    folded = fold_batchnorm(model, x[:2])
    assert folded is not model and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)
    assert isinstance(model.bn, nn.BatchNorm2d)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_train_mode_model_is_folded_with_its_running_statistics():
    model = make_small_cnn().train()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    folded = fold_batchnorm(model, x)
    assert model.training and not folded.training
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model.eval()(x), atol=1e-5, rtol=1e-5)


def test_a_batchnorm_that_does_not_follow_the_conv_is_not_folded():
    model = RegisteredButNotApplied().eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    result = fold_batchnorm(model, x)
    assert isinstance(result.bn, nn.BatchNorm2d)  # the check caught it: an unfolded copy
    with torch.no_grad():
        assert torch.equal(result(x), model(x))


def test_nothing_to_fold_returns_the_model_itself():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    assert fold_batchnorm(model, torch.randn(1, 3, 8, 8)) is model


@settings(max_examples=25, deadline=None)
@given(groups=st.sampled_from([1, 2, 4]), bias=st.booleans(), affine=st.booleans(), kernel=st.sampled_from([1, 3]),
       seed=st.integers(0, 2**16))
def test_folding_is_exact_for_any_conv_and_batchnorm(groups, bias, affine, kernel, seed):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(4, 8, kernel, padding=kernel // 2, groups=groups, bias=bias),
                          nn.BatchNorm2d(8, affine=affine), nn.ReLU())
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.2, 3)
        if affine:
            model[1].weight.uniform_(-2, 2)
            model[1].bias.uniform_(-1, 1)
    model.eval()
    x = torch.randn(2, 4, 6, 6)
    folded = fold_batchnorm(model, x)
    assert isinstance(folded[1], nn.Identity)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-4)


def test_a_large_eps_is_folded_in_and_the_copy_is_still_folded():
    """eps comparable to the running variance: scale = gamma / sqrt(var + eps) must include it (else the folded copy
    disagrees and the unfolded one is used, or worse)."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4, eps=0.05), nn.ReLU()).eval()
    with torch.no_grad():
        model[1].running_var.uniform_(0.01, 0.05)
        model[1].running_mean.uniform_(-0.5, 0.5)
    x = torch.randn(2, 3, 8, 8)
    folded = fold_batchnorm(model, x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)


def test_evaluation_mode_restores_each_submodules_own_flag():
    from sipgrad.models.inference import evaluation_mode

    model = make_small_cnn().train()
    model.bn.eval()  # a frozen BatchNorm in a model being trained
    with evaluation_mode(model):
        assert not any(m.training for m in model.modules())
    assert model.training and model.conv1.training and not model.bn.training


def test_batchnorm_without_running_stats_is_left_alone():
    from torch import nn

    from sipgrad.models.inference import fold_batchnorm
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False), nn.ReLU()).eval()
    x = torch.randn(2, 3, 8, 8)
    assert fold_batchnorm(model, x) is model
