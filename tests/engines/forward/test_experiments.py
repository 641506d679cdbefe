"""The forward-gradient experiments as library calls: the documents `sipgrad fwdgrad` writes, built in one place."""

from __future__ import annotations

import json

import pytest

from sipgrad.datasets import load_digits
from sipgrad.engines.forward import experiments
from sipgrad.engines.forward.cosine import cosine_table
from sipgrad.engines.forward.experiments import (
    cosine_experiment,
    read_training_runs,
    sweep_configs,
    training_sweep,
)
from sipgrad.engines.forward.models import build_model
from sipgrad.errors import SipgradError


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_sweep_configs_run_backprop_once_and_forward_per_sampler():
    configs = sweep_configs("mlp", ["forward", "backprop", "forward"], ["gaussian", "activity"], soft=[False, False],
                            latent_bits=[None], directions=4, steps=5)
    assert [(c.gradient, c.sampler) for c in configs] == [
        ("forward", "gaussian"), ("forward", "activity"), ("backprop", "gaussian")]
    assert all(c.directions == 4 and c.steps == 5 and c.model == "mlp" for c in configs)
    binary = sweep_configs("binary-mlp", ["forward"], ["gaussian"], soft=[False, True], latent_bits=[None, 6])
    assert [(c.soft_weights, c.latent_bits) for c in binary] == [(False, None), (False, 6), (True, None), (True, 6)]


def test_training_sweep_document_is_the_runs_with_time_relative_to_backprop(digits, tmp_path):
    configs = sweep_configs("mlp", ["forward", "backprop"], ["gaussian"], directions=2, steps=6, eval_every=3)
    labels = []
    sweep = training_sweep(configs, digits, out=tmp_path, on_run=lambda config: labels.append(config.label))
    assert labels == [c.label for c in configs]
    assert not sweep.interrupted and sweep.finished == sweep.planned == 2
    backprop = sweep.results[1]
    for result, run in zip(sweep.results, sweep.document["runs"]):
        assert run == {**result.to_json(), "time_vs_backprop": result.seconds_per_step / backprop.seconds_per_step}
        assert run["steps"] == [3, 6]
    assert sweep.document["model"] == "mlp" and sweep.document["data"] == digits.name
    assert json.loads((tmp_path / "forward_train.json").read_text()) == sweep.document
    assert sweep.written == [tmp_path / "forward_train.json", tmp_path / "forward_train.png"]
    assert (tmp_path / "forward_train.png").stat().st_size > 0


def test_an_interrupted_sweep_keeps_the_finished_runs_and_stops(digits, tmp_path, monkeypatch):
    configs = sweep_configs("mlp", ["backprop", "forward"], ["gaussian", "activity"], directions=2, steps=4,
                            eval_every=2)
    calls = []

    def progress(step):
        calls.append(step)
        if len(calls) == 6:  # the second run's second step
            raise KeyboardInterrupt

    drawn = []
    monkeypatch.setattr(experiments, "save_accuracy_curves", lambda path, curves, title: drawn.extend(curves))
    sweep = training_sweep(configs, digits, out=tmp_path, progress=progress)
    assert sweep.interrupted and sweep.finished == 1 and sweep.planned == 3 and len(sweep.results) == 2
    # the figure's legend says which curve stopped early, as the JSON and the table do
    assert [label for label, _, _ in drawn] == [configs[0].label, configs[1].label + " (stopped at step 2)"]
    assert sweep.results[1].completed_steps == 2 and sweep.results[1].interrupted
    written = json.loads((tmp_path / "forward_train.json").read_text())
    assert [run["interrupted"] for run in written["runs"]] == [False, True]


def test_no_backprop_run_means_no_relative_time(digits):
    configs = sweep_configs("mlp", ["forward"], ["gaussian"], directions=2, steps=2, eval_every=2)
    assert training_sweep(configs, digits).document["runs"][0]["time_vs_backprop"] is None


def test_cosine_experiment_is_the_table_with_its_settings(digits, tmp_path):
    cells = []
    document, table = cosine_experiment("mlp", digits, [8, 16], ["gaussian"], directions=2, trials=3, seed=5,
                                        out=tmp_path, progress=lambda: cells.append(1))
    model = build_model("mlp", digits.image_shape, digits.classes, seed=5).train()
    again = cosine_table(model, digits.train, [8, 16], ["gaussian"], 2, 3, seed=5)
    assert [row.cosine for row in table.rows] == [row.cosine for row in again.rows]
    assert document == {"model": "mlp", "data": digits.name, "trials": 3, **again.to_json()}
    assert len(cells) == 2
    assert json.loads((tmp_path / "cosine.json").read_text()) == document
    assert (tmp_path / "gradient_row_correlation.png").stat().st_size > 0


def test_cosine_experiment_refuses_an_unknown_sampler_before_any_work(digits, tmp_path):
    with pytest.raises(SipgradError, match="unknown direction sampler 'nope'"):
        cosine_experiment("mlp", digits, [8], ["gaussian", "nope"], 1, 2, out=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_read_training_runs_gives_curves_and_names_the_faulty_run(tmp_path):
    good = {"model": "mlp", "data": "digits",
            "runs": [{"label": "backprop (adam)", "steps": [1, 2], "test_accuracy": [0.5, 0.7]}]}
    (tmp_path / "good.json").write_text(json.dumps(good))
    assert read_training_runs(tmp_path / "good.json") == ([("backprop (adam)", [1, 2], [0.5, 0.7])],
                                                          "mlp on digits: test accuracy")
    bad = {**good, "runs": [*good["runs"], {"label": "forward", "steps": [1, 2], "test_accuracy": [0.5]}]}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(SipgradError, match=r"bad.json: run 2 \(forward\): 2 steps but 1 test_accuracy values"):
        read_training_runs(tmp_path / "bad.json")
    with pytest.raises(SipgradError, match="no such file"):
        read_training_runs(tmp_path / "missing.json")
    (tmp_path / "other.json").write_text("[1, 2]")
    with pytest.raises(SipgradError, match="other.json: not a forward_train.json"):
        read_training_runs(tmp_path / "other.json")


def test_ctrl_c_while_drawing_keeps_the_documents_and_says_so(digits, tmp_path, monkeypatch):
    import sipgrad.engines.forward.experiments as experiments
    from sipgrad.errors import InterruptedAfterWriting

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(experiments, "save_accuracy_curves", interrupted)
    configs = sweep_configs("mlp", ["backprop"], ["gaussian"], steps=2, eval_every=2)
    sweep = training_sweep(configs, digits, out=tmp_path)
    assert sweep.interrupted and sweep.interrupted_while_drawing and sweep.finished == 1
    assert sweep.written == [tmp_path / "forward_train.json"]
    monkeypatch.setattr(experiments, "save_row_correlations", interrupted)
    with pytest.raises(InterruptedAfterWriting) as stop:
        cosine_experiment("mlp", digits, [8], ["gaussian"], 1, 2, out=tmp_path)
    assert stop.value.written == [tmp_path / "cosine.json"] and (tmp_path / "cosine.json").is_file()


@pytest.mark.parametrize("batch_sizes", [[], [0], [-5]])
def test_cosine_experiment_refuses_batch_sizes_that_are_not_positive(digits, batch_sizes):
    with pytest.raises(SipgradError, match="batch_sizes must be positive whole numbers"):
        cosine_experiment("mlp", digits, batch_sizes, ["gaussian"], 1, 2)


def test_an_empty_training_sweep_is_refused(digits):
    with pytest.raises(SipgradError, match="no training configurations"):
        training_sweep([], digits)
