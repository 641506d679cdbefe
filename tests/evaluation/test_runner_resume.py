"""Resume, record order and keys, run.json identity, and per-row values when part of a batch is skipped."""

import json

import pytest
import torch

from sipgrad.errors import SipgradError
from sipgrad.evaluation import EvalSettings, Evaluator, evaluate
from sipgrad.evaluation.catalog import metric
from tests.evaluation.png_cases import random_png_cases

SETTINGS = EvalSettings(methods=("grad",), sips=("none", "topq:0.25"), steps=0)


def _strip(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


# Boxes in the 48 x 40 images: every area differs, and only c0 and c2 hold the centre (the centre baseline's 1).
BOXES = ((10.0, 8.0, 40.0, 32.0), (0.0, 0.0, 10.0, 9.0), (20.0, 15.0, 30.0, 26.0), (35.0, 28.0, 48.0, 40.0))


def _cases(tmp_path, count=4):
    return random_png_cases(tmp_path, count, lambda i: (3 * i) % 10, lambda i: (BOXES[i % 4],))


def test_resume_after_one_config_of_a_batch_gives_the_uninterrupted_records(small_classifier, tmp_path):
    """Interrupted after the first config of the first batch: those cases still miss the second config."""
    cases = _cases(tmp_path)
    whole = evaluate(small_classifier, cases, SETTINGS, tmp_path / "whole", dataset="t", batch_size=2)
    seen = []

    def interrupt(count):
        seen.append(count)
        if len(seen) == 2:  # progress(0) at the start, then the first config of the first batch
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate(small_classifier, cases, SETTINGS, tmp_path / "cut", dataset="t", batch_size=2, progress=interrupt)
    assert len((tmp_path / "cut" / "records.jsonl").read_text().splitlines()) == 2
    resumed = evaluate(small_classifier, cases, SETTINGS, tmp_path / "cut", dataset="t", batch_size=2)
    assert _strip(resumed) == _strip(whole)


def test_records_are_ordered_by_case_then_config(small_classifier, tmp_path):
    records = evaluate(small_classifier, _cases(tmp_path, 3), SETTINGS, tmp_path / "out", dataset="t", batch_size=2)
    assert [(r["case"], r["config"]) for r in records] == [
        (f"c{i}", config) for i in range(3) for config in ("grad/none", "grad/topq:0.25")]
    on_disk = [json.loads(line) for line in (tmp_path / "out" / "records.jsonl").read_text().splitlines()]
    assert _strip(on_disk) == _strip(records)


def test_a_run_with_fewer_cases_returns_only_its_cases(small_classifier, tmp_path):
    cases = _cases(tmp_path, 3)
    evaluate(small_classifier, cases, SETTINGS, tmp_path / "out", dataset="t", limit=3)
    with pytest.warns(UserWarning, match=r"resuming in .*out: 2 of 2 cases were already done"):  # said, not silent
        fewer = evaluate(small_classifier, cases, SETTINGS, tmp_path / "out", dataset="t", limit=2)
    assert sorted({r["case"] for r in fewer}) == ["c0", "c1"] and len(fewer) == 4


def test_skipped_rows_leave_the_other_rows_values_alone(small_classifier, tmp_path):
    """With the first case done under one config, every other case's record (box fraction, centre baseline,
    probability, predicted class, scores) is the one it gets in a full batch."""
    cases = _cases(tmp_path)
    evaluator = Evaluator(small_classifier, EvalSettings(methods=("grad",), sips=("none",), steps=1))
    full = _strip(evaluator.evaluate(cases))
    partial = _strip(evaluator.evaluate(cases, skip={("c0", "grad/none")}))
    assert [r["case"] for r in partial] == ["c1", "c2", "c3"]
    assert len({r["box_fraction"] for r in full}) == 4 and len({r["predicted"] for r in full}) > 1
    assert [r["centre"] for r in full] == [1.0, 0.0, 1.0, 0.0]
    for got, expected in zip(partial, full[1:]):
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            assert got[key] == (pytest.approx(value, abs=1e-6) if isinstance(value, float) else value), key


def test_deletion_aopc_is_the_mean_drop_of_the_deletion_curve(small_classifier, tmp_path):
    """AOPC = mean over steps 0..S of (p_0 - p_k) on the most-relevant-first deletion curve, by hand."""
    from sipgrad.evaluation import metrics

    cases = _cases(tmp_path, 2)
    evaluator = Evaluator(small_classifier, EvalSettings(methods=("grad",), sips=("none",), steps=3))
    records = evaluator.evaluate(cases, keep_maps=True)
    inputs = evaluator.prepare(cases).inputs
    maps = torch.stack([torch.as_tensor(r["_map"]) for r in records])
    targets = torch.tensor([c.target for c in cases])
    with torch.inference_mode():
        curves = metrics.perturbation_curves(small_classifier.module.eval(), inputs, maps, targets, steps=3,
                                             mode="deletion", most_relevant_first=True, chunk=1)
    for record, curve in zip(records, curves.tolist()):
        assert record["deletion_aopc"] == pytest.approx(sum(curve[0] - p for p in curve) / len(curve), abs=1e-5)
        assert record["deletion_auc"] == pytest.approx(float(metrics.curve_auc(torch.tensor([curve]))[0]), abs=1e-5)


@pytest.mark.parametrize("change", [{"steps": 1}, {"crop": True}, {"tolerance": 3.0}])
def test_other_steps_crop_or_tolerance_are_refused(small_classifier, tmp_path, change):
    cases = _cases(tmp_path, 1)
    evaluate(small_classifier, cases, SETTINGS, tmp_path / "out", dataset="t")
    settings = EvalSettings(methods=("grad",), sips=("none", "topq:0.25"), **{"steps": 0, **change})
    with pytest.raises(SipgradError, match=f"'{next(iter(change))}' setting differs"):
        evaluate(small_classifier, cases, settings, tmp_path / "out", dataset="t")


def test_a_run_file_without_a_newer_key_is_resumed(small_classifier, tmp_path):
    """A key the run file lacks (written before it existed) is taken as equal, except "noise" (tested elsewhere)."""
    cases = _cases(tmp_path, 2)
    first = evaluate(small_classifier, cases, SETTINGS, tmp_path / "out", dataset="t")
    run_file = tmp_path / "out" / "run.json"
    identity = json.loads(run_file.read_text())
    del identity["method_options"]
    run_file.write_text(json.dumps(identity))
    again = evaluate(small_classifier, cases, SETTINGS, tmp_path / "out", dataset="t")
    assert _strip(again) == _strip(first)


def test_ig_with_a_noise_baseline_records_how_noise_is_seeded():
    noisy = EvalSettings(methods=("ig",), method_options={"ig_baseline": "noise"}).describe()
    assert noisy["noise"] == "seed and case id"
    assert "noise" not in EvalSettings(methods=("ig",)).describe()


def test_default_tolerance_is_15_px_at_224_scaled_to_the_input(small_classifier):
    assert Evaluator(small_classifier, EvalSettings(steps=0)).settings.tolerance == pytest.approx(15.0 * 32 / 224)
    assert Evaluator(small_classifier, EvalSettings(steps=0, tolerance=2.0)).settings.tolerance == 2.0


def test_crop_setting_is_the_transform_used(small_classifier, tmp_path):
    cases = _cases(tmp_path, 2)
    for crop in (False, True):
        prepared = Evaluator(small_classifier, EvalSettings(steps=0, crop=crop)).prepare(cases)
        expected = torch.stack([small_classifier.preprocessing.prepare(c.load(), crop=crop)[0] for c in cases])
        torch.testing.assert_close(prepared.inputs, expected, rtol=0, atol=0)


def test_best_follows_each_metrics_direction():
    assert metric("energy").best([0.2, 0.7, 0.5]) == 0.7
    assert metric("deletion_auc").best([0.2, 0.7, 0.5]) == 0.2
    assert metric("insertion_lerf_auc").best([0.2, 0.7]) == 0.2


def test_method_options_compare_by_what_they_meant(small_classifier, tmp_path):
    # A Python evaluate(...) made before the evaluation defaults recorded only the options it was given
    # (often {}), meaning MethodOptions' defaults (50 IG steps, 25 SmoothGrad samples). Such a folder resumes
    # with those options spelled out, and is refused, naming the setting, with today's defaults (32, 16).
    cases = _cases(tmp_path, 2)
    first = evaluate(small_classifier, cases, SETTINGS, tmp_path / "out", dataset="t")
    run_file = tmp_path / "out" / "run.json"
    identity = json.loads(run_file.read_text())
    run_file.write_text(json.dumps({**identity, "method_options": {}}))
    with pytest.raises(SipgradError, match="'method_options' setting differs"):
        evaluate(small_classifier, cases, SETTINGS, tmp_path / "out", dataset="t")
    old_meaning = EvalSettings(methods=("grad",), sips=("none", "topq:0.25"), steps=0,
                               method_options={"ig_steps": 50, "smoothgrad_samples": 25})
    again = evaluate(small_classifier, cases, old_meaning, tmp_path / "out", dataset="t")
    assert _strip(again) == _strip(first)
    # A default written out compares equal to one left out.
    run_file.write_text(json.dumps({**identity, "method_options": {**identity["method_options"],
                                                                   "ig_baseline": "black"}}))
    assert _strip(evaluate(small_classifier, cases, SETTINGS, tmp_path / "out", dataset="t")) == _strip(first)
