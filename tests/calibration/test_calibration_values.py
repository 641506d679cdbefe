"""Calibration statistics against a brute-force reference: every image's GAP(ReLU(A)) computed directly, then the
file's mean, std, counts, Welch and Shapiro-Wilk p-values recomputed with numpy and scipy."""

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

from sipgrad import Classifier, Preprocessing
from sipgrad.calibration import (
    SIPStatistics,
    calibrate,
    labelled_images,
    shapiro_pvalues,
    welch_greater_pvalues,
)
from sipgrad.calibration.calibrate import _priorities
from sipgrad.calibration.stats import LayerStatistics, layer_fingerprint
from sipgrad.io.images import load_image
from sipgrad.models import ClassNames
from tests.conftest import make_small_cnn

LAYERS = ("conv1", "conv3")
COUNT = 11
LABELS = [0, 1, 2, 0, 1, 2, 0, 0, 1, 2, 1]


def _splitmix_priority(index: int, seed: int) -> float:
    """splitmix64 of (seed, index) in plain Python integers, the top 53 bits as a float in [0, 1)."""
    mask = (1 << 64) - 1
    z = (index + seed * 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    z ^= z >> 31
    return (z >> 11) / float(1 << 53)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Eleven small non-square images (a blend of noise and a per-class colour, so classes differ)."""
    root = tmp_path_factory.mktemp("calib_values")
    rng = np.random.default_rng(5)
    items = []
    for i, label in enumerate(LABELS):
        colour = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]][label])
        pixels = 0.6 * rng.integers(0, 256, (30, 41, 3)) + 0.4 * colour
        path = root / f"{i}.png"
        Image.fromarray(pixels.astype(np.uint8)).save(path)
        items.append((path, label))
    return items


def _classifier():
    return Classifier.wrap(make_small_cnn(), Preprocessing(input_size=32), ClassNames.generic(3), sip_layers=LAYERS)


def _reference_gap(classifier, items, crop=False):
    """Each image's GAP(ReLU(output)) per layer, one image at a time (N x C)."""
    captured = {}
    handles = [dict(classifier.module.named_modules())[name].register_forward_hook(
        lambda _m, _i, out, name=name: captured.__setitem__(name, out.detach().double()))
        for name in LAYERS]
    rows = {name: [] for name in LAYERS}
    try:
        with torch.no_grad():
            for path, _ in items:
                classifier.module(classifier.preprocessing.prepare(load_image(path), crop=crop)[0][None])
                for name in LAYERS:
                    rows[name].append(torch.relu(captured[name])[0].mean(dim=(1, 2)).numpy())
    finally:
        for handle in handles:
            handle.remove()
    return {name: np.array(values) for name, values in rows.items()}


def _check_against_reference(result, reference, labels, seed, reservoir_size):
    labels = np.asarray(labels)
    chosen = np.sort(np.argsort([_splitmix_priority(i, seed) for i in range(len(labels))])[:reservoir_size])
    for name in LAYERS:
        values, got = reference[name], result.per_layer[name]
        assert got.count == len(values)
        np.testing.assert_allclose(got.mean, values.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got.std, values.std(0, ddof=1), rtol=1e-4, atol=1e-6)
        expected_welch = np.array([[stats.ttest_ind(values[labels == k, c], values[labels != k, c], equal_var=False,
                                                    alternative="greater").pvalue for k in range(3)]
                                   for c in range(values.shape[1])])
        np.testing.assert_allclose(got.class_pvalues, expected_welch, rtol=1e-4, atol=1e-7, equal_nan=True)
        sample = values[chosen].astype(np.float32).astype(np.float64)
        expected_shapiro = np.array([stats.shapiro(sample[:, c]).pvalue if sample[:, c].std() > 0 else np.nan
                                     for c in range(values.shape[1])])
        np.testing.assert_allclose(got.shapiro, expected_shapiro, rtol=1e-4, atol=1e-7, equal_nan=True)


def test_priorities_are_splitmix64_of_seed_and_index():
    index = np.array([0, 1, 2, 7, 1000, 2**40 + 3])
    for seed in (0, 1, 12345, 2**32 - 1):
        expected = [_splitmix_priority(int(i), seed) for i in index]
        assert _priorities(index, seed).tolist() == expected


@pytest.mark.parametrize(("batch_size", "seed"), [(1, 0), (4, 0), (4, 3), (COUNT, 1)])
def test_statistics_equal_the_one_pass_statistics_of_every_image(images, tmp_path, batch_size, seed):
    """Whatever the batch split and seed: mean, std (n - 1), count, Welch p-values of every class against the rest,
    and Shapiro-Wilk on the bottom-k reservoir of the index priorities, all as computed from every image at once."""
    classifier = _classifier()
    reference = _reference_gap(classifier, images)
    result = calibrate(classifier, images, tmp_path / "s.npz", batch_size=batch_size, crop=False, seed=seed,
                       reservoir_size=6)
    _check_against_reference(result, reference, LABELS, seed, 6)
    loaded = SIPStatistics.load(tmp_path / "s.npz")  # the file says the same
    _check_against_reference(loaded, reference, LABELS, seed, 6)


def test_crop_is_the_one_asked_for(images, tmp_path):
    classifier = _classifier()
    result = calibrate(classifier, images, tmp_path / "s.npz", batch_size=4, crop=True, reservoir_size=6)
    reference = _reference_gap(classifier, images, crop=True)
    np.testing.assert_allclose(result.per_layer["conv3"].mean, reference["conv3"].mean(0), rtol=1e-5, atol=1e-6)


def test_an_unreadable_image_keeps_the_others_indices(images, tmp_path):
    """A skipped file takes its index with it: the others' reservoir priorities are those of their positions."""
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"oops")
    items = images[:5] + [(broken, 1)] + images[5:]
    classifier = _classifier()
    result = calibrate(classifier, items, tmp_path / "s.npz", batch_size=4, crop=False, seed=2, reservoir_size=4)
    reference = _reference_gap(classifier, images)
    positions = [i for i in range(len(items)) if i != 5]
    chosen = sorted(sorted(range(COUNT), key=lambda j: _splitmix_priority(positions[j], 2))[:4])
    for name in LAYERS:
        assert result.per_layer[name].count == COUNT
        sample = reference[name][chosen].astype(np.float32).astype(np.float64)
        expected = [stats.shapiro(sample[:, c]).pvalue if sample[:, c].std() > 0 else np.nan
                    for c in range(sample.shape[1])]
        np.testing.assert_allclose(result.per_layer[name].shapiro, expected, rtol=1e-4, atol=1e-7, equal_nan=True)


@pytest.mark.parametrize("change", ["seed", "labels"])
def test_a_checkpoint_of_other_arguments_is_not_resumed(images, tmp_path, change):
    """A run stopped with one seed (or labelling) and called again with another starts over: its result is the
    uninterrupted result of the new arguments, not a mix."""
    classifier = _classifier()
    first, second = dict(seed=0), dict(seed=1)
    items_first = items_second = images
    if change == "labels":
        items_second = [(path, (label + 1) % 3) for path, label in images]
    out = tmp_path / "s.npz"
    assert calibrate(classifier, items_first, out, batch_size=4, crop=False, reservoir_size=3, stop_after=1,
                     **first) is None
    resumed = calibrate(classifier, items_second, out, batch_size=4, crop=False, reservoir_size=3,
                        **(second if change == "seed" else first))
    whole = calibrate(classifier, items_second, tmp_path / "whole.npz", batch_size=4, crop=False, reservoir_size=3,
                      **(second if change == "seed" else first))
    for name in LAYERS:
        for field in ("mean", "std", "shapiro", "class_pvalues"):
            np.testing.assert_allclose(getattr(resumed.per_layer[name], field), getattr(whole.per_layer[name], field),
                                       rtol=1e-12, atol=0, equal_nan=True, err_msg=field)


def test_a_model_with_other_weights_is_refused(images, tmp_path):
    """Same architecture, one weight changed: the fingerprint covers the weight values, not just names and shapes."""
    from sipgrad.errors import SipgradError

    model = make_small_cnn()
    statistics = calibrate(_classifier(), images[:4], tmp_path / "s.npz", batch_size=4, crop=False)
    statistics.check_model(model)
    with torch.no_grad():
        model.conv3.weight[0, 0, 0, 0] += 1e-3
    assert layer_fingerprint(model, LAYERS) != statistics.fingerprint
    with pytest.raises(SipgradError, match="statistics were computed"):
        statistics.check_model(model)


@pytest.mark.filterwarnings("ignore:Precision loss occurred:RuntimeWarning")  # scipy, on a constant group
def test_welch_is_nan_for_groups_without_variance_or_with_one_sample():
    """A class of one sample gets no p-value, nor do groups both without variance (constant within each class
    though different between them: never a p-value of 0); one constant group alone is scipy's ordinary test."""
    count = np.array([3, 3, 1])
    values = {0: [1.0, 1.0, 1.0], 1: [2.0, 2.0, 2.0], 2: [5.0]}
    total = np.array([[sum(v)] for v in values.values()])
    total_sq = np.array([[sum(x * x for x in v)] for v in values.values()])
    p = welch_greater_pvalues(count, total, total_sq)
    assert p.shape == (1, 3)
    rest_of_0 = stats.ttest_ind([1.0] * 3, [2.0] * 3 + [5.0], equal_var=False, alternative="greater").pvalue
    assert p[0, 0] == pytest.approx(rest_of_0)
    expected = stats.ttest_ind([2.0, 2.0, 2.0], [1.0, 1.0, 1.0, 5.0], equal_var=False, alternative="greater").pvalue
    assert p[0, 1] == pytest.approx(expected)
    assert np.isnan(p[0, 2])  # one sample
    both_constant = welch_greater_pvalues(np.array([3, 3]), np.array([[3.0], [6.0]]), np.array([[3.0], [12.0]]))
    assert np.isnan(both_constant).all()


def test_tensors_keep_every_channel_where_a_p_value_is_missing():
    """NaN p-values (constant channel, too few samples) become 1.0, i.e. never significant, in the tensors SIP uses."""
    s = LayerStatistics(mean=np.array([1.0, 2.0]), std=np.array([0.5, 0.0]), shapiro=np.array([0.01, np.nan]),
                        class_pvalues=np.array([[0.2, np.nan], [np.nan, 0.03]]), count=4)
    statistics = SIPStatistics("m", ("layer",), "f", {"layer": s}, 2)
    t = statistics.tensors("layer", torch.device("cpu"))
    assert t["shapiro"].tolist() == pytest.approx([0.01, 1.0])
    np.testing.assert_allclose(t["class_pvalues"].numpy(), [[0.2, 1.0], [1.0, 0.03]], rtol=1e-6)
    assert t["mean"].dtype == torch.float32 and t["std"].tolist() == [0.5, 0.0]


def test_file_lists_resolve_relative_paths_from_their_folder_and_allow_spaces(tmp_path, monkeypatch):
    (tmp_path / "data" / "sub dir").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "data" / "sub dir" / "a b.png")
    listing = tmp_path / "data" / "list.txt"
    listing.write_text("sub dir/a b.png 2\n# a comment\n\n")
    monkeypatch.chdir(tmp_path)
    assert labelled_images(listing, ClassNames.generic(3)) == [(tmp_path / "data" / "sub dir" / "a b.png", 2)]


def test_class_folders_take_upper_case_extensions(tmp_path):
    (tmp_path / "1").mkdir()
    for name in ("A.JPG", "b.Png", "notes.txt"):
        (tmp_path / "1" / name).write_bytes(b"x")
    assert labelled_images(tmp_path, ClassNames.generic(3)) == [(tmp_path / "1" / "A.JPG", 1),
                                                                 (tmp_path / "1" / "b.Png", 1)]


def test_hidden_folders_and_files_beside_the_class_folders_are_skipped(tmp_path):
    # Jupyter, git and macOS zips leave these; they used to stop the run as "unknown class name".
    for junk in (".ipynb_checkpoints", "__MACOSX", "1/.ipynb_checkpoints"):
        (tmp_path / junk).mkdir(parents=True)
        (tmp_path / junk / "x.png").write_bytes(b"x")
    for name in ("a.png", "._a.png"):
        (tmp_path / "1" / name).write_bytes(b"x")
    assert labelled_images(tmp_path, ClassNames.generic(3)) == [(tmp_path / "1" / "a.png", 1)]


def test_shapiro_of_three_samples_is_scipys_and_fewer_is_nan():
    three = np.array([[0.1, 1.0], [0.5, 1.0], [2.0, 1.0]])
    p = shapiro_pvalues(three)
    assert p[0] == pytest.approx(stats.shapiro(three[:, 0]).pvalue) and np.isnan(p[1])
    assert np.isnan(shapiro_pvalues(three[:2])).all()
