import dataclasses

import numpy as np
import pytest
import torch

from sipgrad.evaluation import EvalSettings, Evaluator, builtin_cases
from sipgrad.evaluation import metrics
from tests.evaluation.png_cases import random_png_cases


def test_perturbation_scores_equal_separate_curves_on_the_plain_model(lite0):
    """The evaluator's fast path (shared end points, chunks, channels-last on CPU) changes
    only rounding: its scores equal four plain NCHW ``perturbation_curves`` calls."""
    cases = builtin_cases("photos", lite0.classes)[:2]
    evaluator = Evaluator(lite0, EvalSettings(methods=("grad",), sips=("none",), steps=3))
    records = evaluator.evaluate(cases, keep_maps=True)
    inputs = evaluator.prepare(cases).inputs
    maps = torch.stack([torch.as_tensor(r["_map"]) for r in records])
    targets = torch.tensor([c.target for c in cases])
    with torch.inference_mode():
        for key, mode, first in (("deletion_auc", "deletion", True), ("deletion_lerf_auc", "deletion", False),
                                 ("insertion_auc", "insertion", True), ("insertion_lerf_auc", "insertion", False)):
            curves = metrics.perturbation_curves(lite0.module, inputs, maps, targets, steps=3, mode=mode,
                                                 most_relevant_first=first, chunk=1)
            expected = metrics.curve_auc(curves)
            assert [r[key] for r in records] == pytest.approx(expected.tolist(), abs=1e-4), key


def _small_cases(tmp_path, count=4):
    return random_png_cases(tmp_path, count, lambda i: i % 10, lambda i: ((4.0, 4.0, 30.0, 30.0),))


def test_each_image_is_loaded_once_per_run_for_every_config(small_classifier, tmp_path, monkeypatch):
    from sipgrad.evaluation import EvalSettings, evaluate
    from sipgrad.evaluation import cases as cases_module

    loads = []
    original = cases_module.Case.load
    monkeypatch.setattr(cases_module.Case, "load", lambda self: loads.append(self.case_id) or original(self))
    settings = EvalSettings(methods=("grad", "gradcam"), sips=("none", "topq:0.25", "pca:2"), steps=2)
    steps = []
    records = evaluate(small_classifier, _small_cases(tmp_path), settings, tmp_path / "out", dataset="t",
                       batch_size=3, progress=steps.append)
    assert len(records) == 4 * 6
    assert sorted(loads) == ["c0", "c1", "c2", "c3"]  # once each, not once per config
    # progress moves after every config of every batch (2 batches x 6 configs), and adds up to the cases
    assert steps[0] == 0 and len(steps) == 1 + 2 * 6 and sum(steps) == pytest.approx(4)


def test_an_unreadable_image_is_recorded_and_the_rest_evaluated(small_classifier, tmp_path):
    from sipgrad.evaluation import EvalSettings, evaluate

    cases = _small_cases(tmp_path)
    cases[1].image.write_bytes(b"not an image")
    settings = EvalSettings(methods=("grad",), sips=("none", "topq:0.25"), steps=0)
    records = evaluate(small_classifier, cases, settings, tmp_path / "out", dataset="t", batch_size=2)
    failed = [r for r in records if "error" in r]
    assert {r["case"] for r in failed} == {"c1"} and len(failed) == 2
    assert "1.png" in failed[0]["error"] and "\n" not in failed[0]["error"]
    assert sum("energy" in r for r in records) == 6  # 3 readable cases x 2 configs
    # a later run retries the failed image once it is fixed
    from PIL import Image

    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(cases[1].image)
    again = evaluate(small_classifier, cases, settings, tmp_path / "out", dataset="t", batch_size=2)
    assert not any("error" in r for r in again) and len(again) == 8


def test_a_map_holding_nan_is_recorded_as_an_error_not_scored(small_classifier, tmp_path, monkeypatch):
    from sipgrad.attribution.engine import BatchAttribution
    from sipgrad.evaluation import EvalSettings, evaluate

    plain_maps = BatchAttribution.maps

    def poisoned(self, *args, **kwargs):
        maps = plain_maps(self, *args, **kwargs).clone()
        maps[0, 0, 0] = float("nan")  # the first row of every batch
        return maps

    monkeypatch.setattr(BatchAttribution, "maps", poisoned)
    settings = EvalSettings(methods=("grad",), sips=("none",), steps=2)
    records = evaluate(small_classifier, _small_cases(tmp_path), settings, tmp_path / "out", dataset="t",
                       batch_size=2)
    failed = [r for r in records if "error" in r]
    assert {r["case"] for r in failed} == {"c0", "c2"}  # the first of each batch of 2
    assert failed[0]["error"] == "the map holds NaN or inf values, so it was not scored"
    assert all(np.isfinite(r["energy"]) and np.isfinite(r["deletion_auc"]) for r in records if "error" not in r)


def test_resume_refuses_records_of_other_weights(small_classifier, tmp_path):
    import torch

    from sipgrad.evaluation import EvalSettings, evaluate
    from sipgrad.errors import SipgradError

    cases = _small_cases(tmp_path, 2)
    settings = EvalSettings(methods=("grad",), steps=0)
    evaluate(small_classifier, cases, settings, tmp_path / "out", dataset="t")
    with torch.no_grad():
        small_classifier.module.fc.bias.add_(1.0)
    with pytest.raises(SipgradError, match="model weights differs"):
        evaluate(small_classifier, cases, settings, tmp_path / "out", dataset="t")


@pytest.mark.parametrize(("method", "options"), [("smoothgrad", {"smoothgrad_samples": 2}),
                                                  ("ig", {"ig_baseline": "noise", "ig_steps": 3})])
def test_a_random_methods_record_does_not_depend_on_the_cases_row_in_its_batch(small_classifier, tmp_path,
                                                                               method, options):
    """Each case's noise comes from its id: batch size, resumed runs (skips shift the rows) and shards must not
    change its map; the gallery's recomputed map is the scored one; two cases get different noise."""
    cases = _small_cases(tmp_path, count=3)
    evaluator = Evaluator(small_classifier, EvalSettings(methods=(method,), sips=("none",), steps=0,
                                                         method_options=options))
    together = evaluator.evaluate(cases, keep_maps=True)  # c2 is row 2
    alone = evaluator.evaluate(cases[2:], keep_maps=True)  # c2 is row 0
    assert together[2]["case"] == alone[0]["case"] == "c2"
    np.testing.assert_allclose(together[2]["_map"], alone[0]["_map"], rtol=1e-5, atol=1e-7)
    assert together[2]["energy"] == pytest.approx(alone[0]["energy"], abs=1e-6)
    recomputed = evaluator.maps(evaluator.prepare(cases), evaluator.configs[0]).cpu().numpy()
    np.testing.assert_allclose(recomputed[2], together[2]["_map"], rtol=1e-5, atol=1e-7)
    # the same image under another id gets other noise (the seed really is per case)
    twin = dataclasses.replace(cases[2], case_id="c2-twin")
    other = evaluator.evaluate([twin], keep_maps=True)[0]["_map"]
    assert np.abs(other - together[2]["_map"]).max() > 1e-3 * np.abs(together[2]["_map"]).max()


def test_a_run_folder_from_before_case_id_noise_is_not_resumed_with_random_methods(small_classifier, tmp_path):
    import json

    from sipgrad.errors import SipgradError
    from sipgrad.evaluation import evaluate

    cases = _small_cases(tmp_path, 2)
    for methods, options, refused in ((("smoothgrad",), {"smoothgrad_samples": 2}, True),
                                      (("grad",), {}, False)):
        out = tmp_path / methods[0]
        settings = EvalSettings(methods=methods, steps=0, method_options=options)
        evaluate(small_classifier, cases, settings, out, dataset="t")
        run_file = out / "run.json"
        identity = json.loads(run_file.read_text())
        assert ("noise" in identity) == refused  # only runs whose records depend on noise record how it is drawn
        identity.pop("noise", None)  # as a run written before noise came from case ids
        run_file.write_text(json.dumps(identity))
        if refused:
            with pytest.raises(SipgradError, match="the 'noise' setting differs .'row in batch' there"):
                evaluate(small_classifier, cases, settings, out, dataset="t")
        else:
            evaluate(small_classifier, cases, settings, out, dataset="t")  # grad: nothing random, resumes


def test_settings_cannot_change_after_construction():
    # describe() is the run's identity on disk: it must keep matching what the engines were built with.
    method_options, sip_options = {"ig_steps": 4}, {"gamma": 2.0}
    settings = EvalSettings(methods=("ig",), method_options=method_options, sip_options=sip_options)
    method_options["ig_steps"], sip_options["gamma"] = 8, 3.0
    assert settings.describe()["method_options"] == {"ig_steps": 4, "seed": 0, "smoothgrad_samples": 16}
    assert settings.options.ig_steps == 4
    assert settings.describe()["sip_options"] == {"gamma": "2.0"}
    with pytest.raises(TypeError):
        settings.method_options["ig_steps"] = 8


@pytest.mark.parametrize(("methods", "options", "noise"), [
    (("grad", "gradcam"), {}, False), (("ig",), {}, False), (("ig",), {"ig_baseline": "noise"}, True),
    (("grad", "smoothgrad"), {}, True)])
def test_a_run_records_its_noise_seeding_exactly_when_a_method_draws_noise(methods, options, noise):
    settings = EvalSettings(methods=methods, method_options=options)
    assert settings.draws_noise is noise and ("noise" in settings.describe()) is noise
