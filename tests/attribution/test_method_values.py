"""Attribution values the parity tests do not pin: IG's seeded noise baseline, the 2-D map as
mean/max of |attribution|, the clean prediction explained by the noisy methods, and maps that do
not depend on the thread count. Each test was checked to fail on a mutant the older tests let
through (benchmarks/saliency_mutations.py)."""

import pytest
import torch
from captum.attr import IntegratedGradients
from torch import nn

from sipgrad import Classifier, Preprocessing, explain
from sipgrad.attribution.methods import image_generator
from sipgrad.models import ClassNames

TARGETS = torch.tensor([3, 7, 0, 9])
LAYERS = ("conv1", "conv2", "conv3")


@pytest.fixture
def classifier(small_cnn):
    return Classifier.wrap(small_cnn, Preprocessing(input_size=32), ClassNames.generic(10), name="small",
                           sip_layers=LAYERS)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def test_ig_noise_baseline_is_black_plus_the_pixel_range_times_seeded_uniform_noise(classifier, small_cnn,
                                                                                    small_batch):
    ours = explain(classifier, small_batch, target=TARGETS, method="ig", ig_baseline="noise", ig_steps=8,
                   seed=3, internal_batch_size=64).attribution
    pre = classifier.preprocessing
    pixel_range = float(sum(1 / s for s in pre.std) / 3)
    black = pre.normalize(torch.zeros(3, 1, 1))
    baseline = torch.stack([black + pixel_range * torch.rand(small_batch.shape[1:], generator=image_generator(3, i))
                            for i in range(len(small_batch))])
    expected = IntegratedGradients(small_cnn).attribute(small_batch, baselines=baseline, target=TARGETS, n_steps=8)
    assert torch.allclose(ours, expected, atol=1e-5)


def test_maps_are_the_mean_or_max_of_the_absolute_attribution(classifier, small_batch):
    # Input x Gradient is signed and its colour channels differ in sign, so |.| matters.
    result = explain(classifier, small_batch, target=TARGETS, method="inputgrad")
    attribution = result.attribution
    assert (attribution < 0).any() and (attribution > 0).any()
    assert torch.allclose(result.input_saliency, attribution.abs().mean(dim=1), atol=1e-7)
    top = explain(classifier, small_batch, target=TARGETS, method="inputgrad", reduce="max").input_saliency
    assert torch.allclose(top, attribution.abs().amax(dim=1), atol=1e-7)


class _MeanColour(nn.Module):
    """Logit k = 10 x the image's mean of channel k: its prediction moves with the input, unlike a
    random CNN's (which predicts one class for nearly everything, hiding which class is explained)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1, bias=False)
        self.fc = nn.Linear(3, 3, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3)[:, :, None, None])
            self.fc.weight.copy_(10 * torch.eye(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean(dim=(2, 3)))


@pytest.mark.parametrize("method", ["smoothgrad", "ig"])
def test_noisy_methods_explain_the_prediction_on_the_clean_input(method):
    """target=None means the clean image's predicted class for every noisy copy and IG step, not each
    perturbed input's own argmax. Here the black baseline predicts class 2 and channels 0 and 1 are
    close, so IG's first steps and some noisy copies predict another class than the clean image."""
    model = _MeanColour()
    classifier = Classifier.wrap(model, Preprocessing(input_size=32), ClassNames.generic(3), name="mean-colour")
    offsets = torch.tensor([[0.03, 0.0, -1.0], [0.0, 0.03, -1.0], [-1.0, 0.03, 0.0], [0.03, -1.0, 0.0]])
    x = 0.3 * torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) + offsets[:, :, None, None]
    predicted = model(x).argmax(dim=1)
    assert predicted.tolist() == [0, 1, 1, 0]
    assert model(classifier.preprocessing.normalize(torch.zeros(1, 3, 1, 1))).argmax().item() == 2
    options = {"ig_steps": 8, "smoothgrad_samples": 8, "smoothgrad_noise": 0.5}
    implicit = explain(classifier, x, method=method, **options)
    explicit = explain(classifier, x, target=predicted, method=method, **options)
    assert torch.equal(implicit.targets, predicted)
    assert torch.allclose(implicit.attribution, explicit.attribution, atol=1e-7)


@pytest.mark.parametrize("method", ["grad", "inputgrad", "smoothgrad", "ig", "gradcam"])
def test_maps_do_not_depend_on_the_thread_count(classifier, small_batch, method):
    options = {"ig_steps": 4, "smoothgrad_samples": 3}
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = explain(classifier, small_batch, target=TARGETS, method=method, sip="topq:0.25", **options)
        torch.set_num_threads(2)
        two = explain(classifier, small_batch, target=TARGETS, method=method, sip="topq:0.25", **options)
    finally:
        torch.set_num_threads(before)
    assert _relative(two.input_saliency, one.input_saliency) <= 1e-5
