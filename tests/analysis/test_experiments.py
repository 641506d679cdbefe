"""The across-example gradient experiments as library calls: the documents `sipgrad gradients` writes."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sipgrad.analysis.example_spectrum import spectra_over_batch_sizes, spectrum_rows
from sipgrad.analysis.experiments import (
    SpectrumSettings,
    projected_training_sweep,
    spectrum_experiment,
    sweep_configs,
)
from sipgrad.analysis.models import small_model
from sipgrad.analysis.projected_training import ProjectedTrainConfig, summarize_runs, train_projected
from sipgrad.datasets import load_digits
from sipgrad.errors import SipgradError


def test_spectrum_experiment_is_the_spectra_of_the_trained_model(tmp_path):
    settings = SpectrumSettings(batch_sizes=(16, 8), ks=(1, 4), train_steps=3, lr=0.05, seed=2)
    calls = {"train": 0, "spectra": 0}

    def counter(key):
        return lambda n: calls.__setitem__(key, calls[key] + n)

    document = spectrum_experiment(settings, tmp_path, training_progress=counter("train"),
                                   spectra_progress=counter("spectra"))
    data = load_digits(seed=2)
    model = small_model("mlp", data.image_shape, data.classes, seed=2)
    trained = train_projected(model, data, ProjectedTrainConfig(optimizer="sgd", lr=0.05, steps=3, seed=2,
                                                                eval_every=3)).params
    untrained_rows = spectrum_rows(spectra_over_batch_sizes(model, data.train.inputs, data.train.labels, (16, 8),
                                                            (1, 4), None, seed=2))
    want = spectrum_rows(spectra_over_batch_sizes(model, data.train.inputs, data.train.labels, (16, 8), (1, 4),
                                                  trained, seed=2))
    assert document["rows"] == want
    assert document["rows"] != untrained_rows  # the training steps were taken
    assert {k: document[k] for k in ("command", "model", "train steps", "seed", "centre")} == {
        "command": "spectrum", "model": "mlp", "train steps": 3, "seed": 2, "centre": False}
    assert calls == {"train": 3, "spectra": 3}  # per-example gradients, then batch sizes 8 and 16
    assert json.loads((tmp_path / "spectrum.json").read_text()) == json.loads(json.dumps(document))
    assert (tmp_path / "spectrum.png").stat().st_size > 0


@pytest.mark.parametrize("options,message", [
    ({"model": "resnet"}, "unknown model 'resnet'"),
    ({"batch_sizes": ()}, "batch_sizes must be positive whole numbers"),
    ({"ks": (1, 0)}, "ks must be positive whole numbers"),
    ({"train_steps": -1}, "train_steps must be a whole number >= 0"),
    ({"lr": math.nan}, "lr must be a positive number"),
    ({"chunk_size": 0}, "chunk_size must be at least 1"),
])
def test_spectrum_settings_are_checked_on_construction(options, message):
    with pytest.raises(SipgradError, match=message):
        SpectrumSettings(**options)


def test_sweep_configs_nest_seed_then_noise_then_optimizer():
    configs = sweep_configs(["sgd", "pca-sgd"], [0.0, 0.5], [3, 4], k=2, steps=7)
    assert [(c.seed, c.label_noise, c.optimizer) for c in configs] == [
        (s, n, o) for s in (3, 4) for n in (0.0, 0.5) for o in ("sgd", "pca-sgd")]
    assert all(c.k == 2 and c.steps == 7 for c in configs)


def test_training_sweep_document_holds_each_run_and_the_summary(tmp_path):
    configs = sweep_configs(["sgd", "momentum"], [0.2], [0, 1], steps=4, batch_size=16, eval_every=2)
    outcome = projected_training_sweep(configs, "mlp", "digits", tmp_path)
    data = {seed: load_digits(seed=seed) for seed in (0, 1)}
    want = [train_projected(small_model("mlp", data[c.seed].image_shape, data[c.seed].classes, seed=c.seed),
                            data[c.seed], c, "mlp").to_dict() for c in configs]
    runs = outcome.document["runs"]
    assert [r["test_accuracy"] for r in runs] == [w["test_accuracy"] for w in want]
    assert [r["probe"] for r in runs] == [w["probe"] for w in want]
    assert outcome.document["summary"] == summarize_runs(runs)
    assert not outcome.interrupted and outcome.finished == outcome.planned == 4
    assert json.loads((tmp_path / "train.json").read_text()) == json.loads(json.dumps(outcome.document))
    assert outcome.written == [tmp_path / "train.json", tmp_path / "accuracy.png", tmp_path / "momentum.png"]


def test_an_interrupted_sweep_keeps_finished_runs_and_an_early_one_propagates(tmp_path):
    configs = sweep_configs(["sgd", "pca-sgd"], [0.0], [0], steps=3, batch_size=16, eval_every=3)
    steps = []

    def progress(n):
        steps.append(n)
        if len(steps) == 4:  # the second run's first step
            raise KeyboardInterrupt

    outcome = projected_training_sweep(configs, out=tmp_path, progress=progress)
    assert outcome.interrupted and outcome.finished == 1 and outcome.planned == 2
    assert [r["config"]["optimizer"] for r in json.loads((tmp_path / "train.json").read_text())["runs"]] == ["sgd"]
    assert outcome.written == [tmp_path / "train.json", tmp_path / "accuracy.png"]  # no momentum run: no figure

    def stop_at_once(n):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        projected_training_sweep(configs, out=tmp_path / "early", progress=stop_at_once)
    assert not (tmp_path / "early" / "train.json").exists()


def test_window_means_skip_non_finite_probes_but_not_the_loss():
    from sipgrad.analysis.projected_training import _window_means

    window = {"loss": [torch.tensor(1.0, dtype=torch.float64), torch.tensor(math.inf, dtype=torch.float64)],
              "cos(g, Pg)": [torch.tensor(0.5, dtype=torch.float64), torch.tensor(math.nan, dtype=torch.float64)],
              "|Pv|/|v|": [torch.tensor(math.nan, dtype=torch.float64)] * 2}
    means = _window_means(window)
    assert means["loss"] == math.inf and means["cos(g, Pg)"] == 0.5 and math.isnan(means["|Pv|/|v|"])


def test_ctrl_c_while_drawing_keeps_the_documents_and_says_so(tmp_path, monkeypatch):
    import sipgrad.analysis.experiments as experiments
    from sipgrad.errors import InterruptedAfterWriting

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(experiments, "save_accuracy_figure", interrupted)
    configs = sweep_configs(["sgd"], [0.0], [0], steps=2, batch_size=16, eval_every=2)
    outcome = projected_training_sweep(configs, out=tmp_path)
    assert outcome.interrupted and outcome.finished == outcome.planned == 1
    assert outcome.written == [tmp_path / "train.json"]
    assert len(json.loads((tmp_path / "train.json").read_text())["runs"]) == 1

    monkeypatch.setattr(experiments, "save_spectrum_figure", interrupted)
    with pytest.raises(InterruptedAfterWriting) as stop:
        spectrum_experiment(SpectrumSettings(batch_sizes=(8,), ks=(1,)), tmp_path)
    assert stop.value.written == [tmp_path / "spectrum.json"] and (tmp_path / "spectrum.json").is_file()


def test_an_empty_sweep_is_refused():
    with pytest.raises(SipgradError, match="no training configurations"):
        projected_training_sweep([])
    with pytest.raises(SipgradError, match="train_steps must be a whole number"):
        SpectrumSettings(train_steps=1.5)
