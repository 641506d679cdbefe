import pytest
import torch

from sipgrad.evaluation import EvalSettings, Evaluator, builtin_cases
from sipgrad.evaluation import metrics


def test_perturbation_scores_equal_separate_curves_on_the_plain_model(lite0):
    """The evaluator's fast path (shared end points, chunks, channels-last on CPU) changes
    only rounding: its scores equal four plain NCHW ``perturbation_curves`` calls."""
    cases = builtin_cases("photos", lite0.classes)[:2]
    evaluator = Evaluator(lite0, EvalSettings(methods=("grad",), sips=("none",), steps=3))
    records = evaluator.evaluate(cases, keep_maps=True)
    inputs, _, _, _ = evaluator.prepare(cases)
    maps = torch.stack([torch.as_tensor(r["_map"]) for r in records])
    targets = torch.tensor([c.target for c in cases])
    with torch.inference_mode():
        for key, mode, first in (("deletion_auc", "deletion", True), ("deletion_lerf_auc", "deletion", False),
                                 ("insertion_auc", "insertion", True), ("insertion_lerf_auc", "insertion", False)):
            curves = metrics.perturbation_curves(lite0.module, inputs, maps, targets, steps=3, mode=mode,
                                                 most_relevant_first=first, chunk=1)
            expected = metrics.curve_auc(curves)
            assert [r[key] for r in records] == pytest.approx(expected.tolist(), abs=1e-4), key
