import numpy as np
import pytest
import torch

from sipgrad import Classifier, Preprocessing, SipgradError, explain
from sipgrad.models import ClassNames


@pytest.fixture
def classifier(small_cnn):
    return Classifier.wrap(small_cnn, Preprocessing(input_size=32), ClassNames.generic(10), name="small")


def test_default_target_is_top1_and_each_image_may_have_its_own(classifier, small_cnn, small_batch):
    with torch.no_grad():
        predicted = small_cnn(small_batch).argmax(1)
    for method in ("grad", "ig", "gradcam"):
        result = explain(classifier, small_batch, method=method, ig_steps=4)
        assert torch.equal(result.targets, predicted), method
    mixed = [1, None, "class 4", 2]
    result = explain(classifier, small_batch, target=mixed, method="smoothgrad", smoothgrad_samples=2)
    assert result.targets.tolist() == [1, int(predicted[1]), 4, 2]


def test_batching_does_not_change_results(classifier, small_batch):
    for method in ("grad", "ig"):
        whole = explain(classifier, small_batch, method=method, ig_steps=8, batch_size=4).attribution
        split = explain(classifier, small_batch, method=method, ig_steps=8, batch_size=1).attribution
        assert torch.allclose(whole, split, atol=1e-6), method
    small = explain(classifier, small_batch, method="ig", ig_steps=8, internal_batch_size=5).attribution
    assert torch.allclose(small, whole, atol=1e-6)


@pytest.mark.parametrize("method, options", [("smoothgrad", {"smoothgrad_samples": 3}),
                                             ("ig", {"ig_baseline": "noise", "ig_steps": 3})])
def test_a_run_explained_in_parts_with_their_positions_equals_one_call(classifier, small_batch, method, options):
    """Random methods draw an image's noise from its run position: parts that pass theirs give one call's maps."""
    whole = explain(classifier, small_batch, method=method, **options).attribution
    parts = torch.cat([explain(classifier, small_batch[start:start + 2], method=method, indices=[start, start + 1],
                               **options).attribution for start in (0, 2)])
    torch.testing.assert_close(parts, whole, atol=1e-6, rtol=1e-5)
    unplaced = explain(classifier, small_batch[2:], method=method, **options).attribution  # positions 0, 1 again
    assert not torch.allclose(unplaced, whole[2:], atol=1e-4)
    with pytest.raises(SipgradError, match="3 indices given for 4 images"):
        explain(classifier, small_batch, method=method, indices=[0, 1, 2], **options)
    with pytest.raises(SipgradError, match="indices must be whole numbers >= 0.*got -1"):
        explain(classifier, small_batch, method=method, indices=[0, 1, 2, -1], **options)


def test_smoothgrad_is_reproducible_from_its_seed(classifier, small_batch):
    run = lambda seed: explain(classifier, small_batch, method="smoothgrad", smoothgrad_samples=4, seed=seed)  # noqa
    assert torch.equal(run(3).attribution, run(3).attribution)
    assert not torch.allclose(run(3).attribution, run(4).attribution)
    state = torch.random.get_rng_state()
    run(3)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is untouched


def test_noise_baseline_is_seeded(classifier, small_batch):
    run = lambda seed: explain(classifier, small_batch, method="ig", ig_baseline="noise", ig_steps=4, seed=seed)  # noqa
    assert torch.equal(run(1).attribution, run(1).attribution)
    assert not torch.equal(run(1).attribution, run(2).attribution)


def test_saliency_reduction_and_original_size(lite0, photos):
    result = explain(lite0, [photos["chelsea"]], method="inputgrad")
    raw = result.attribution[0].abs()
    assert torch.allclose(result.input_saliency[0], raw.mean(0))
    assert result.saliency[0].shape == photos["chelsea"].shape[:2] and result.saliency[0].dtype == np.float32
    assert result.overlay(0).shape == photos["chelsea"].shape
    as_max = explain(lite0, [photos["chelsea"]], method="inputgrad", reduce="max")
    assert torch.allclose(as_max.input_saliency[0], raw.amax(0))


def test_crop_mode_maps_back_with_zeros_outside_the_crop(lite0, photos):
    image = photos["chelsea"]  # 300 x 451: the centre crop drops the left and right margins
    result = explain(lite0, [image], method="grad", crop=True)
    saliency = result.saliency[0]
    assert saliency.shape == image.shape[:2]
    assert saliency[:, :20].max() == 0 and saliency[:, -20:].max() == 0 and saliency[:, 200:250].max() > 0


def test_user_model_inputs_paths_pil_arrays(lite0, asset_dir):
    from PIL import Image

    paths = [asset_dir / "chelsea.jpg", asset_dir / "coffee.jpg"]
    by_path = explain(lite0, paths)
    by_pil = explain(lite0, [Image.open(p) for p in paths])
    assert torch.allclose(by_path.attribution, by_pil.attribution)
    assert [t["name"] for t in by_path.predictions[0][:1]] == ["Egyptian cat"]
    assert by_path.names == ["chelsea.jpg", "coffee.jpg"]


def test_bad_arguments_are_clear(classifier, small_batch):
    with pytest.raises(SipgradError, match="unknown method"):
        explain(classifier, small_batch, method="lrp")
    with pytest.raises(SipgradError, match="3 targets given for 4 images"):
        explain(classifier, small_batch, target=[1, 2, 3])
    with pytest.raises(TypeError, match="unknown option"):
        explain(classifier, small_batch, ig_stepz=3)


def test_model_train_flag_is_restored(small_cnn, small_batch):
    small_cnn.train()
    explain(Classifier.wrap(small_cnn, Preprocessing(input_size=32), ClassNames.generic(10)), small_batch)
    assert small_cnn.training and small_cnn.bn.training


def test_save_writes_unique_files(lite0, photos, tmp_path):
    result = explain(lite0, [photos["chelsea"], photos["chelsea"]], sip="topq:0.25")
    result.names = ["same.png", "same.png"]
    written = result.save(tmp_path, figure=False)
    assert len({w["overlay"] for w in written}) == 2
    assert np.load(written[1]["saliency"]).shape == photos["chelsea"].shape[:2]
    assert ".sip-topq_0.25." in written[0]["overlay"]


def test_saved_figures_name_the_sip_configuration_in_every_panel(classifier, small_batch, tmp_path, monkeypatch):
    from sipgrad.attribution import explanation

    drawn = []
    monkeypatch.setattr(explanation, "save_panels", lambda path, image, maps, titles, suptitle: drawn.append(
        (list(titles), suptitle)))
    explain(classifier, small_batch[:1], sip="topq:0.25").save(tmp_path)
    explain(classifier, small_batch[:1]).save(tmp_path)
    (sip_titles, sip_suptitle), (plain_titles, plain_suptitle) = drawn
    assert sip_titles == ["grad + SIP topq:0.25"] and "| grad + SIP topq:0.25 |" in sip_suptitle
    assert plain_titles == ["grad"] and "| grad |" in plain_suptitle


def test_saved_overlay_is_the_overlay_and_arrays_are_not_copied(lite0, photos, tmp_path):
    from PIL import Image

    photo = np.ascontiguousarray(photos["coffee"])
    result = explain(lite0, photo)
    assert result.images[0] is photo  # an RGB uint8 array is held once, not copied
    written = result.save(tmp_path, figure=False)
    with Image.open(written[0]["overlay"]) as saved:
        assert np.array_equal(np.asarray(saved), result.overlay(0))  # streamed PNG == the in-memory overlay


def test_the_explain_path_leaves_heavy_modules_unloaded(tmp_path):
    """torchvision (~160 MiB) and scipy.stats (~60 MiB) are not needed to explain a photo."""
    import subprocess
    import sys

    code = ("import sys; from skimage import data; import sipgrad; "
            "sipgrad.explain(sipgrad.load_model(), data.chelsea(), crop=True); "
            "print(sorted(m for m in ('torchvision', 'scipy.stats') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("kind", ["list", "tensor", "array"])
def test_targets_below_minus_one_are_refused_naming_value_and_row(classifier, small_batch, kind):
    values = [3, -5, 1, 2]
    target = {"list": values, "tensor": torch.tensor(values), "array": np.array(values)}[kind]
    with pytest.raises(SipgradError, match=r"^target -5 for image 1 is out of range: a class index 0\.\.9, "
                                           r"or -1 for the predicted class$"):
        explain(classifier, small_batch, target=target)
    with pytest.raises(SipgradError, match=r"^target 10 for image 0 is out of range"):
        explain(classifier, small_batch, target={"list": [10, 1, 1, 1], "tensor": torch.tensor([10, 1, 1, 1]),
                                                 "array": np.array([10, 1, 1, 1])}[kind])


def test_minus_one_as_text_is_the_predicted_class_as_on_the_command_line(classifier, small_cnn, small_batch):
    """``--target -1`` reaches the library as the string "-1"; it was looked up as a class name."""
    with torch.no_grad():
        predicted = small_cnn(small_batch).argmax(1)
    assert explain(classifier, small_batch, target="-1").targets.tolist() == predicted.tolist()
    assert explain(classifier, small_batch, target=["2", " -1", "4", "-1"]).targets.tolist()[:3] == \
        [2, int(predicted[1]), 4]
    with pytest.raises(SipgradError, match=r"^target -5 for every image is out of range"):
        explain(classifier, small_batch, target="-5")


@pytest.mark.parametrize("kind", ["list", "tensor", "array"])
def test_minus_one_is_the_predicted_class_in_every_form(classifier, small_cnn, small_batch, kind):
    with torch.no_grad():
        predicted = small_cnn(small_batch).argmax(1)
    values = [2, -1, 4, -1]
    target = {"list": values, "tensor": torch.tensor(values), "array": np.array(values)}[kind]
    result = explain(classifier, small_batch, target=target)
    assert result.targets.tolist() == [2, int(predicted[1]), 4, int(predicted[3])]


def test_fractional_and_bool_targets_are_refused(classifier, small_batch):
    with pytest.raises(SipgradError, match=r"^target 1\.5 for image 2 is not a class index"):
        explain(classifier, small_batch, target=torch.tensor([1.0, 2.0, 1.5, 3.0]))
    with pytest.raises(SipgradError, match=r"^target True for every image is not a class index"):
        explain(classifier, small_batch, target=True)
    assert explain(classifier, small_batch, target=torch.tensor([1.0, 2.0, 0.0, 3.0])).targets.tolist() == [1, 2, 0, 3]
