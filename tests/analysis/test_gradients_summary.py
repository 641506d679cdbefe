"""``GradientAnalysis.summary``: its medians over images are true medians.

``torch.Tensor.median`` returns the lower middle value, so with two images the "median"
column used to be their minimum; these tests pin the mean of the two middle values.
"""

from __future__ import annotations

import pytest
import torch

from sipgrad.analysis.gradients import GradientAnalysis, median
from sipgrad.analysis.spectrum import GradientSpectrum


def _analysis(ranks: list[float], explained: list[list[float]]) -> GradientAnalysis:
    count, width = len(ranks), len(explained[0])
    spectrum = GradientSpectrum(singular_values=torch.ones(count, width), explained=torch.tensor(explained),
                                effective_rank=torch.tensor(ranks), components=torch.zeros(count, 1, 2, 2),
                                loadings=torch.zeros(count, 1, 3))
    return GradientAnalysis({"conv": spectrum}, {"conv": torch.zeros(count, 3)}, torch.zeros(count, dtype=torch.long),
                            [f"image{i}" for i in range(count)], ("conv",))


def test_two_images_give_the_mean_of_both_not_the_minimum():
    row, = _analysis([10.0, 30.0], [[0.5, 0.25, 0.25, 0.0], [0.25, 0.25, 0.0, 0.5]]).summary(top=2)
    assert row["effective rank"] == pytest.approx(20.0)
    assert row["top-1 energy"] == pytest.approx(0.375)
    assert row["top-2 energy"] == pytest.approx(0.625)  # the mean of 0.75 and 0.5


def test_even_and_odd_counts():
    assert median(torch.tensor([4.0, 1.0, 3.0, 2.0])) == pytest.approx(2.5)
    assert median(torch.tensor([5.0, 1.0, 3.0])) == 3.0
    assert median(torch.tensor([7.0])) == 7.0
    row, = _analysis([1.0, 2.0, 3.0, 100.0], [[1.0]] * 4).summary(top=1)
    assert row["effective rank"] == pytest.approx(2.5)
