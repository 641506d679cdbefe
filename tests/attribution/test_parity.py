"""sipgrad's methods give the same numbers as calling captum directly."""

import pytest
import torch
from captum.attr import InputXGradient, IntegratedGradients, LayerAttribution, LayerGradCam, Saliency

from sipgrad import Classifier, Preprocessing, explain
from sipgrad.attribution.methods import image_generator
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


def test_smoothgrad_is_the_mean_captum_gradient_over_per_image_seeded_noise(classifier, small_cnn, small_batch):
    """SmoothGrad = mean of captum's Saliency over noisy copies; image i's noise comes from (seed, i)."""
    ours = _ours(classifier, small_batch, "smoothgrad", smoothgrad_samples=6, smoothgrad_noise=0.2, seed=5,
                 internal_batch_size=8)
    pixel_range = float(sum(1 / s for s in classifier.preprocessing.std) / 3)
    expected = []
    for i, image in enumerate(small_batch):
        noise = torch.randn((6, *image.shape), generator=image_generator(5, i))
        noisy = (image[None] + 0.2 * pixel_range * noise).requires_grad_(True)
        grads = Saliency(small_cnn).attribute(noisy, target=int(TARGETS[i]), abs=False)
        expected.append(grads.mean(dim=0))
    assert torch.allclose(ours, torch.stack(expected), atol=1e-6)
    # a different seed draws different noise
    other = _ours(classifier, small_batch, "smoothgrad", smoothgrad_samples=6, smoothgrad_noise=0.2, seed=6)
    assert not torch.allclose(ours, other, atol=1e-4)


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
    assert classifier.gradcam_layer == "conv3"  # its ReLU is shared (runs 3 times), so the block ends at conv3
    assert torch.allclose(ours, expected, atol=1e-6)
