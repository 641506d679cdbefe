"""Training with forward gradients (or backprop, for comparison): SGD with momentum or Adam.

The forward-gradient estimate is handed to a standard ``torch.optim`` optimizer as the
parameters' ``.grad``, so Adam and SGD (momentum) work on forward gradients unchanged.
Binary models clip (or store at ``latent_bits`` bits) their latent weights after every
step; with ``soft_weights`` they train through tanh(beta w), beta annealed geometrically
from ``beta_start`` to ``beta_end``, and are always evaluated with sign weights.

``train`` records test accuracy every ``eval_every`` steps, the median wall time per step
and the process's peak memory, and returns what it finished if interrupted (Ctrl-C).
"""

from __future__ import annotations

import math
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from sipgrad.datasets import SmallDataset, Split
from sipgrad.engines.forward.binary import (
    binary_layers,
    clip_and_store_latents,
    set_beta,
)
from sipgrad.engines.forward.estimators import model_gradient_estimate
from sipgrad.engines.forward.models import MODELS, build_model
from sipgrad.engines.forward.samplers import make_sampler
from sipgrad.errors import SipgradError
from sipgrad.validation import check_count, check_finite

OPTIMIZERS: dict[str, Callable[[list[nn.Parameter], float, float], torch.optim.Optimizer]] = {
    "sgd": lambda params, lr, momentum: torch.optim.SGD(params, lr=lr, momentum=momentum),
    "adam": lambda params, lr, momentum: torch.optim.Adam(params, lr=lr),
}
GRADIENTS = ("forward", "backprop")
# Default learning rates, per (gradient, optimizer): forward-gradient estimates are noisier,
# and their norm is about sqrt(n / K) times the true gradient's, so SGD needs a smaller step.
DEFAULT_LR = {("forward", "adam"): 1e-3, ("backprop", "adam"): 1e-3,
              ("forward", "sgd"): 5e-3, ("backprop", "sgd"): 5e-2}
# Binary models move latent weights in [-1, 1] that only matter through their sign: steps 10x
# larger (measured on digits: forward Adam at 1e-2 reached 88% in 1,000 steps, at 1e-3 39%).
BINARY_LR_FACTOR = 10.0
# Bytes of optimizer state per parameter (float32): Adam keeps two moments, SGD one momentum buffer.
OPTIMIZER_STATE_BYTES = {"adam": 8, "sgd": 4}


@dataclass(frozen=True)
class TrainConfig:
    """One training run; validated on construction."""

    model: str = "mlp"
    gradient: str = "forward"
    sampler: str = "gaussian"
    directions: int = 32
    optimizer: str = "adam"
    lr: float | None = None
    momentum: float = 0.9
    steps: int = 4000
    batch_size: int = 64
    eval_every: int = 100
    seed: int = 0
    soft_weights: bool = False
    beta_start: float = 1.0
    beta_end: float = 30.0
    latent_bits: int | None = None

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise SipgradError(f"unknown model {self.model!r}; choose from {', '.join(MODELS)}")
        if self.gradient not in GRADIENTS:
            raise SipgradError(f"gradient must be one of {', '.join(GRADIENTS)}, got {self.gradient!r}")
        if self.optimizer not in OPTIMIZERS:
            raise SipgradError(f"unknown optimizer {self.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
        make_sampler(self.sampler)  # validates the name
        for name in ("directions", "steps", "batch_size", "eval_every"):
            check_count(name, getattr(self, name))
        check_count("seed", self.seed, minimum=0)
        if self.lr is not None:
            check_finite("lr", self.lr, positive=True)
        for name in ("momentum", "beta_start", "beta_end"):
            check_finite(name, getattr(self, name))
        if not 0 <= self.momentum < 1:
            raise SipgradError(f"momentum must be in [0, 1), got {self.momentum}")
        if not 0 < self.beta_start <= self.beta_end:
            raise SipgradError(f"soft-weight beta must grow: 0 < beta_start ({self.beta_start}) <= beta_end "
                               f"({self.beta_end})")
        binary = self.model.startswith("binary")
        if self.latent_bits is not None:
            check_count("latent_bits", self.latent_bits)
        if self.latent_bits is not None and not (binary and 2 <= self.latent_bits <= 16):
            raise SipgradError(f"latent_bits ({self.latent_bits}) needs a binary model and 2..16 bits")
        if self.soft_weights and not binary:
            raise SipgradError(f"soft_weights needs a binary model, got {self.model!r}")

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        factor = BINARY_LR_FACTOR if self.model.startswith("binary") else 1.0
        return DEFAULT_LR[(self.gradient, self.optimizer)] * factor

    @property
    def label(self) -> str:
        base = "backprop" if self.gradient == "backprop" else f"forward {self.sampler} K={self.directions}"
        extras = [self.optimizer] + (["soft"] if self.soft_weights else []) + \
            ([f"{self.latent_bits}-bit"] if self.latent_bits else [])
        return f"{base} ({', '.join(extras)})"


@dataclass
class TrainResult:
    """Accuracy curve and costs of one run."""

    config: TrainConfig
    steps: list[int] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    seconds_per_step: float = 0.0
    peak_memory_mib: float = 0.0
    parameters: int = 0
    memory: dict[str, float] = field(default_factory=dict)
    completed_steps: int = 0
    interrupted: bool = False

    @property
    def final_accuracy(self) -> float:
        return self.test_accuracy[-1] if self.test_accuracy else float("nan")

    def steps_to(self, accuracy: float) -> int | None:
        """The first evaluated step at which test accuracy reached ``accuracy`` (None if never)."""
        return next((s for s, a in zip(self.steps, self.test_accuracy) if a >= accuracy), None)

    @property
    def label(self) -> str:
        """The config's label; a run Ctrl-C stopped says so, as the table, the JSON and the figure show it
        (alone, its curve ending early would look like a finished run's)."""
        return self.config.label + (f" (stopped at step {self.completed_steps})" if self.interrupted else "")

    def to_json(self) -> dict:
        return {"config": asdict(self.config), "label": self.label, "learning_rate": self.config.learning_rate,
                "steps": self.steps, "test_accuracy": self.test_accuracy, "train_loss": self.train_loss,
                "final_accuracy": self.final_accuracy, "steps_to_90": self.steps_to(0.9),
                "seconds_per_step": self.seconds_per_step, "peak_memory_mib": self.peak_memory_mib,
                "parameters": self.parameters, "memory": self.memory, "completed_steps": self.completed_steps,
                "interrupted": self.interrupted}


def accuracy(model: nn.Module, split: Split, batch_size: int = 1024) -> float:
    """Top-1 accuracy; binary models are evaluated with hard sign weights."""
    betas = [layer.beta for layer in binary_layers(model)]
    set_beta(model, None)
    was_training = model.training
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(split), batch_size):
            chunk = split.subset(slice(start, start + batch_size))
            correct += int((model(chunk.inputs).argmax(dim=1) == chunk.labels).sum())
    model.train(was_training)
    for layer, beta in zip(binary_layers(model), betas):
        layer.beta = beta
    return correct / max(len(split), 1)


def memory_budget(model: nn.Module, config: TrainConfig) -> dict[str, float]:
    """Bytes of weight storage and optimizer state (counted, not measured): what b-bit latents save, Adam adds back."""
    latent = sum(layer.weight.numel() for layer in binary_layers(model))
    total = sum(p.numel() for p in model.parameters())
    bits = config.latent_bits or 32
    weights = (total - latent) * 4 + latent * bits / 8
    return {"parameters": total, "latent_parameters": latent, "latent_bits": bits,
            "weight_bytes": weights, "weight_bytes_float32": total * 4.0,
            "optimizer_state_bytes": total * float(OPTIMIZER_STATE_BYTES[config.optimizer])}


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def train(config: TrainConfig, data: SmallDataset, progress: Callable[[int], None] | None = None) -> TrainResult:
    """Train a fresh ``config.model`` on ``data.train``; test accuracy on ``data.test`` every ``eval_every`` steps."""
    if config.batch_size > len(data.train):  # as the other experiments: a batch is drawn from the training split
        raise SipgradError(f"batch size {config.batch_size} exceeds the {len(data.train)} training examples")
    model = build_model(config.model, data.image_shape, data.classes, seed=config.seed).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = OPTIMIZERS[config.optimizer](params, config.learning_rate, config.momentum)
    sampler = make_sampler(config.sampler)
    generator = torch.Generator().manual_seed(config.seed)
    result = TrainResult(config, parameters=sum(p.numel() for p in params), memory=memory_budget(model, config))
    if config.latent_bits:
        clip_and_store_latents(model, config.latent_bits, generator)
    step_seconds: list[float] = []
    train_set = data.train
    try:
        for step in range(1, config.steps + 1):
            if config.soft_weights:
                fraction = (step - 1) / max(config.steps - 1, 1)
                set_beta(model, config.beta_start * (config.beta_end / config.beta_start) ** fraction)
            rows = torch.randint(0, len(train_set), (config.batch_size,), generator=generator)
            inputs, labels = train_set.inputs[rows], train_set.labels[rows]
            began = time.perf_counter()
            loss = _gradient_step(model, optimizer, config, sampler, inputs, labels, generator)
            if binary_layers(model):
                clip_and_store_latents(model, config.latent_bits, generator)
            step_seconds.append(time.perf_counter() - began)
            result.completed_steps = step
            if step % config.eval_every == 0 or step == config.steps:
                result.steps.append(step)
                result.test_accuracy.append(accuracy(model, data.test))
                result.train_loss.append(float(loss))
                if not math.isfinite(result.train_loss[-1]):
                    raise SipgradError(f"{config.label}: the loss diverged at step {step}; try a smaller learning rate")
            if progress:
                progress(step)
    except KeyboardInterrupt:
        result.interrupted = True
    result.seconds_per_step = statistics.median(step_seconds) if step_seconds else 0.0
    result.peak_memory_mib = _peak_rss_mib()
    return result


def _gradient_step(model: nn.Module, optimizer: torch.optim.Optimizer, config: TrainConfig, sampler,
                   inputs: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    optimizer.zero_grad(set_to_none=True)
    if config.gradient == "backprop":
        loss = F.cross_entropy(model(inputs), labels)
        loss.backward()
    else:
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats for m in model.modules()):
            with torch.no_grad():  # forward mode leaves running statistics alone; one plain pass updates them
                model(inputs)
        estimate = model_gradient_estimate(model, F.cross_entropy, inputs, labels, sampler, config.directions,
                                           generator=generator)
        for name, p in model.named_parameters():
            if name in estimate.gradient:
                p.grad = estimate.gradient[name]
        loss = estimate.loss
    optimizer.step()
    return loss.detach()
