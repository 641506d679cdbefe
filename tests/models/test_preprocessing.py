"""The image transform: ImageNet mean and std in RGB order, pixels / 255, bilinear resizing, channels first."""

import numpy as np
import pytest
import torch
from PIL import Image

from sipgrad.models.preprocessing import Preprocessing

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # torchvision's ImageNet constants, R G B


def test_a_pure_red_image_normalises_to_the_imagenet_constants_by_hand():
    inputs, _ = Preprocessing(input_size=8).prepare(Image.new("RGB", (13, 5), (255, 0, 51)))
    assert inputs.shape == (3, 8, 8) and inputs.dtype == torch.float32
    expected = [(1.0 - 0.485) / 0.229, (0.0 - 0.456) / 0.224, (0.2 - 0.406) / 0.225]
    for channel, value in enumerate(expected):
        assert inputs[channel].numpy() == pytest.approx(np.full((8, 8), value), abs=1e-6)


def test_whole_image_resize_matches_torchvision_with_the_literal_constants():
    """No crop: the image is resized to input_size squared (bilinear, as torchvision's Resize on a PIL image)."""
    from torchvision import transforms

    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:90, 0:150]
    pixels = np.stack([x * 1.7, y * 2.8, (x + y) % 256], axis=-1) + rng.integers(0, 20, (90, 150, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))  # not symmetric: a transpose would show
    ours, geometry = Preprocessing(input_size=64).prepare(image, crop=False)
    theirs = transforms.Compose([transforms.Resize((64, 64), interpolation=transforms.InterpolationMode.BILINEAR),
                                 transforms.ToTensor(), transforms.Normalize(MEAN, STD)])(image)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    assert geometry.region == (0.0, 0.0, 150.0, 90.0) and geometry.input_size == (64, 64)


def test_denormalize_inverts_normalize_and_gives_pixels():
    pre = Preprocessing()
    pixels = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(pre.denormalize(pre.normalize(pixels)), pixels, atol=1e-6, rtol=0)
    zero = pre.denormalize(torch.zeros(3, 1, 1))  # a normalised 0 is the mean pixel
    assert zero.flatten().tolist() == pytest.approx(list(MEAN))
    one = pre.normalize(torch.ones(3, 1, 1)).flatten().tolist()
    assert one == pytest.approx([(1 - m) / s for m, s in zip(MEAN, STD)])


def test_centre_crop_rounds_like_torchvision():
    from sipgrad.models.preprocessing import Preprocessing
    assert Preprocessing()._crop_layout(259, 256) == ((259, 256), (18, 16))  # (259-224)/2 = 17.5 -> 18
    assert Preprocessing().geometry(259, 256, crop=True).region == (18.0, 16.0, 242.0, 240.0)


def test_crop_region_uses_each_axis_scale():
    from sipgrad.models.preprocessing import Preprocessing
    region = Preprocessing().geometry(301, 200, crop=True).region
    assert region[3] == pytest.approx(187.5)  # (16 + 224) * 200/256, not * 301/385


def test_map_to_original_covers_the_rounded_region():
    from sipgrad.models.preprocessing import Preprocessing
    geometry = Preprocessing().geometry(301, 200, crop=True)  # region x1 = 237.67, y1 = 187.5
    out = geometry.map_to_original(torch.ones(224, 224))
    assert int((out > 0).sum()) == 176 * 175
    assert out[187, 237] > 0 and out[:, 238].sum() == 0
