import urllib.error

import pytest
import torch

from sipgrad import Classifier, SipgradError, WeightsUnavailableError, load_model
from sipgrad.models import MODELS, ClassNames, imagenet_classes, weights_available_offline
from sipgrad.models.preprocessing import Preprocessing


def test_offline_without_cached_weights_names_both_ways_out(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    assert not weights_available_offline("resnet18")
    with pytest.raises(WeightsUnavailableError) as info:
        load_model("resnet18")
    message = str(info.value)
    assert "\n" not in message and "weights=FILE" in message and "pretrained=False" in message


def test_cached_torchvision_weights_are_used_without_download(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    reference = load_model("resnet18", pretrained=False)
    (tmp_path / "checkpoints").mkdir()
    torch.save(reference.module.state_dict(), tmp_path / "checkpoints" / "resnet18-f37072fd.pth")
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("downloaded"))
    loaded = load_model("resnet18")
    assert weights_available_offline("resnet18")
    assert torch.equal(loaded.module.fc.weight, reference.module.fc.weight)


def test_local_weights_file_and_random_init(tmp_path):
    first = load_model("resnet18", pretrained=False)
    path = tmp_path / "w.pth"
    torch.save({"state_dict": first.module.state_dict()}, path)
    second = load_model("resnet18", weights=path)
    assert torch.equal(first.module.conv1.weight, second.module.conv1.weight)
    with pytest.raises(SipgradError, match="does not fit"):
        load_model("vgg16", weights=path)
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(SipgradError, match="not a loadable state dict"):
        load_model("resnet18", weights=tmp_path / "junk.pth")
    with pytest.raises(SipgradError, match="unknown model"):
        load_model("resnet19")


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_has_valid_default_layers(name):
    classifier = load_model(name, pretrained=name == "efficientnet_lite0")
    modules = dict(classifier.module.named_modules())
    assert classifier.gradcam_layer in modules
    assert classifier.sip_layers and all(isinstance(modules[n], torch.nn.Conv2d) for n in classifier.sip_layers)
    assert len(classifier.classes) == (10 if name.startswith("digits_") else 1000)


def test_class_names_lookup_and_suggestions():
    classes = imagenet_classes()
    assert classes.index("egyptian CAT") == 285 == classes.index("n02124075") == classes.index("285")
    with pytest.raises(SipgradError, match="did you mean 'Egyptian cat'"):
        classes.index("egyptain cat")
    with pytest.raises(SipgradError, match="out of range"):
        classes.index(1000)


@pytest.mark.parametrize("size", [(300, 451), (451, 300), (256, 256), (500, 90)])
def test_crop_geometry_matches_torchvision_transform(size):
    import numpy as np
    from PIL import Image
    from torchvision import transforms

    height, width = size
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    pre = Preprocessing()
    ours, geometry = pre.prepare(image, crop=True)
    theirs = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                                 transforms.Normalize(pre.mean, pre.std)])(image)
    assert torch.allclose(ours, theirs, atol=1e-5)
    # The crop region, mapped back, is exactly the input frame.
    x0, y0, x1, y1 = geometry.box_to_input(geometry.region)
    assert (round(x0, 6), round(y0, 6), round(x1, 6), round(y1, 6)) == (0, 0, 224, 224)


def test_weights_of_the_wrong_shape_name_the_tensor_and_both_shapes(tmp_path):
    state = load_model("resnet18", pretrained=False).module.state_dict()
    state["layer2.0.conv1.weight"] = torch.zeros(128, 64, 5, 5)
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(SipgradError) as caught:
        load_model("resnet18", weights=tmp_path / "w.pth")
    message = str(caught.value)
    assert "'layer2.0.conv1.weight'" in message and "(128, 64, 5, 5)" in message and "(128, 64, 3, 3)" in message
    del state["layer2.0.conv1.weight"]
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(SipgradError, match="'layer2.0.conv1.weight' .* is missing"):
        load_model("resnet18", weights=tmp_path / "w.pth")


def test_a_pickle_with_code_is_refused_without_torchs_unsafe_advice(tmp_path):
    torch.save({"conv.weight": torch.zeros(2), "extra": object.__new__(ClassNames)}, tmp_path / "p.pth")
    with pytest.raises(SipgradError) as caught:
        load_model("resnet18", weights=tmp_path / "p.pth")
    assert "weights_only" not in str(caught.value) and "\n" not in str(caught.value)
    assert "Python objects" in str(caught.value)


@pytest.mark.parametrize("builder, expected", [("resnet18", "layer4"), ("vgg16", "features")])
def test_wrapped_models_use_the_last_block_after_its_activation_for_gradcam(builder, expected):
    import torchvision

    module = getattr(torchvision.models, builder)()
    assert Classifier.wrap(module).gradcam_layer == expected


def test_wrapped_lite0_uses_its_head_activation_for_gradcam():
    from sipgrad.models.efficientnet_lite import EfficientNetLite0

    assert Classifier.wrap(EfficientNetLite0()).gradcam_layer == "_head_act"


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_weights_holding_nan_or_inf_are_refused_naming_the_tensor(tmp_path, bad):
    # A diverged checkpoint gave nan% predictions and all-NaN maps with exit status 0.
    state = load_model("resnet18", pretrained=False).module.state_dict()
    state["layer3.1.conv2.weight"][0, 0, 0, 0] = bad
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(SipgradError, match=r"w.pth: tensor 'layer3.1.conv2.weight' holds NaN or infinite values"):
        load_model("resnet18", weights=tmp_path / "w.pth")


@pytest.mark.parametrize("device, message", [
    ("meta", "holds shapes but no data"),
    ("banana", "'banana' is not a device"),
    ("cuda:7" if torch.cuda.is_available() else "cuda", "device"),
    ("mps", "no mps device is available here"),
])
def test_devices_that_cannot_run_a_model_are_refused_in_one_line(device, message):
    from sipgrad.devices import usable_device

    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has an mps device")
    with pytest.raises(SipgradError, match=message):
        usable_device(device)
    with pytest.raises(SipgradError, match=message):  # before any weights are read
        load_model("efficientnet_lite0", device=device)
    assert usable_device("cpu") == torch.device("cpu")
