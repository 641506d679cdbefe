"""sipgrad's methods give the same numbers as calling captum directly."""

import pytest
import torch
from captum.attr import (InputXGradient, IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel,
                         Saliency)

from sipgrad import Classifier, Preprocessing, explain
from sipgrad.models import ClassNames

TARGETS = torch.tensor([3, 7, 0, 9])


@pytest.fixture
def classifier(small_cnn):
    return Classifier.wrap(small_cnn, Preprocessing(input_size=32), ClassNames.generic(10), name="small")


def _ours(classifier, inputs, method, **options):
    return explain(classifier, inputs, target=TARGETS, method=method, **options).attribution


def test_grad_and_inputgrad_match_captum(classifier, small_cnn, small_batch):
    expected = Saliency(small_cnn).attribute(small_batch, target=TARGETS, abs=True)
    assert torch.allclose(_ours(classifier, small_batch, "grad"), expected, atol=1e-6)
    expected = InputXGradient(small_cnn).attribute(small_batch.clone().requires_grad_(), target=TARGETS)
    assert torch.allclose(_ours(classifier, small_batch, "inputgrad"), expected, atol=1e-6)


def test_smoothgrad_matches_captum_with_the_same_seed(classifier, small_cnn, small_batch):
    ours = _ours(classifier, small_batch, "smoothgrad", smoothgrad_samples=6, smoothgrad_noise=0.2, seed=5,
                 internal_batch_size=8)
    torch.manual_seed(5)
    pixel_range = float(sum(1 / s for s in classifier.preprocessing.std) / 3)
    expected = NoiseTunnel(Saliency(small_cnn)).attribute(
        small_batch, nt_type="smoothgrad", nt_samples=6, nt_samples_batch_size=2, stdevs=0.2 * pixel_range,
        target=TARGETS, abs=False)
    assert torch.allclose(ours, expected, atol=1e-6)


def test_ig_matches_captum_for_each_baseline(classifier, small_cnn, small_batch):
    black = classifier.preprocessing.normalize(torch.zeros(3, 1, 1)).expand_as(small_batch)
    for name, baseline in (("black", black), ("zero", torch.zeros_like(small_batch))):
        ours = _ours(classifier, small_batch, "ig", ig_steps=12, ig_baseline=name, internal_batch_size=7)
        expected = IntegratedGradients(small_cnn).attribute(small_batch, baselines=baseline, target=TARGETS,
                                                            n_steps=12)
        assert torch.allclose(ours, expected, atol=1e-5), name


def test_gradcam_matches_captum(classifier, small_cnn, small_batch):
    ours = _ours(classifier, small_batch, "gradcam")
    cam = LayerGradCam(small_cnn, small_cnn.conv3).attribute(small_batch, target=TARGETS, relu_attributions=True)
    expected = LayerAttribution.interpolate(cam, (32, 32), interpolate_mode="bilinear")
    assert classifier.gradcam_layer == "conv3"  # the last conv by default
    assert torch.allclose(ours, expected, atol=1e-6)
