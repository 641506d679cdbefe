"""Each metric against cases computed by hand."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sipgrad.evaluation import metrics
from sipgrad.evaluation.cases import pad_boxes


def _single(box, height=20, width=20):
    return pad_boxes([[box]])


def test_box_mask_uses_pixel_centres():
    boxes, valid = pad_boxes([[(2.0, 3.0, 5.0, 4.0)], [(0.4, 0.0, 1.6, 2.0), (18.5, 18.5, 30.0, 30.0)], []])
    mask = metrics.box_mask(boxes, valid, 20, 20)
    assert mask[0].nonzero().tolist() == [[3, 2], [3, 3], [3, 4]]  # columns 2..4 (centres 2.5..4.5), row 3
    # (0.4..1.6) covers centres 0.5 and 1.5; (18.5..30) covers centres 18.5 and 19.5 (edges count as inside)
    assert mask[1, :2, :2].all() and mask[1, 18:, 18:].all() and mask[1].sum() == 4 + 4
    assert not mask[2].any()


def test_pointing_game_tolerance_is_a_disc():
    boxes, valid = _single((10.0, 10.0, 12.0, 12.0))  # pixels 10..11
    maps = torch.zeros(1, 20, 20)
    maps[0, 5, 5] = 1.0  # dx = dy = 5 from pixel (10, 10): distance 7.07
    assert not metrics.pointing_game(maps, boxes, valid, tolerance=7.0)[0]
    assert metrics.pointing_game(maps, boxes, valid, tolerance=7.1)[0]
    maps = torch.zeros(1, 20, 20)
    maps[0, 11, 3] = 1.0  # same row as the box, 7 columns left of it
    assert metrics.pointing_game(maps, boxes, valid, tolerance=7.0)[0]
    assert not metrics.pointing_game(maps, boxes, valid, tolerance=6.9)[0]


def test_a_flat_map_points_nowhere():
    """Its argmax is the first pixel, which used to hit any box near the top-left corner."""
    boxes, valid = pad_boxes([[(0.0, 0.0, 4.0, 4.0)]] * 3)
    maps = torch.zeros(3, 20, 20)
    maps[1] = 0.5  # flat but not zero
    maps[2, 1, 1] = 1.0  # a real maximum in the box
    assert metrics.pointing_game(maps, boxes, valid, tolerance=15.0).tolist() == [False, False, True]


def test_pointing_hits_any_of_several_boxes_and_ignores_padding():
    boxes, valid = pad_boxes([[(0.0, 0.0, 2.0, 2.0), (15.0, 15.0, 20.0, 20.0)], [(0.0, 0.0, 2.0, 2.0)]])
    maps = torch.zeros(2, 20, 20)
    maps[:, 17, 17] = 1.0
    assert metrics.pointing_game(maps, boxes, valid, tolerance=1.0).tolist() == [True, False]


def test_energy_and_mu_in():
    boxes, valid = _single((0.0, 0.0, 10.0, 10.0))  # a quarter of the 20 x 20 image
    mask = metrics.box_mask(boxes, valid, 20, 20)
    maps = torch.ones(1, 20, 20)
    maps[0, :10, :10] = 3.0
    maps[0, 15, 15] = -100.0  # negative mass counts for neither energy total nor inside
    energy = metrics.energy_pointing_game(maps, mask)
    assert energy.item() == pytest.approx(300 / (300 + 299))
    share, weighted = metrics.mu_in(torch.ones(1, 20, 20), mask)
    assert share.item() == pytest.approx(0.25) and weighted.item() == pytest.approx(1.0)
    assert metrics.energy_pointing_game(torch.zeros(1, 20, 20), mask).item() == 0.0


def _toy_model(inputs):
    """Logits whose class-0 score is the sum of channel 0: deleting bright pixels lowers it."""
    score = inputs[:, 0].sum(dim=(1, 2)) / 4.0
    return torch.stack((score, torch.zeros_like(score)), dim=1)


def test_deletion_curve_by_hand():
    inputs = torch.zeros(1, 3, 2, 2)
    inputs[0, 0] = torch.tensor([[4.0, 0.0], [0.0, 0.0]])
    maps = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    targets = torch.tensor([0])
    curve = metrics.perturbation_curves(_toy_model, inputs, maps, targets, steps=4, mode="deletion")
    start = torch.sigmoid(torch.tensor(1.0))  # softmax of (1, 0)
    assert torch.allclose(curve[0], torch.tensor([start, 0.5, 0.5, 0.5, 0.5]))
    lerf = metrics.perturbation_curves(_toy_model, inputs, maps, targets, steps=4, mode="deletion",
                                       most_relevant_first=False)
    assert torch.allclose(lerf[0], torch.tensor([start, start, start, start, 0.5]))
    assert metrics.curve_auc(curve).item() == pytest.approx((start.item() + 0.5) / 2 / 4 + 0.5 * 3 / 4)
    assert metrics.aopc(curve).item() == pytest.approx(4 * (start.item() - 0.5) / 5)


def test_batched_perturbation_equals_one_call_per_copy():
    torch.manual_seed(0)
    inputs, maps = torch.randn(3, 3, 8, 8), torch.rand(3, 8, 8)
    targets = torch.tensor([0, 1, 0])
    weights = torch.randn(2, 3 * 8 * 8)
    model = lambda x: x.flatten(1) @ weights.T  # noqa: E731
    batched = metrics.perturbation_curves(model, inputs, maps, targets, steps=5, mode="insertion", chunk=7)
    for i in range(3):
        single = metrics.perturbation_curves(model, inputs[i:i + 1], maps[i:i + 1], targets[i:i + 1], steps=5,
                                             mode="insertion", chunk=1)
        assert torch.allclose(batched[i], single[0], atol=1e-6)
    assert torch.allclose(batched[:, -1], model(inputs).softmax(1).gather(1, targets[:, None])[:, 0], atol=1e-6)


@settings(max_examples=15, deadline=None)
@given(batch=st.integers(1, 4), steps=st.integers(1, 6), chunk=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_curve_set_equals_four_separate_curves(batch, steps, chunk, seed):
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(batch, 3, 6, 5, generator=generator)
    # Coarse map values give ties, which both paths must break the same way.
    maps = torch.randint(0, 4, (batch, 6, 5), generator=generator).float()
    targets = torch.randint(0, 3, (batch,), generator=generator)
    weights = torch.randn(3, 3 * 6 * 5, generator=generator)
    calls = []

    def model(x):
        calls.append(x.shape[0])
        return x.flatten(1) @ weights.T

    curve_set = metrics.perturbation_curve_set(model, inputs, maps, targets, steps=steps, chunk=chunk)
    rows = batch * (4 * steps - 2)  # distinct model rows; every call but the one-row baseline is a full chunk
    assert calls == [chunk] * -(-rows // chunk) + [1]
    for name in metrics.CURVES:
        mode = name.split("_")[0]
        separate = metrics.perturbation_curves(model, inputs, maps, targets, steps=steps, mode=mode,
                                               most_relevant_first=not name.endswith("lerf"), chunk=chunk)
        assert curve_set[name].shape == (batch, steps + 1)
        assert torch.allclose(curve_set[name], separate, atol=1e-6), name


def _shape_sensitive_model(weights):
    """A linear model whose result depends on the call's batch size, as CPU kernels' rounding may
    (each row is reduced on its own, so a row's position within a call does not matter)."""
    return lambda x: (x.flatten(1)[:, None, :] * weights).sum(dim=-1) + 1e-4 * x.shape[0]


@settings(max_examples=10, deadline=None)
@given(batch=st.integers(2, 4), steps=st.integers(1, 4), chunk=st.integers(1, 7), seed=st.integers(0, 2**16))
def test_a_case_scores_the_same_alone_or_in_any_batch(batch, steps, chunk, seed):
    """Records must not depend on the batch size: each image's curves, energy and mu_in are
    bit-identical whether it is scored alone or with others."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(batch, 3, 6, 5, generator=generator)
    maps = torch.randint(0, 4, (batch, 6, 5), generator=generator).float() * torch.rand(batch, 6, 5, generator=generator)
    targets = torch.randint(0, 3, (batch,), generator=generator)
    model = _shape_sensitive_model(torch.randn(3, 3 * 6 * 5, generator=generator))
    boxes, valid = pad_boxes([[(1.0, 1.0, 4.0, 3.5)]] * batch)
    mask = metrics.box_mask(boxes, valid, 6, 5)
    together = metrics.perturbation_curve_set(model, inputs, maps, targets, steps=steps, chunk=chunk)
    energy, (share, weighted) = metrics.energy_pointing_game(maps, mask), metrics.mu_in(maps, mask)
    for i in range(batch):
        alone = metrics.perturbation_curve_set(model, inputs[i:i + 1], maps[i:i + 1], targets[i:i + 1],
                                               steps=steps, chunk=chunk)
        for name in metrics.CURVES:
            assert torch.equal(alone[name][0], together[name][i]), name
        assert torch.equal(metrics.energy_pointing_game(maps[i:i + 1], mask[i:i + 1])[0], energy[i])
        assert torch.equal(metrics.mu_in(maps[i:i + 1], mask[i:i + 1])[0][0], share[i])
        assert torch.equal(metrics.mu_in(maps[i:i + 1], mask[i:i + 1])[1][0], weighted[i])


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_scores_do_not_depend_on_the_thread_count(threads):
    """Every metric of the same maps is bit-identical under any number of threads (large maps, so
    parallel reductions really split)."""
    generator = torch.Generator().manual_seed(3)
    maps = torch.rand(2, 224, 224, generator=generator) ** 8
    inputs = torch.randn(2, 3, 224, 224, generator=generator)
    boxes, valid = pad_boxes([[(10.3, 20.2, 150.7, 200.1)], [(50.0, 50.0, 60.0, 60.0), (100.0, 100.0, 200.0, 224.0)]])
    weights = torch.randn(4, 3, generator=generator)
    model = lambda x: x.mean(dim=(2, 3)) @ weights.T  # noqa: E731

    def scores():
        mask = metrics.box_mask(boxes, valid, 224, 224)
        curves = metrics.perturbation_curve_set(model, inputs, maps, torch.tensor([0, 3]), steps=3, chunk=4)
        return torch.cat([metrics.energy_pointing_game(maps, mask), *metrics.mu_in(maps, mask),
                          metrics.pointing_game(maps, boxes, valid).float(), metrics._blur(inputs).flatten(),
                          *[curves[name].flatten() for name in metrics.CURVES]])

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        reference = scores()
        torch.set_num_threads(threads)
        assert torch.equal(scores(), reference)
    finally:
        torch.set_num_threads(before)


def test_maps_of_another_size_than_the_image_are_refused():
    """A transposed map has the right pixel count; scoring it would silently use the wrong pixels."""
    inputs, targets = torch.zeros(1, 3, 4, 6), torch.tensor([0])
    boxes, valid = _single((0.0, 0.0, 2.0, 2.0))
    mask = metrics.box_mask(boxes, valid, 4, 6)
    transposed = torch.rand(1, 6, 4)
    with pytest.raises(ValueError, match=r"maps must have shape \(1, 4, 6\) to match the inputs, got \(1, 6, 4\)"):
        metrics.perturbation_curves(_toy_model, inputs, transposed, targets, steps=2)
    with pytest.raises(ValueError, match="to match the inputs"):
        metrics.perturbation_curve_set(_toy_model, inputs, transposed, targets, steps=2)
    with pytest.raises(ValueError, match="to match the box mask"):
        metrics.energy_pointing_game(transposed, mask)
    with pytest.raises(ValueError, match="to match the box mask"):
        metrics.mu_in(torch.rand(2, 4, 6), mask)
