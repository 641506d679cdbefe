"""Forward-gradient training: configs validate, Adam / SGD learn digits, binary nets, b-bit latents, Ctrl-C."""

from __future__ import annotations

import numpy as np
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
                         ({"directions": 0}, "directions must be a positive integer, got 0"),
                         ({"directions": 2.5}, "directions must be a positive integer, got 2.5"),
                         ({"steps": "10"}, "steps must be a positive integer, got '10'"),
                         ({"batch_size": True}, "batch_size must be a positive integer, got True"),
                         ({"seed": -1}, "seed must be an integer of at least 0"),
                         ({"lr": -1.0}, "lr must be a positive finite number"),
                         ({"lr": float("inf")}, "lr must be a positive finite number, got inf"),
                         ({"momentum": float("nan")}, "momentum must be a finite number"),
                         ({"model": "binary-mlp", "latent_bits": 4.5}, "latent_bits must be a positive integer"),
                         ({"momentum": 1.0}, "momentum"), ({"latent_bits": 6}, "needs a binary model"),
                         ({"model": "binary-mlp", "latent_bits": 1}, "2..16"),
                         ({"soft_weights": True}, "needs a binary model"),
                         ({"beta_start": 5.0, "beta_end": 1.0}, "beta must grow")]:
        with pytest.raises(SipgradError, match=message):
            TrainConfig(**bad)
    assert TrainConfig().learning_rate == 1e-3 and TrainConfig(lr=0.3).learning_rate == 0.3
    assert TrainConfig(seed=np.int64(3), steps=np.int32(10)).seed == 3  # numpy integers are integers


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
    # the table and the figure read the label: a curve that ends early must not look finished
    assert result.to_json()["label"] == result.config.label + " (stopped at step 30)"
    assert train(TrainConfig(directions=4, steps=10, eval_every=10), digits).to_json()["label"] == result.config.label


def test_forward_training_keeps_batchnorm_running_statistics_current(digits, monkeypatch):
    from sipgrad.engines.forward import training

    built = []
    original = training.build_model
    monkeypatch.setattr(training, "build_model", lambda *a, **k: built.append(original(*a, **k)) or built[-1])
    train(TrainConfig(model="cnn-bn", directions=2, steps=3, eval_every=3), digits)
    norm = next(m for m in built[0].modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert int(norm.num_batches_tracked) == 3 and norm.running_mean.abs().sum() > 0


def _captured_model(monkeypatch):
    """Patch ``training.build_model`` to hand back the model ``train`` builds (the last one built)."""
    from sipgrad.engines.forward import training

    built = []
    original = training.build_model
    monkeypatch.setattr(training, "build_model", lambda *a, **k: built.append(original(*a, **k)) or built[-1])
    return built


def _reference_run(config, data, lr):
    """``train``'s documented loop written out: the model and one generator from ``config.seed`` (batch rows,
    directions, latent rounding), the estimate handed to torch's optimizer as ``.grad``, soft-weight beta
    annealed geometrically from beta_start (step 1) to beta_end (the last step)."""
    from sipgrad.engines.forward import model_gradient_estimate
    from sipgrad.engines.forward.binary import clip_and_store_latents, set_beta
    from sipgrad.engines.forward.samplers import make_sampler

    model = build_model(config.model, data.image_shape, data.classes, seed=config.seed).train()
    params = list(model.parameters())
    optimizer = (torch.optim.Adam(params, lr=lr) if config.optimizer == "adam"
                 else torch.optim.SGD(params, lr=lr, momentum=config.momentum))
    generator = torch.Generator().manual_seed(config.seed)
    sampler = make_sampler(config.sampler)
    binary = bool(binary_layers(model))
    if config.latent_bits:
        clip_and_store_latents(model, config.latent_bits, generator)
    for step in range(config.steps):
        if config.soft_weights:
            set_beta(model, config.beta_start * (config.beta_end / config.beta_start) ** (step / (config.steps - 1)))
        rows = torch.randint(0, len(data.train), (config.batch_size,), generator=generator)
        inputs, labels = data.train.inputs[rows], data.train.labels[rows]
        optimizer.zero_grad()
        if config.gradient == "backprop":
            torch.nn.functional.cross_entropy(model(inputs), labels).backward()
        else:
            estimate = model_gradient_estimate(model, torch.nn.functional.cross_entropy, inputs, labels, sampler,
                                               config.directions, generator=generator)
            for name, p in model.named_parameters():
                p.grad = estimate.gradient[name].clone()
        optimizer.step()
        if binary:
            clip_and_store_latents(model, config.latent_bits, generator)
    return model


@pytest.mark.parametrize("settings,lr", [
    ({"optimizer": "adam", "sampler": "orthogonal"}, 1e-3),  # the documented default learning rates
    ({"optimizer": "sgd"}, 5e-3),
    ({"optimizer": "sgd", "gradient": "backprop"}, 5e-2),
    ({"optimizer": "sgd", "momentum": 0.5, "lr": 0.02}, 0.02),
    ({"model": "binary-mlp", "soft_weights": True, "latent_bits": 5}, 1e-2),
])
def test_train_is_the_documented_optimizer_loop(digits, monkeypatch, settings, lr):
    """Seed, step sign, learning rate, momentum, the beta schedule and latent rounding against a loop written out."""
    config = TrainConfig(**{"directions": 3, "steps": 4, "eval_every": 2, "batch_size": 16, "seed": 7, **settings})
    built = _captured_model(monkeypatch)
    result = train(config, digits)
    assert result.completed_steps == 4 and config.learning_rate == lr
    reference = _reference_run(config, digits, lr)
    for (name, p), q in zip(built[-1].named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, atol=1e-7, rtol=1e-6, msg=name)


def test_different_seeds_train_differently(digits):
    runs = [train(TrainConfig(directions=2, steps=5, eval_every=5, seed=seed), digits) for seed in (0, 0, 1)]
    assert runs[0].train_loss == runs[1].train_loss and runs[0].train_loss != runs[2].train_loss


def test_default_learning_rates_are_the_documented_ones():
    for (gradient, optimizer), lr in {("forward", "adam"): 1e-3, ("backprop", "adam"): 1e-3,
                                      ("forward", "sgd"): 5e-3, ("backprop", "sgd"): 5e-2}.items():
        assert TrainConfig(gradient=gradient, optimizer=optimizer).learning_rate == pytest.approx(lr)
        assert TrainConfig(model="binary-cnn", gradient=gradient, optimizer=optimizer).learning_rate == \
            pytest.approx(10 * lr)


def test_accuracy_evaluates_with_sign_weights_and_restores_the_soft_ones(digits):
    from sipgrad.engines.forward.binary import set_beta
    from sipgrad.engines.forward.training import accuracy

    model = build_model("binary-mlp", digits.image_shape, digits.classes, seed=0).train()
    subset = digits.test.subset(slice(0, 50))
    hard = accuracy(model, subset)
    set_beta(model, 2.0)
    assert accuracy(model, subset) == hard  # evaluated with sign weights, not tanh(2 w)
    assert [layer.beta for layer in binary_layers(model)] == [2.0, 2.0] and model.training
