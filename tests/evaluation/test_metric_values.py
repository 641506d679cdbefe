"""Box metrics on cases where the usual symmetric test images hide a bug: non-square maps
(a swapped row/column or a division by the wrong side shows), boxes marked invalid that are
not empty, signed maps, and the insertion blur against the 2-D Gaussian written out.
Each test here was checked to fail on a mutant that the older tests let through
(benchmarks/saliency_mutations.py)."""

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sipgrad.evaluation import metrics
from sipgrad.evaluation.cases import pad_boxes


def test_pointing_game_on_a_wide_map_reads_row_and_column():
    # H = 10, W = 30: the maximum at (row 2, column 25) is flat index 85. Read as (col, row) it
    # would be (25, 2); divided by the height, (8, 5): both far from the box around (2, 25).
    maps = torch.zeros(2, 10, 30)
    maps[0, 2, 25] = 1.0
    maps[1, 7, 4] = 1.0
    boxes, valid = pad_boxes([[(24.0, 1.0, 27.0, 4.0)], [(3.0, 6.0, 5.0, 8.0)]])  # cols 24..26 rows 1..3; cols 3..4 rows 6..7
    assert metrics.pointing_game(maps, boxes, valid, tolerance=0.0).tolist() == [True, True]
    moved = torch.zeros(2, 10, 30)
    moved[0, 2, 28] = 1.0  # two columns right of the box: a miss at tolerance 1, a hit at 2
    moved[1, 9, 4] = 1.0  # two rows below the box
    assert metrics.pointing_game(moved, boxes, valid, tolerance=1.0).tolist() == [False, False]
    assert metrics.pointing_game(moved, boxes, valid, tolerance=2.0).tolist() == [True, True]


def test_centre_baseline_points_at_row_h_over_2_and_column_w_over_2():
    # H = 10, W = 30: the centre pixel is (row 5, column 15), not (row 15, column 5).
    boxes, valid = pad_boxes([[(15.0, 5.0, 16.0, 6.0)], [(5.0, 5.0, 6.0, 6.0)]])
    assert metrics.centre_baseline(boxes, valid, 10, 30, tolerance=0.0).tolist() == [True, False]
    assert metrics.centre_baseline(boxes, valid, 10, 30, tolerance=10.0).tolist() == [True, True]
    # the tolerance is a Euclidean distance: centre (10, 10) of a 20 x 20 image to pixel (2, 2) is 11.31
    boxes, valid = pad_boxes([[(9.0, 9.0, 11.0, 11.0)], [(0.0, 0.0, 3.0, 3.0)]])
    assert metrics.centre_baseline(boxes, valid, 20, 20, tolerance=0.0).tolist() == [True, False]
    assert metrics.centre_baseline(boxes, valid, 20, 20, tolerance=11.2).tolist() == [True, False]
    assert metrics.centre_baseline(boxes, valid, 20, 20, tolerance=11.4).tolist() == [True, True]


def test_boxes_marked_invalid_count_for_nothing_even_when_not_empty():
    # The validity mask, not the padding's zero size, decides: a real box marked invalid is ignored.
    boxes = torch.tensor([[[0.0, 0.0, 2.0, 2.0], [15.0, 15.0, 20.0, 20.0]]])
    valid = torch.tensor([[True, False]])
    mask = metrics.box_mask(boxes, valid, 20, 20)
    assert mask.sum().item() == 4 and mask[0, :2, :2].all()
    maps = torch.zeros(1, 20, 20)
    maps[0, 17, 17] = 1.0
    assert not metrics.pointing_game(maps, boxes, valid, tolerance=1.0)[0]
    assert metrics.pointing_game(maps, boxes, torch.tensor([[True, True]]), tolerance=1.0)[0]


def test_mu_in_counts_magnitude_of_signed_maps():
    boxes, valid = pad_boxes([[(0.0, 0.0, 10.0, 10.0)]])  # 100 of 400 pixels
    mask = metrics.box_mask(boxes, valid, 20, 20)
    maps = torch.ones(1, 20, 20)
    maps[0, :10, :10] = -3.0  # |.| inside 300, outside 300
    share, weighted = metrics.mu_in(maps, mask)
    assert share.item() == 0.5 and weighted.item() == 2.0
    # energy counts only positive mass: none of it inside
    assert metrics.energy_pointing_game(maps, mask).item() == 0.0


def test_insertion_blur_is_the_normalised_separable_gaussian():
    sigma, radius = 8.0, 24
    image = torch.zeros(1, 1, 64, 64, dtype=torch.float64)
    image[0, 0, 32, 32] = 1.0
    blurred = metrics._blur(image, sigma)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-x * x / (2 * sigma * sigma))
    kernel = kernel / kernel.sum()
    expected = torch.zeros(64, 64, dtype=torch.float64)
    expected[32 - radius:32 + radius + 1, 32 - radius:32 + radius + 1] = torch.outer(kernel, kernel)
    assert torch.allclose(blurred[0, 0], expected, atol=1e-15)
    assert math.isclose(blurred.sum().item(), 1.0, rel_tol=1e-12)
    constant = torch.full((1, 3, 20, 30), 0.7, dtype=torch.float64)  # replicate padding: stays constant
    assert torch.allclose(metrics._blur(constant), constant, atol=1e-12)


def test_mu_in_w_on_a_wide_image_divides_by_the_whole_area():
    # H = 10, W = 30 (300 pixels), a 5 x 5 box: a uniform map scores mu_in = 25 / 300 and mu_in_w = 1;
    # a map wholly inside the box scores 1 and 300 / 25 = 12.
    boxes, valid = pad_boxes([[(2.0, 3.0, 7.0, 8.0)]])
    mask = metrics.box_mask(boxes, valid, 10, 30)
    share, weighted = metrics.mu_in(torch.ones(1, 10, 30), mask)
    assert math.isclose(share.item(), 25 / 300, rel_tol=1e-6) and math.isclose(weighted.item(), 1.0, rel_tol=1e-6)
    share, weighted = metrics.mu_in(mask.float(), mask)
    assert share.item() == 1.0 and math.isclose(weighted.item(), 12.0, rel_tol=1e-6)


def test_a_box_that_covers_no_pixel_centre_is_never_hit():
    # (5.1, 5.1, 5.4, 5.4) holds no pixel centre (the nearest is 5.5): its mask is empty, and the pointing
    # game and the centre baseline agree with the mask rather than score a hit beside it.
    boxes, valid = pad_boxes([[(5.1, 5.1, 5.4, 5.4)]])
    assert not metrics.box_mask(boxes, valid, 20, 20).any()
    maps = torch.zeros(1, 20, 20)
    maps[0, 5, 5] = 1.0
    assert not metrics.pointing_game(maps, boxes, valid, tolerance=15.0)[0]
    assert not metrics.centre_baseline(boxes, valid, 20, 20, tolerance=15.0)[0]


def test_each_step_changes_the_nearest_whole_number_of_pixels():
    # 7 pixels in 3 steps: 2.33 and 4.67 pixels are 2 and 5 (rounded), not 2 and 4 (truncated).
    inputs = torch.zeros(1, 3, 1, 7)
    inputs[0, 0] = 1.0
    maps = torch.arange(7.0, 0.0, -1.0).view(1, 1, 7)

    def model(x):  # class-0 logit: how many pixels are left
        return torch.stack((x[:, 0].sum(dim=(1, 2)), torch.zeros(x.shape[0])), dim=1)

    expected = torch.sigmoid(torch.tensor([7.0, 5.0, 2.0, 0.0]))
    curve = metrics.perturbation_curves(model, inputs, maps, torch.tensor([0]), steps=3, mode="deletion")
    assert torch.allclose(curve[0], expected)
    curve_set = metrics.perturbation_curve_set(model, inputs, maps, torch.tensor([0]), steps=3)
    assert torch.allclose(curve_set["deletion"][0], expected)


def _torchray_pointing(mask: torch.Tensor, row: int, col: int, tolerance: float, closed: bool) -> bool:
    """TorchRay's ``PointingGame.evaluate`` written out: a hit when the disc around the point meets the mask.

    TorchRay's acceptance region is open (squared distance < tolerance^2); ``closed`` uses <= instead.
    """
    rows, cols = torch.meshgrid(torch.arange(mask.shape[0]), torch.arange(mask.shape[1]), indexing="ij")
    squared = ((rows - row) ** 2 + (cols - col) ** 2).float()
    accept = squared <= tolerance ** 2 if closed else squared < tolerance ** 2
    return bool((mask & accept).any())


@settings(max_examples=60, deadline=None)
@given(height=st.integers(4, 40), width=st.integers(4, 40), data=st.data())
def test_pointing_game_is_torchrays_brute_force_with_a_closed_disc(height, width, data):
    # The pointing game measures box-to-point distances in closed form; TorchRay tests every mask pixel.
    # They agree on every point when TorchRay's disc is closed; with its own open disc they differ only
    # for a maximum exactly `tolerance` px from the nearest box pixel (docs/evaluation.md, Metrics).
    x0, x1 = sorted(data.draw(st.lists(st.floats(0, width), min_size=2, max_size=2)))
    y0, y1 = sorted(data.draw(st.lists(st.floats(0, height), min_size=2, max_size=2)))
    row, col = data.draw(st.integers(0, height - 1)), data.draw(st.integers(0, width - 1))
    tolerance = data.draw(st.sampled_from([0.0, 1.0, 2.5, 5.0, 15.0]))
    boxes, valid = pad_boxes([[(x0, y0, x1, y1)]])
    mask = metrics.box_mask(boxes, valid, height, width)[0]
    maps = torch.zeros(1, height, width)
    maps[0, row, col] = 1.0
    ours = bool(metrics.pointing_game(maps, boxes, valid, tolerance)[0])
    assert ours == _torchray_pointing(mask, row, col, tolerance, closed=True)
    if ours != _torchray_pointing(mask, row, col, tolerance, closed=False):
        nearest = min(((r - row) ** 2 + (c - col) ** 2) for r, c in mask.nonzero().tolist())
        assert nearest == tolerance ** 2


def test_a_maximum_exactly_at_the_tolerance_is_a_hit():
    # 15 px straight right of a one-pixel box, and (9, 12) away: on the circle, so a hit (TorchRay: a miss).
    boxes, valid = pad_boxes([[(20.0, 20.0, 21.0, 21.0)], [(20.0, 20.0, 21.0, 21.0)]])
    maps = torch.zeros(2, 48, 48)
    maps[0, 20, 35] = 1.0
    maps[1, 29, 32] = 1.0
    assert metrics.pointing_game(maps, boxes, valid, tolerance=15.0).tolist() == [True, True]
    assert metrics.pointing_game(maps, boxes, valid, tolerance=14.99).tolist() == [False, False]
