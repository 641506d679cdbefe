import numpy as np
import pytest
import torch

from sipgrad import SipgradError, load_model
from sipgrad.evaluation import builtin_cases
from sipgrad.evaluation.cluttered import CANVAS, make_samples
from sipgrad.models import imagenet_classes


def test_cluttered_digits_are_deterministic_with_exact_boxes():
    first, again = make_samples("test", 20), make_samples("test", 20)
    assert all(np.array_equal(a.image, b.image) and a.box == b.box for a, b in zip(first, again))
    assert not np.array_equal(make_samples("train", 1)[0].image, first[0].image)
    for sample in first:
        x0, y0, x1, y1 = map(int, sample.box)
        assert sample.image.shape == (CANVAS, CANVAS, 3) and 0 <= x0 < x1 <= CANVAS and 0 <= y0 < y1 <= CANVAS
        inside = sample.image[y0:y1, x0:x1, 0].astype(float).sum()
        assert inside > 0.25 * sample.image[..., 0].astype(float).sum()  # the digit carries much of the ink
    labels = [s.label for s in make_samples("test", 297)]
    assert sorted(set(labels)) == list(range(10))


def test_digit_models_and_their_benchmark():
    with pytest.raises(SipgradError, match="train it with benchmarks/train_cluttered_digits.py"):
        load_model("digits_resnet")
    for name in ("digits_resnet", "digits_vgg"):
        classifier = load_model(name, pretrained=False)
        assert classifier.module(torch.zeros(2, 3, 64, 64)).shape == (2, 10)
        assert len(classifier.sip_layers) >= 3 and classifier.classes.index("7") == 7
    cases = builtin_cases("cluttered-digits", load_model("digits_vgg", pretrained=False).classes)
    assert len(cases) == 297 and cases[0].load().size == (64, 64)
    with pytest.raises(SipgradError, match="10-class digits model"):
        builtin_cases("cluttered-digits", imagenet_classes())


def test_cluttered_test_split_starts_at_digit_1500():
    from sipgrad.evaluation.cluttered import make_samples
    assert [s.label for s in make_samples("test", 3)] == [1, 7, 4]  # sklearn digits.target[1500:1503]


def test_cluttered_digits_are_in_0_1():
    from sipgrad.evaluation.cluttered import _digits, make_samples
    images, _ = _digits()
    assert images.min() == 0.0 and images.max() == 1.0
    # the digit's own pixels: no uint8 wrap-around, the brightest stroke pixel stays 255
    s = make_samples("test", 1, fragments=0)[0]
    x0, y0, x1, y1 = map(int, s.box)
    assert s.image[y0:y1, x0:x1].max() == 255 and s.image.sum() == s.image[y0:y1, x0:x1].sum()
