"""The perturbation passes' model: folded, chunked, optionally compiled; same logits."""

from __future__ import annotations

import warnings

import torch

from sipgrad.evaluation.predictor import CPU_CHUNK, PerturbationPredictor
from tests.conftest import make_small_cnn


def test_compiled_and_padded_predictor_matches_the_model():
    model = make_small_cnn()
    rows = torch.randn(CPU_CHUNK + 2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(rows)
    eager = PerturbationPredictor(model, rows)
    compiled = PerturbationPredictor(model, rows, compile=True)
    assert eager.chunk == CPU_CHUNK and not eager.compiled
    with torch.inference_mode():
        for predictor in (eager, compiled):
            # A full chunk, then a remainder (padded to the chunk when compiled), as the curves call it.
            logits = torch.cat([predictor(rows[:CPU_CHUNK]), predictor(rows[CPU_CHUNK:])])
            torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    assert compiled.compiled  # this machine has a C++ compiler; the fallback is tested below
    assert isinstance(model.bn, torch.nn.BatchNorm2d)  # the model itself is untouched


def test_a_failing_compile_falls_back_with_one_warning(monkeypatch):
    model = make_small_cnn()
    rows = torch.randn(3, 3, 32, 32)
    predictor = PerturbationPredictor(model, rows, compile=True)

    def broken(_rows):
        raise RuntimeError("no C++ compiler\nmore detail")

    predictor._compiled = broken
    assert predictor.compiled
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.inference_mode():
            first, second = predictor(rows), predictor(rows)
    assert [str(w.message) for w in caught] == [
        "torch.compile failed (RuntimeError: no C++ compiler); running the perturbation passes uncompiled"]
    assert not predictor.compiled
    with torch.no_grad():
        torch.testing.assert_close(first, model(rows), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(first, second)
