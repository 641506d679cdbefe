"""Training with PCA-projected gradients, against SGD and momentum, under label noise.

The research note behind this (``shared/seeds/003``) argues that averaging a batch's
gradients makes examples interfere constructively along shared (general) features and
destructively along example-specific ones; so projecting the batch gradient onto the top-k
principal directions of the per-example gradients might learn general features faster and
resist noisy labels. It also asks whether momentum approximates that projection.

``train_projected`` runs one configuration, with every step computed the same way whatever the
optimizer: per-example gradients (``per_example``), their batch mean g, a top-k subspace per
layer updated with the batch (``SUBSPACES``: ``stream``, a Frequent Directions sketch of all
gradients so far with forgetting, or ``batch``, the exact top-k of this batch alone), the
projection P_k g, and then the optimizer's step direction (``OPTIMIZERS``):

* ``sgd``: g;
* ``momentum``: v = mu v + (1 - mu) g (an exponential average of gradients; PyTorch's
  ``SGD(momentum=mu, dampening=mu)``, i.e. its default momentum with the learning rate scaled
  by 1 - mu), v = g on the first step, so one learning rate means the same step size for all three;
* ``pca-sgd``: P_k g. A layer with P_layer <= k is not projected, so k >= P is SGD exactly.

Every run also records, each step, cos(g, P_k g) and, for momentum, cos(v, P_k g), cos(v, g)
and the share ||P_k v|| / ||v|| of the momentum buffer inside the subspace: the note's question.

Same seed, same initial weights, same corrupted labels and same batch order for every
optimizer, so runs are paired.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Mapping

import torch
from torch import nn
from torch.func import functional_call

from sipgrad.analysis.per_example import LayerLayout, model_parameters, per_example_gradients
from sipgrad.analysis.streaming_pca import LayerwiseSketch, project
from sipgrad.datasets import SmallDataset, Split
from sipgrad.errors import SipgradError

Vectors = dict[str, torch.Tensor]


def randomize_labels(labels: torch.Tensor, share: float, classes: int, seed: int = 0,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Give exactly round(share * N) examples a wrong label, drawn uniformly from the other classes.

    Returns (noisy labels, mask of the corrupted examples). A "randomised" label that could
    land on the true class would corrupt fewer examples than asked; this one never does."""
    if not 0 <= share <= 1:
        raise SipgradError(f"label noise must be a share in [0, 1], got {share}")
    if classes < 2:
        raise SipgradError(f"label noise needs at least 2 classes, got {classes}")
    generator = torch.Generator().manual_seed(seed)
    count = round(share * labels.numel())
    chosen = torch.randperm(labels.numel(), generator=generator)[:count]
    offsets = torch.randint(1, classes, (count,), generator=generator)
    noisy = labels.clone()
    noisy[chosen] = (labels[chosen] + offsets) % classes
    corrupted = torch.zeros(labels.numel(), dtype=torch.bool)
    corrupted[chosen] = True
    return noisy, corrupted


class Subspace:
    """Top-k directions per layer, refreshed with each batch's per-example gradients."""

    def update(self, layer_rows: Mapping[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def project(self, layer_vectors: Mapping[str, torch.Tensor]) -> Vectors:
        raise NotImplementedError


class StreamingSubspace(Subspace):
    """Frequent Directions over every batch so far, an older batch's rows counting decay**age in A^T A."""

    def __init__(self, sizes: Mapping[str, int], config: "ProjectedTrainConfig") -> None:
        self.sketch = LayerwiseSketch(sizes, config.k, config.sketch_size, config.decay)

    def update(self, layer_rows: Mapping[str, torch.Tensor]) -> None:
        self.sketch.update(layer_rows)

    def project(self, layer_vectors: Mapping[str, torch.Tensor]) -> Vectors:
        return self.sketch.project(layer_vectors)


class BatchSubspace(Subspace):
    """The exact top-k right singular vectors of this batch's B x P_layer gradients (no memory)."""

    def __init__(self, sizes: Mapping[str, int], config: "ProjectedTrainConfig") -> None:
        self.k = config.k
        self.sizes = dict(sizes)
        self.bases: dict[str, torch.Tensor] = {}

    def update(self, layer_rows: Mapping[str, torch.Tensor]) -> None:
        for layer, rows in layer_rows.items():
            if self.sizes[layer] > self.k:
                _, singular, directions = torch.linalg.svd(rows.to(torch.float64), full_matrices=False)
                keep = min(self.k, int((singular > 1e-12 * singular[0].clamp_min(1e-300)).sum()))
                self.bases[layer] = directions[:keep]

    def project(self, layer_vectors: Mapping[str, torch.Tensor]) -> Vectors:
        return {layer: vector if layer not in self.bases else project(vector, self.bases[layer])
                for layer, vector in layer_vectors.items()}


SUBSPACES: dict[str, Callable[..., Subspace]] = {"stream": StreamingSubspace, "batch": BatchSubspace}


class PlainSGD:
    """Step along the batch-mean gradient."""

    buffer: Vectors | None = None

    def __init__(self, config: "ProjectedTrainConfig") -> None:
        self.config = config

    def direction(self, mean: Vectors, projected: Vectors) -> Vectors:
        return mean


class MomentumSGD(PlainSGD):
    """Step along an exponential average of the gradients (see module doc)."""

    def direction(self, mean: Vectors, projected: Vectors) -> Vectors:
        mu = self.config.momentum
        if self.buffer is None:
            self.buffer = dict(mean)
        else:
            self.buffer = {layer: mu * self.buffer[layer] + (1 - mu) * g for layer, g in mean.items()}
        return self.buffer


class ProjectedSGD(PlainSGD):
    """Step along the batch-mean gradient projected onto the top-k subspace."""

    def direction(self, mean: Vectors, projected: Vectors) -> Vectors:
        return projected


OPTIMIZERS: dict[str, Callable[..., PlainSGD]] = {"sgd": PlainSGD, "momentum": MomentumSGD, "pca-sgd": ProjectedSGD}


@dataclass(frozen=True)
class ProjectedTrainConfig:
    """One training run.

    Attributes:
        optimizer: a name in ``OPTIMIZERS``.
        lr: learning rate (the same step size for all optimizers, see module doc).
        momentum: mu of the momentum optimizer.
        k: directions kept per layer by the projection (and measured by the probe).
        sketch_size: Frequent Directions rows per layer (default 2k), for ``subspace="stream"``.
        decay: per-step forgetting of the streaming sketch, in (0, 1]; 1 remembers everything.
        subspace: a name in ``SUBSPACES``.
        label_noise: share of training labels made wrong (exactly that many).
        steps, batch_size: SGD steps and examples per step (batches walk shuffled epochs).
        seed: initial weights, corrupted labels and batch order.
        eval_every: steps between test-accuracy measurements.
    """

    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    k: int = 8
    sketch_size: int | None = None
    decay: float = 0.9
    subspace: str = "stream"
    label_noise: float = 0.0
    steps: int = 500
    batch_size: int = 64
    seed: int = 0
    eval_every: int = 25

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise SipgradError(f"unknown optimizer {self.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
        if self.subspace not in SUBSPACES:
            raise SipgradError(f"unknown subspace {self.subspace!r}; choose from {', '.join(SUBSPACES)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise SipgradError(f"lr must be a positive number, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise SipgradError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.k < 1:
            raise SipgradError(f"k must be at least 1, got {self.k}")
        if self.sketch_size is not None and self.sketch_size < self.k:
            raise SipgradError(f"sketch_size ({self.sketch_size}) must be at least k ({self.k})")
        if not 0 < self.decay <= 1:
            raise SipgradError(f"decay must be in (0, 1], got {self.decay}")
        if not 0 <= self.label_noise <= 1:
            raise SipgradError(f"label_noise must be a share in [0, 1], got {self.label_noise}")
        for name in ("steps", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise SipgradError(f"{name} must be at least 1, got {getattr(self, name)}")


@dataclass
class ProjectedTrainResult:
    """Curves of one run: test accuracy, clean-label training accuracy and memorised noise vs step.

    ``noise_fit`` is the share of corrupted training examples the model predicts with their
    *wrong* label (memorised noise; empty without label noise). ``probe`` holds, per measured
    step, the window means of the cosines described in the module doc."""

    config: dict
    model: str
    data: str
    steps: list[int] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    noise_fit: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    probe: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    params: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def final_test_accuracy(self) -> float:
        return self.test_accuracy[-1] if self.test_accuracy else float("nan")

    def to_dict(self) -> dict:
        """Everything but the trained parameters, as plain JSON-ready values."""
        return {key: value for key, value in vars(self).items() if key != "params"}


def _dots(a: Vectors, b: Vectors) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(<a, b>, ||a||^2, ||b||^2) over all layers, in float64, as 0-d tensors: no host sync."""
    a_flat = torch.cat([a[k].double().reshape(-1) for k in a])
    b_flat = torch.cat([b[k].double().reshape(-1) for k in a])
    return a_flat @ b_flat, a_flat @ a_flat, b_flat @ b_flat


def _cosine(a: Vectors, b: Vectors) -> torch.Tensor:
    """cos(a, b) over all layers as a 0-d tensor (NaN when either is zero); read once per window, in ``_record``."""
    dot, norm_a2, norm_b2 = _dots(a, b)
    denominator = (norm_a2 * norm_b2).sqrt()
    return torch.where(denominator > 0, dot / denominator, torch.full_like(dot, math.nan))


def _squared_norm(vectors: Vectors) -> torch.Tensor:
    """||v||^2 over all layers, in float64, as a 0-d tensor."""
    return sum(vectors[k].double().square().sum() for k in vectors)


def _norm_ratio(a: Vectors, b: Vectors) -> torch.Tensor:
    """||a|| / ||b|| over all layers as a 0-d tensor (NaN when b is zero)."""
    norm_a2, norm_b2 = _squared_norm(a), _squared_norm(b)
    return torch.where(norm_b2 > 0, (norm_a2 / norm_b2).sqrt(), torch.full_like(norm_a2, math.nan))


def _batches(size: int, batch_size: int, generator: torch.Generator):
    """Indices of shuffled epochs, cut into batches (a batch never spans two epochs)."""
    if batch_size > size:
        raise SipgradError(f"batch size {batch_size} exceeds the {size} training examples")
    while True:
        order = torch.randperm(size, generator=generator)
        for start in range(0, size - batch_size + 1, batch_size):
            yield order[start:start + batch_size]


@torch.no_grad()
def _predict(model: nn.Module, params: Mapping[str, torch.Tensor], split: Split, chunk: int = 2048) -> torch.Tensor:
    return torch.cat([functional_call(model, dict(params), (split.inputs[i:i + chunk],)).argmax(dim=1)
                      for i in range(0, len(split), chunk)])


def train_projected(model: nn.Module, data: SmallDataset, config: ProjectedTrainConfig, model_name: str = "model",
                    progress: Callable[[int], None] | None = None) -> ProjectedTrainResult:
    """Train ``model``'s parameters (the module itself is not modified) as ``config`` says."""
    labels, corrupted = randomize_labels(data.train.labels, config.label_noise, data.classes, seed=config.seed)
    params = {name: p.clone() for name, p in model_parameters(model).items()}
    layout = LayerLayout.of(params)
    subspace = SUBSPACES[config.subspace]({layer: layout.size(layer) for layer in layout.layers}, config)
    optimizer = OPTIMIZERS[config.optimizer](config)
    batches = _batches(len(data.train), config.batch_size, torch.Generator().manual_seed(config.seed))
    result = ProjectedTrainResult(config=asdict(config), model=model_name, data=data.name)
    window: dict[str, list[torch.Tensor]] = {}
    began = time.perf_counter()
    for step in range(1, config.steps + 1):
        index = next(batches)
        gradients, losses = per_example_gradients(model, data.train.inputs[index], labels[index], params)
        rows = layout.flatten(gradients, batch_dims=1)
        mean = {layer: r.mean(dim=0) for layer, r in rows.items()}
        try:
            subspace.update(rows)
            projected = subspace.project(mean)
        except torch.linalg.LinAlgError:  # checked only when the decomposition fails: no host sync per step
            if all(bool(r.isfinite().all()) for r in rows.values()):
                raise
            raise _diverged(config, step) from None
        direction = optimizer.direction(mean, projected)
        step_params = layout.unflatten(direction)
        params = {name: p - config.lr * step_params[name] for name, p in params.items()}
        # 0-d tensors, read on the host once per evaluation window (``_record``), not at every step.
        measures = {"loss": losses.mean().double(), "cos(g, Pg)": _cosine(mean, projected),
                    "|Pg|/|g|": _norm_ratio(projected, mean)}
        if optimizer.buffer is not None:
            buffer = optimizer.buffer
            measures.update({"cos(v, Pg)": _cosine(buffer, projected), "cos(v, g)": _cosine(buffer, mean),
                             "|Pv|/|v|": _norm_ratio(subspace.project(buffer), buffer)})
        for key, value in measures.items():
            window.setdefault(key, []).append(value)
        if step % config.eval_every == 0 or step == config.steps:
            _record(result, model, params, data, corrupted, labels, step, window)
            window = {}
        if progress is not None:
            progress(1)
    result.seconds = time.perf_counter() - began
    result.params = params
    return result


def _record(result: ProjectedTrainResult, model: nn.Module, params: Mapping[str, torch.Tensor], data: SmallDataset,
            corrupted: torch.Tensor, noisy_labels: torch.Tensor, step: int,
            window: dict[str, list[torch.Tensor]]) -> None:
    test = _predict(model, params, data.test)
    train_predictions = _predict(model, params, data.train)
    result.steps.append(step)
    result.test_accuracy.append(float((test == data.test.labels).double().mean()))
    result.train_accuracy.append(float((train_predictions == data.train.labels).double().mean()))
    if corrupted.any():
        result.noise_fit.append(float((train_predictions[corrupted] == noisy_labels[corrupted]).double().mean()))
    means = _window_means(window)
    if not (math.isfinite(means["loss"]) and bool(torch.stack([p.isfinite().all() for p in params.values()]).all())):
        raise _diverged(result.config, step)
    result.train_loss.append(means.pop("loss"))
    for key, value in means.items():
        result.probe.setdefault(key, []).append(value)


class TrainingDiverged(SipgradError):
    """A run whose loss, weights or gradients stopped being finite; ``step`` is the step that showed it."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step


def _diverged(config: ProjectedTrainConfig | Mapping, step: int) -> TrainingDiverged:
    """The error for a run whose loss, weights or gradients stopped being finite, naming the run (in a sweep)."""
    settings = config if isinstance(config, Mapping) else asdict(config)
    run = f"{settings['optimizer']} (label noise {settings['label_noise']}, seed {settings['seed']})"
    return TrainingDiverged(f"{run}: the training diverged by step {step} (the loss, weights or gradients are not "
                            f"finite); try a smaller learning rate", step)


def _window_means(window: Mapping[str, list[torch.Tensor]]) -> dict[str, float]:
    """Each measure's mean over the window, in one host read: the loss as it is, the others over their finite
    values (NaN if none: a cosine is NaN at a step where a vector is zero)."""
    if not window:
        return {}
    values = torch.stack([torch.stack(window[key]) for key in window])  # measures x steps
    finite = values.isfinite()
    means = torch.where(finite, values, 0).sum(1) / finite.sum(1)  # 0/0: NaN when no value is finite
    if "loss" in window:  # the loss is averaged as it is: a diverging run's inf or NaN shows
        means[list(window).index("loss")] = values[list(window).index("loss")].mean()
    return dict(zip(window, means.tolist()))


def summarize_runs(runs: list[dict]) -> list[dict]:
    """One row per (label noise, optimizer): means over seeds of the final and best test accuracy,
    the final memorised noise, and the probe's means over training (JSON-ready dicts in, rows out)."""
    groups: dict[tuple[float, str], list[dict]] = {}
    for run in runs:
        groups.setdefault((run["config"]["label_noise"], run["config"]["optimizer"]), []).append(run)
    rows = []
    for (noise, optimizer), members in sorted(groups.items(), key=lambda item: (item[0][0], _order(item[0][1]))):
        finals = [m["test_accuracy"][-1] for m in members]
        row = {"label noise": noise, "optimizer": optimizer, "seeds": len(members),
               "final test accuracy": sum(finals) / len(finals),
               "final min": min(finals), "final max": max(finals),
               "best test accuracy": sum(max(m["test_accuracy"]) for m in members) / len(members)}
        if all(m["noise_fit"] for m in members):
            row["noise fit"] = sum(m["noise_fit"][-1] for m in members) / len(members)
        for key in members[0]["probe"]:
            values = [v for m in members for v in m["probe"].get(key, []) if math.isfinite(v)]
            row[key] = sum(values) / len(values) if values else float("nan")
        rows.append(row)
    return rows


def _order(optimizer: str) -> int:
    return list(OPTIMIZERS).index(optimizer) if optimizer in OPTIMIZERS else len(OPTIMIZERS)
