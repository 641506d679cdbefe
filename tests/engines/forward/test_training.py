"""Forward-gradient training: configs validate, Adam / SGD learn digits, binary nets, b-bit latents, Ctrl-C."""

from __future__ import annotations

import pytest
import torch

from sipgrad.datasets import load_digits
from sipgrad.engines.forward.binary import binary_layers
from sipgrad.engines.forward.models import MODELS, build_model
from sipgrad.engines.forward.training import TrainConfig, memory_budget, train
from sipgrad.errors import SipgradError


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_configs_validate():
    for bad, message in [({"model": "resnet"}, "unknown model"), ({"gradient": "sideways"}, "gradient must be"),
                         ({"optimizer": "lbfgs"}, "unknown optimizer"), ({"sampler": "nope"}, "unknown direction"),
                         ({"directions": 0}, "directions must be at least 1"), ({"lr": -1.0}, "lr must be positive"),
                         ({"momentum": 1.0}, "momentum"), ({"latent_bits": 6}, "needs a binary model"),
                         ({"model": "binary-mlp", "latent_bits": 1}, "2..16"),
                         ({"soft_weights": True}, "needs a binary model"),
                         ({"beta_start": 5.0, "beta_end": 1.0}, "beta must grow")]:
        with pytest.raises(SipgradError, match=message):
            TrainConfig(**bad)
    assert TrainConfig().learning_rate == 1e-3 and TrainConfig(lr=0.3).learning_rate == 0.3


def test_forward_adam_learns_digits_and_backprop_is_the_reference(digits):
    forward = train(TrainConfig(directions=16, steps=300, eval_every=100, seed=0), digits)
    backprop = train(TrainConfig(gradient="backprop", steps=300, eval_every=100, seed=0), digits)
    assert forward.steps == [100, 200, 300] and forward.completed_steps == 300
    assert forward.final_accuracy > 0.6  # chance is 0.1
    assert backprop.final_accuracy > 0.9 and backprop.final_accuracy > forward.final_accuracy
    assert forward.seconds_per_step > 0 and forward.peak_memory_mib > 0
    again = train(TrainConfig(directions=16, steps=100, eval_every=100, seed=0), digits)
    assert again.test_accuracy[0] == forward.test_accuracy[0]  # reproducible from the seed


def test_forward_sgd_with_momentum_learns(digits):
    result = train(TrainConfig(optimizer="sgd", directions=16, steps=300, eval_every=300, seed=1), digits)
    assert result.final_accuracy > 0.5


def test_binary_mlp_trains_forward_with_soft_weights_and_b_bit_latents(digits):
    result = train(TrainConfig(model="binary-mlp", directions=8, steps=200, eval_every=200, soft_weights=True,
                               latent_bits=6, seed=0), digits)
    hard = train(TrainConfig(model="binary-mlp", directions=8, steps=200, eval_every=200, seed=0), digits)
    # chance is 0.1 (359 test digits); both evaluated with sign weights; soft weights learn faster early on
    assert result.final_accuracy > 0.4 and hard.final_accuracy > 0.18 and result.final_accuracy > hard.final_accuracy
    memory = result.memory
    latent = 64 * 128 + 128 * 10
    assert memory["latent_parameters"] == latent
    assert memory["weight_bytes"] == (memory["parameters"] - latent) * 4 + latent * 6 / 8
    assert memory["optimizer_state_bytes"] == memory["parameters"] * 8  # Adam: two float32 moments


def test_every_model_builds_and_binary_ones_have_binary_layers():
    for name in MODELS:
        model = build_model(name, (1, 8, 8), 10)
        assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)
        assert bool(binary_layers(model)) == name.startswith("binary")
    budget = memory_budget(build_model("mlp", (1, 8, 8)), TrainConfig(optimizer="sgd"))
    assert budget["latent_parameters"] == 0 and budget["optimizer_state_bytes"] == budget["parameters"] * 4


def test_interrupted_training_keeps_what_it_finished(digits):
    def stop_at(step):
        if step == 30:
            raise KeyboardInterrupt

    result = train(TrainConfig(directions=4, steps=100, eval_every=10), digits, progress=stop_at)
    assert result.interrupted and result.completed_steps == 30 and result.steps == [10, 20, 30]


def test_forward_training_keeps_batchnorm_running_statistics_current(digits, monkeypatch):
    from sipgrad.engines.forward import training

    built = []
    original = training.build_model
    monkeypatch.setattr(training, "build_model", lambda *a, **k: built.append(original(*a, **k)) or built[-1])
    train(TrainConfig(model="cnn-bn", directions=2, steps=3, eval_every=3), digits)
    norm = next(m for m in built[0].modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert int(norm.num_batches_tracked) == 3 and norm.running_mean.abs().sum() > 0
