import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from sipgrad.calibration import SIPStatistics, calibrate, labelled_images, shapiro_pvalues, welch_greater_pvalues
from sipgrad.calibration.calibrate import ChannelAccumulator, _priorities


def test_welch_matches_scipy_for_every_class_and_channel():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(300, 6)) * rng.uniform(0.5, 3, 6)
    labels = rng.integers(0, 5, 300)
    values[labels == 3, 2] += 0.8
    acc = ChannelAccumulator.empty(6, 5)
    for chunk in np.array_split(np.arange(300), 7):  # streamed in uneven batches
        acc.update(values[chunk], labels[chunk], _priorities(chunk, 0), 5000)
    ours = welch_greater_pvalues(acc.count, acc.total, acc.total_sq)
    expected = np.array([[stats.ttest_ind(values[labels == k, c], values[labels != k, c], equal_var=False,
                                          alternative="greater").pvalue for k in range(5)] for c in range(6)])
    assert np.allclose(ours, expected, rtol=1e-9, atol=1e-12)
    assert ours[2, 3] < 1e-3
    finished = acc.finish()
    assert np.allclose(finished.mean, values.mean(0)) and np.allclose(finished.std, values.std(0, ddof=1))


def test_shapiro_matches_scipy_and_reservoir_is_bounded():
    rng = np.random.default_rng(1)
    sample = np.column_stack([rng.normal(size=400), rng.exponential(size=400), np.ones(400)])
    ours = shapiro_pvalues(sample)
    assert ours[0] == pytest.approx(stats.shapiro(sample[:, 0]).pvalue)
    assert ours[1] == pytest.approx(stats.shapiro(sample[:, 1]).pvalue) and ours[1] < 1e-6
    assert np.isnan(ours[2])
    acc = ChannelAccumulator.empty(3, 2)
    for start in range(0, 400, 64):
        index = np.arange(start, min(start + 64, 400))
        acc.update(sample[index], index % 2, _priorities(index, 0), 100)
    assert acc.reservoir.shape == (100, 3)
    chosen = np.sort(np.argsort(_priorities(np.arange(400), 0))[:100])  # bottom-k == the reservoir
    assert np.allclose(np.sort(acc.reservoir[:, 0]), np.sort(sample[chosen, 0].astype(np.float32)))


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """Three ImageNet classes (folders by wnid, index and name), crops of real photos."""
    from skimage import data

    root = tmp_path_factory.mktemp("calib")
    sources = {"n02124075": data.chelsea(), "967": data.coffee(), "space shuttle": data.rocket()}
    rng = np.random.default_rng(0)
    for folder, photo in sources.items():
        (root / folder).mkdir()
        for i in range(4):
            h, w = photo.shape[:2]
            y, x = rng.integers(0, h // 4), rng.integers(0, w // 4)
            Image.fromarray(photo[y:y + 3 * h // 4, x:x + 3 * w // 4]).save(root / folder / f"{i}.jpg")
    (root / "967" / "broken.jpg").write_bytes(b"oops")
    return root


def test_folder_labels_and_file_lists(tiny_dataset, tmp_path):
    from sipgrad.models import imagenet_classes

    items = labelled_images(tiny_dataset, imagenet_classes())
    assert sorted({label for _, label in items}) == [285, 812, 967]
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{path} {label}\n" for path, label in items[:3]))
    assert labelled_images(listing, imagenet_classes()) == items[:3]


def test_file_list_labels_may_be_class_names_with_spaces(tmp_path):
    from sipgrad.errors import SipgradError
    from sipgrad.models import imagenet_classes

    classes = imagenet_classes()
    (tmp_path / "my photos").mkdir()
    for name in ("a.jpg", "b c.jpg"):
        (tmp_path / "my photos" / name).write_bytes(b"x")
    listing = tmp_path / "list.txt"
    listing.write_text("my photos/a.jpg Egyptian cat\n"      # a class name of two words, no tab
                       "my photos/b c.jpg\ttiger cat\n"      # a tab: the label is all after it
                       "my photos/a.jpg 285\n"
                       "my photos/b c.jpg cat\n")             # 'cat' alone names no class; 'c.jpg cat' neither
    with pytest.raises(SipgradError, match=r"list\.txt:4: label: .*'cat'.*put a tab before it"):
        labelled_images(listing, classes)
    listing.write_text("my photos/a.jpg Egyptian cat\n"
                       "my photos/b c.jpg\ttiger cat\n"
                       "my photos/a.jpg 285\n"
                       "my photos/b c.jpg Egyptian cat\n"    # spaces in the path and in the name, no tab
                       "my photos/a.jpg waffle iron\n"       # 'iron' is a class too: the existing path decides
                       "gone/a.jpg\twaffle iron\n")          # no such file: the tab decides
    items = labelled_images(listing, classes)
    folder = tmp_path / "my photos"
    assert items == [(folder / "a.jpg", 285), (folder / "b c.jpg", 282), (folder / "a.jpg", 285),
                     (folder / "b c.jpg", 285), (folder / "a.jpg", 891), (tmp_path / "gone" / "a.jpg", 891)]


def test_resumed_run_equals_uninterrupted_run(lite0, tiny_dataset, tmp_path):
    from sipgrad.models import imagenet_classes

    items = labelled_images(tiny_dataset, imagenet_classes())
    layers = lite0.sip_layers[-2:]
    whole = calibrate(lite0, items, tmp_path / "whole.npz", layers=layers, batch_size=4, reservoir_size=5)
    partial = tmp_path / "part.npz"
    assert calibrate(lite0, items, partial, layers=layers, batch_size=4, reservoir_size=5, stop_after=2) is None
    assert (tmp_path / "part.npz.partial.npz").is_file() and not partial.exists()
    with pytest.warns(UserWarning, match=r"resuming from .*part\.npz\.partial\.npz: 8 of 13 images were already done"):
        resumed = calibrate(lite0, items, partial, layers=layers, batch_size=4, reservoir_size=5)
    assert not (tmp_path / "part.npz.partial.npz").exists()
    for name in layers:
        a, b = whole.per_layer[name], SIPStatistics.load(partial).per_layer[name]
        assert a.count == b.count == 12  # the broken file is skipped
        for field in ("mean", "std", "shapiro", "class_pvalues"):
            assert np.allclose(getattr(a, field), getattr(b, field), equal_nan=True), field
    assert resumed.fingerprint == whole.fingerprint


def test_calibrate_then_explain_with_cls_from_the_cli(tiny_dataset, tmp_path, asset_dir):
    stats_path = tmp_path / "stats.npz"
    run = lambda *args: subprocess.run([sys.executable, "-m", "sipgrad_cli", *args],  # noqa: E731
                                       capture_output=True, text=True, timeout=300)
    done = run("calibrate", "--data", str(tiny_dataset), "--out", str(stats_path), "--batch-size", "8")
    assert done.returncode == 1, done.stderr  # one unreadable image: reported and skipped, the rest written
    assert "12 images" in done.stdout and "1 unreadable skipped" in done.stdout
    # an unreadable image is an error line, as in explain and analyze (the exit status says the same)
    assert [line.split(": ")[1] for line in done.stderr.splitlines() if line.startswith("sipgrad: ")] == ["error"]
    with np.load(stats_path, allow_pickle=False) as data:
        assert str(data["model_name"]) == "efficientnet_lite0"
    explained = run("explain", str(asset_dir / "chelsea.jpg"), "--sip", "cls", "--stats", str(stats_path),
                    "--no-shapiro", "--alpha", "0.2", "--out", str(tmp_path / "out"), "--json")
    assert explained.returncode == 0, explained.stderr
    refused = run("explain", str(asset_dir / "chelsea.jpg"), "--model", "resnet18", "--pretrained", "none",
                  "--sip", "cls", "--stats", str(stats_path), "--out", str(tmp_path / "out"))
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()]
    assert "statistics were computed for efficientnet_lite0" in refused.stderr


def test_ctrl_c_keeps_whole_batches_only_and_says_whether_this_run_kept_a_checkpoint(tiny_dataset, tmp_path,
                                                                                      monkeypatch, capsys):
    """A real SIGINT that lands while a batch updates the accumulators is held until the batch is done, so
    the checkpoint holds whole batches (a resumed run would count a half one twice). Ctrl-C before any batch
    is done writes nothing, and a checkpoint another run left there is not claimed as this run's."""
    import importlib
    import os
    import signal

    from sipgrad_cli.main import main

    calibrate_module = importlib.import_module("sipgrad.calibration.calibrate")  # the package exports the function
    out, partial = tmp_path / "stats.npz", tmp_path / "stats.npz.partial.npz"
    argv = ["calibrate", "--data", str(tiny_dataset), "--out", str(out), "--batch-size", "4"]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    partial.write_bytes(b"a checkpoint of some other run")  # not this run's: it would start over
    monkeypatch.setattr(calibrate_module, "_priorities", interrupted)  # after the first pass, before any update
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "interrupted before the first batch was finished; nothing was written" in err
    assert partial.read_bytes() == b"a checkpoint of some other run" and not out.exists()
    monkeypatch.undo()

    partial.unlink()
    real_update, calls = calibrate_module.ChannelAccumulator.update, []

    def update_with_ctrl_c_in_the_first(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # lands in the middle of the first batch's layer updates
        return real_update(self, *args, **kwargs)

    monkeypatch.setattr(calibrate_module.ChannelAccumulator, "update", update_with_ctrl_c_in_the_first)
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert f"interrupted; the finished batches are in {partial}: the same command resumes from it" in err
    with np.load(partial, allow_pickle=False) as saved:
        layers = len([key for key in saved.files if key.endswith("/count")])
        assert int(saved["done"]) == 4 and layers == 9 == len(calls)  # every layer of the one batch, and no more
        readable = 4 - int(saved["skipped"])
        assert all(int(saved[f"{i}/count"].sum()) == readable for i in range(layers))
    assert not out.exists()


def test_calibrating_never_changes_the_model(tmp_path):
    """A model left in train mode (BatchNorm would update its running statistics) comes back bit-identical."""
    import torch

    from sipgrad import Classifier, Preprocessing
    from sipgrad.models import ClassNames
    from tests.conftest import make_small_cnn

    module = make_small_cnn().train()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    rng = np.random.default_rng(0)
    items = []
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        items.append((tmp_path / f"{i}.png", i % 2))
    classifier = Classifier.wrap(module, Preprocessing(input_size=32), ClassNames.generic(10), sip_layers=("conv3",))
    calibrate(classifier, items, tmp_path / "stats.npz", batch_size=4, crop=False)
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert module.training  # the caller's mode is restored


def _small_statistics(tmp_path):
    from sipgrad import Classifier, Preprocessing
    from sipgrad.models import ClassNames
    from tests.conftest import make_small_cnn

    module = make_small_cnn(seed=0)
    rng = np.random.default_rng(0)
    items = []
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        items.append((tmp_path / f"{i}.png", i % 2))
    classifier = Classifier.wrap(module, Preprocessing(input_size=32), ClassNames.generic(10), name="small",
                                 sip_layers=("conv3",))
    return classifier, calibrate(classifier, items, tmp_path / "stats.npz", batch_size=4, crop=False)


def test_statistics_errors_name_what_is_wrong(tmp_path):
    from sipgrad.errors import SipgradError
    from tests.conftest import make_small_cnn

    classifier, statistics = _small_statistics(tmp_path)
    with pytest.raises(SipgradError, match="is a folder; give the .npz statistics file"):
        SIPStatistics.load(tmp_path)
    # The same architecture and name with other weights: not "computed for small, not for this small model".
    with pytest.raises(SipgradError, match="computed for small with other weights"):
        statistics.check_model(make_small_cnn(seed=1), "small")
    # A damaged array: its name and shape, not a broadcasting error deep inside SIP.
    arrays = dict(np.load(tmp_path / "stats.npz", allow_pickle=False))
    arrays["0/class_pvalues"] = arrays["0/class_pvalues"][:, :3]
    np.savez(tmp_path / "damaged.npz", **arrays)
    with pytest.raises(SipgradError, match=r"array 0/class_pvalues \(layer conv3\) has shape \(\d+, 3\), expected"):
        SIPStatistics.load(tmp_path / "damaged.npz")
    arrays = dict(np.load(tmp_path / "stats.npz", allow_pickle=False))
    arrays["0/mean"] = arrays["0/mean"][:3]
    np.savez(tmp_path / "short_mean.npz", **arrays)
    with pytest.raises(SipgradError, match=r"arrays of layer conv3 must be one and the same length, got 0/mean \(3,\)"):
        SIPStatistics.load(tmp_path / "short_mean.npz")
