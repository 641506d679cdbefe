"""Recording internal gradients, plain and under SIP, and analysing many images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sipgrad import SIP, Classifier
from sipgrad.analysis import analyze_gradients, channel_pca, concat_analyses, record_gradients, save_analyses
from sipgrad.errors import SipgradError
from tests.conftest import make_small_cnn

LAYERS = ("conv2", "conv3")


def _autograd_reference(model, inputs, targets, layer):
    """The gradient at ``layer``'s output, taken directly with autograd."""
    outputs = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, a, out: outputs.update(out=out))
    try:
        logits = model(inputs)
        grad, = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), outputs["out"])
    finally:
        handle.remove()
    return grad


def test_recorded_gradients_equal_autograd(small_batch):
    # An out-of-place copy for the reference: in-place ReLUs overwrite the hooked outputs.
    model, reference_model = make_small_cnn(), make_small_cnn(inplace=False)
    targets = torch.tensor([0, 3, 3, 7])
    recorded = record_gradients(model, small_batch, target=targets, layers=LAYERS)
    assert recorded.layers == LAYERS and recorded.sip is None
    torch.testing.assert_close(recorded.targets, targets)
    for layer in LAYERS:
        expected = _autograd_reference(reference_model, small_batch, targets, layer)
        torch.testing.assert_close(recorded.gradients[layer], expected)
    assert all(p.grad is None for p in model.parameters())  # parameters' gradients untouched
    assert not model._forward_hooks and not model.conv2._forward_hooks  # hooks gone


def test_recorded_gradients_under_sip_are_the_filtered_ones(small_batch):
    model = make_small_cnn()
    recorded = record_gradients(model, small_batch, layers=LAYERS, sip="topq:0.25")
    assert recorded.sip == "topq:0.25"
    # With SIP on conv3 (24 channels), exactly floor(0.25*24) = 6 channels per image stay non-zero.
    nonzero = recorded.gradients["conv3"].abs().sum(dim=(2, 3)) > 0
    assert nonzero.sum(dim=1).tolist() == [6] * small_batch.shape[0]
    # Same as the hook's own mask, seen from inside a SIP context.
    with SIP(Classifier.wrap(model), "topq:0.25", layers=LAYERS) as sip:
        x = small_batch.clone().requires_grad_(True)
        model(x).gather(1, recorded.targets[:, None]).sum().backward()
    assert torch.equal(sip.hook.last_keep["conv3"], nonzero)


def test_analysis_batches_do_not_change_results(small_batch):
    model = make_small_cnn()
    whole = analyze_gradients(model, small_batch, layers=LAYERS, sip="topq:0.5", batch_size=4)
    pieces = analyze_gradients(model, small_batch, layers=LAYERS, sip="topq:0.5", batch_size=3)
    for layer in LAYERS:
        torch.testing.assert_close(whole.spectra[layer].singular_values, pieces.spectra[layer].singular_values,
                                   atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(whole.channel_vectors[layer], pieces.channel_vectors[layer])
    joined = concat_analyses([analyze_gradients(model, small_batch[:1], layers=LAYERS, sip="topq:0.5"),
                              analyze_gradients(model, small_batch[1:], layers=LAYERS, sip="topq:0.5")])
    torch.testing.assert_close(joined.spectra["conv3"].effective_rank, whole.spectra["conv3"].effective_rank)
    torch.testing.assert_close(joined.targets, whole.targets)
    with pytest.raises(SipgradError, match="same layers and SIP config"):
        concat_analyses([whole, analyze_gradients(model, small_batch, layers=LAYERS)])
    rows = whole.summary()
    assert [r["layer"] for r in rows] == list(LAYERS) and rows[0]["sip"] == "topq:0.5"
    assert all(1.0 <= r["effective rank"] <= r["rank bound"] for r in rows)


def test_sip_concentrates_the_gradient(small_batch):
    """Keeping a quarter of the channels leaves fewer directions: the effective rank drops."""
    model = make_small_cnn()
    plain = analyze_gradients(model, small_batch, layers=("conv3",))
    filtered = analyze_gradients(model, small_batch, layers=("conv3",), sip="topq:0.25")
    assert (filtered.spectra["conv3"].effective_rank < plain.spectra["conv3"].effective_rank).all()
    assert filtered.spectra["conv3"].singular_values.shape[1] == plain.spectra["conv3"].singular_values.shape[1]
    # At most 6 channels are non-zero, so at most 6 singular values are.
    assert (filtered.spectra["conv3"].singular_values[:, 6:] < 1e-6).all()


def test_channel_pca_and_npz(tmp_path, small_batch):
    model = make_small_cnn()
    analyses = [analyze_gradients(model, small_batch, layers=LAYERS, sip=spec) for spec in (None, "topq:0.25")]
    pca = channel_pca(analyses[0].channel_vectors["conv3"], components=3)
    assert pca["components"].shape == (3, 24)
    assert np.all(np.diff(pca["explained_variance_ratio"]) <= 1e-12) and pca["explained_variance_ratio"].sum() <= 1 + 1e-9
    path = tmp_path / "out" / "gradients.npz"
    save_analyses(str(path), analyses)
    stored = np.load(path)  # no pickle needed
    np.testing.assert_allclose(stored["topq:0.25/conv3/effective_rank"],
                               analyses[1].spectra["conv3"].effective_rank.numpy())
    assert stored["none/conv2/pca_explained_variance_ratio"].shape == (4,)
    assert list(stored["layers"]) == list(LAYERS)
    assert [p.name for p in path.parent.iterdir()] == ["gradients.npz"]  # no temp file left behind
    same = channel_pca(analyses[0].channel_vectors["conv3"][:1].repeat(3, 1))
    assert not same["explained_variance_ratio"].any()  # identical images: zeros, not NaN
    with pytest.raises(SipgradError, match="two images"):
        channel_pca(analyses[0].channel_vectors["conv3"][:1])


def test_unknown_layer_is_a_clear_error(small_batch):
    with pytest.raises(SipgradError, match="no layer named"):
        record_gradients(make_small_cnn(), small_batch, layers=("conv9",))


def test_channel_vectors_are_position_means_and_centre_reaches_the_spectrum(small_batch):
    from sipgrad.analysis.spectrum import gradient_spectrum

    model = make_small_cnn()
    recorded = record_gradients(model, small_batch, layers=LAYERS)
    for centre in (True, False):
        analysis = analyze_gradients(model, small_batch, layers=LAYERS, centre=centre, batch_size=3)
        for layer in LAYERS:
            grad = recorded.gradients[layer]
            torch.testing.assert_close(analysis.channel_vectors[layer], grad.mean(dim=(2, 3)))
            expected = gradient_spectrum(grad, centre=centre).singular_values
            torch.testing.assert_close(analysis.spectra[layer].singular_values, expected, atol=1e-5, rtol=1e-4)


def test_channel_pca_does_not_depend_on_numpys_global_generator():
    # 40 x 1280 is where scikit-learn's default would pick its randomized solver (seeded from numpy's global
    # generator): the components must come out the same whatever that generator's state.
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((40, 8)) @ rng.standard_normal((8, 1280)) + 0.3 * rng.standard_normal((40, 1280))
    results = []
    for state in (0, 1):
        np.random.seed(state)
        results.append(channel_pca(vectors, components=10))
    assert np.array_equal(results[0]["explained_variance_ratio"], results[1]["explained_variance_ratio"])
    assert np.array_equal(results[0]["components"], results[1]["components"])


@pytest.mark.parametrize("empty", ["", " , ", ()])
def test_an_empty_layer_list_is_an_error_not_the_default_layers(empty):
    from sipgrad.analysis.gradients import analysis_layers

    with pytest.raises(SipgradError, match="at least one layer"):
        analysis_layers(make_small_cnn(), empty)
    assert analysis_layers(make_small_cnn(), None) == analysis_layers(make_small_cnn(), "conv2, conv3")


def test_a_layer_without_a_spatial_map_is_named(small_batch):
    # A Linear layer's gradient is B x K: the spectrum's own complaint ("expected a B x C x H x W gradient")
    # named neither the layer nor what to do.
    with pytest.raises(SipgradError, match=r"layer 'fc' gives a \(4, 10\) gradient, not a B x C x H x W map"):
        analyze_gradients(make_small_cnn(), small_batch, layers=("conv3", "fc"))


@pytest.mark.parametrize("crop", [False, True])
def test_the_figures_image_is_the_part_the_components_cover(crop):
    """With crop the components cover the centre crop; the figure must not stretch them over the whole photo."""
    from sipgrad import Preprocessing

    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
    classifier = Classifier.wrap(make_small_cnn(), Preprocessing(input_size=32, resize_size=36))
    analysis = analyze_gradients(classifier, [photo], layers=("conv3",), components=1, crop=crop)
    # 60 x 90 resized to 36 x 54 (x 0.6), centre crop 32 x 32 at left 11, top 2: in the original,
    # columns 11 / 0.6 = 18.3 to 43 / 0.6 = 71.7 and rows 3.3 to 56.7, rounded to whole pixels.
    expected = photo[3:57, 18:72] if crop else photo
    assert analysis.images[0].shape == expected.shape
    assert np.array_equal(analysis.images[0], expected)
