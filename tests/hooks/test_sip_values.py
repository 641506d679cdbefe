"""SIP's hooks and data-free policies checked against values computed by hand, at a layer whose
input and output have the same shape (so a hook on the wrong tensor would still run), and with
scores whose sign decides the choice. Each test was checked to fail on a mutant the older
tests let through (benchmarks/saliency_mutations.py)."""

import pytest
import torch

from sipgrad import SIP
from sipgrad.hooks import filter_gradient
from sipgrad.hooks.policies import AbsoluteContributionPolicy, ActivationPolicy, ContributionPolicy
from tests.conftest import make_small_cnn


def test_filter_acts_on_the_gradient_at_the_output_of_a_shape_preserving_conv(small_batch):
    """conv2 maps 16 x 16 x 16 to 16 x 16 x 16: the filtered gradient must be the one at its output."""
    model = make_small_cnn(inplace=False)
    targets = torch.tensor([1, 2, 3, 4])
    x = small_batch.clone().requires_grad_()
    seen = {}
    handle = model.conv2.register_forward_hook(lambda m, i, o: seen.update(out=o, inp=i[0]) or None)
    logit = model(x).gather(1, targets[:, None]).sum()
    handle.remove()
    assert seen["inp"].shape == seen["out"].shape
    activation = seen["out"]
    grad, = torch.autograd.grad(logit, activation, retain_graph=True)
    scores = (activation * grad).mean(dim=(2, 3))
    keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, scores.topk(4, 1).indices, True)  # 0.25 * 16
    # Only conv2's own contribution is filtered: the residual branch (x + conv2(x)) passes unchanged.
    expected, = torch.autograd.grad(logit, x, retain_graph=True)
    correction, = torch.autograd.grad(activation, x, grad_outputs=filter_gradient(grad, keep) - grad,
                                      retain_graph=True)
    expected = expected + correction
    with SIP(model, "topq:0.25", layers=("conv2",)) as sip:
        ours, = torch.autograd.grad(model(x).gather(1, targets[:, None]).sum(), x)
        assert torch.equal(sip.hook.last_keep["conv2"], keep)
    assert torch.allclose(ours, expected, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(ours, torch.autograd.grad(logit, x)[0], atol=1e-4)


def _one_by_one(values):
    return torch.tensor(values, dtype=torch.float32)[None, :, None, None]


def test_absq_ranks_by_magnitude_and_topq_by_signed_contribution():
    activation = torch.ones(1, 4, 1, 1)
    grad = _one_by_one([-5.0, 1.0, 2.0, -0.5])
    absq = AbsoluteContributionPolicy(0.5).keep_mask("x", activation, grad, None)
    topq = ContributionPolicy(0.5).keep_mask("x", activation, grad, None)
    assert absq[0].tolist() == [True, False, True, False]
    assert topq[0].tolist() == [False, True, True, False]


def test_act_ranks_channels_by_the_mean_of_relu_activation():
    # channel 0: (+2, -10) -> ReLU mean 1 (raw mean -4); channel 1: 0.5 everywhere; 2 and 3 lower
    activation = torch.tensor([[[[2.0, -10.0]], [[0.5, 0.5]], [[0.1, 0.1]], [[-1.0, -1.0]]]])
    keep = ActivationPolicy(0.25).keep_mask("x", activation, torch.zeros_like(activation), None)
    assert keep[0].tolist() == [True, False, False, False]


@pytest.mark.parametrize("threads", [1, 2])
def test_filtered_gradients_do_not_depend_on_the_thread_count(small_batch, threads):
    model = make_small_cnn(inplace=False)
    targets = torch.tensor([1, 2, 3, 4])

    def gradients():
        x = small_batch.clone().requires_grad_()
        with SIP(model, "topq:0.25", layers=("conv1", "conv2", "conv3")):
            return torch.autograd.grad(model(x).gather(1, targets[:, None]).sum(), x)[0]

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        reference = gradients()
        torch.set_num_threads(threads)
        again = gradients()
    finally:
        torch.set_num_threads(before)
    assert torch.allclose(again, reference, rtol=1e-5, atol=1e-7 * float(reference.abs().max()))
