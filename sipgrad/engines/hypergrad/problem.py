"""The unrolled training problem: start weights, an inner update, mini-batches, a validation loss.

``InnerProblem`` is everything both hypergradient modes need, and nothing else; they see
the training procedure only through ``update`` and ``batch(step)``, so the two modes
differentiate exactly the same function of the hyperparameters.

``classification_problem`` builds one from an ``nn.Module`` classifier and a
``SmallDataset`` (``sipgrad.datasets``) the way RFHO's ``all_methods_on_mnist.py`` does:
cross-entropy (mean over the mini-batch) plus per-layer penalties on the weight matrices,
mini-batches visited in reshuffled epochs drawn from ``seed``, the validation error being
the plain mean cross-entropy on the whole validation split.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from sipgrad.datasets import SmallDataset, Split
from sipgrad.devices import usable_device
from sipgrad.engines.hypergrad.fused import plan_for
from sipgrad.engines.hypergrad.updates import (
    Batch,
    InnerUpdate,
    Params,
    layerwise_penalties,
    make_update,
    penalized_parameters,
)
from sipgrad.errors import SipgradError
from sipgrad.validation import check_count

SEED_HIDDEN = (300, 300)


@dataclass(frozen=True)
class InnerProblem:
    """T steps of ``update`` from ``weights`` on ``batch(t)``; the outer objective is ``validation_loss``.

    ``weights`` are the start point (never modified); the velocity starts at zero.
    ``validation_loss(weights)`` must not depend on the hyperparameters. The weights are
    held detached (``dict(model.named_parameters())`` may be passed as it is): the
    hypergradient is not differentiable with respect to them, and autograd tracking them
    through T steps would only build a graph nobody reads.
    """

    weights: Params
    update: InnerUpdate
    batch: Callable[[int], Batch]
    validation_loss: Callable[[Params], torch.Tensor]
    steps: int

    def __post_init__(self) -> None:
        check_count("steps", self.steps)
        if not self.weights:
            raise SipgradError("the inner problem has no weights to train")
        object.__setattr__(self, "weights", {name: w.detach() for name, w in self.weights.items()})
        dtypes = {w.dtype for w in self.weights.values()}
        if len(dtypes) != 1 or not next(iter(dtypes)).is_floating_point:
            raise SipgradError(f"weights must share one floating dtype, got {sorted(map(str, dtypes))}")

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.weights.values())).dtype

    @property
    def device(self) -> torch.device:
        return next(iter(self.weights.values())).device

    @property
    def weight_count(self) -> int:
        return sum(w.numel() for w in self.weights.values())


def epoch_schedule(examples: int, batch_size: int, steps: int, seed: int) -> torch.Tensor:
    """``steps x batch_size`` example indices: reshuffled epochs, consumed in order (RFHO's visiting)."""
    check_count("steps", steps)
    check_count("batch size", batch_size)
    if batch_size > examples:
        raise SipgradError(f"batch size {batch_size} must be between 1 and the {examples} training examples")
    generator = torch.Generator().manual_seed(seed)
    per_epoch = examples // batch_size
    epochs = -(-steps // per_epoch)
    rows = [torch.randperm(examples, generator=generator)[:per_epoch * batch_size].view(per_epoch, batch_size)
            for _ in range(epochs)]
    return torch.cat(rows)[:steps]


def mlp(features: int, hidden: Sequence[int] = SEED_HIDDEN, classes: int = 10) -> nn.Sequential:
    """RFHO's feed-forward net: ReLU hidden layers, linear output (784-300-300-10 on MNIST)."""
    for width in hidden:
        check_count("a hidden layer's width", width)
    layers: list[nn.Module] = []
    sizes = [features, *hidden]
    for a, b in pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(sizes[-1], classes))
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class ClassificationProblem:
    """An ``InnerProblem`` for a classifier, plus what the report measures (accuracies, error)."""

    inner: InnerProblem
    model: nn.Module = field(repr=False)
    data: SmallDataset = field(repr=False)
    schedule: torch.Tensor = field(repr=False)

    def logits(self, weights: Params, inputs: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, weights, (inputs,))

    def accuracy(self, weights: Params, split: Split) -> float:
        device = self.inner.device
        with torch.no_grad():
            predicted = self.logits(weights, _flat(split, self.inner.dtype, device)).argmax(1)
            return float((predicted == _labels(split, device)).double().mean())

    def error(self, weights: Params, split: Split) -> float:
        device = self.inner.device
        with torch.no_grad():
            logits = self.logits(weights, _flat(split, self.inner.dtype, device))
            return float(F.cross_entropy(logits, _labels(split, device)))


def _flat(split: Split, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return split.flat().to(dtype=dtype, device=device)


def _labels(split: Split, device: torch.device) -> torch.Tensor:
    """Class indices as int64 on ``device`` (any integer dtype is accepted; indexing needs int64)."""
    return split.labels.to(dtype=torch.long, device=device)


def classification_problem(data: SmallDataset, steps: int, batch_size: int = 200, seed: int = 0,
                           hidden: Sequence[int] = SEED_HIDDEN, update: str = "rfho",
                           dtype: torch.dtype = torch.float32, model: nn.Module | None = None,
                           vector_penalties: bool = False,
                           device: str | torch.device = "cpu") -> ClassificationProblem:
    """RFHO's experiment on ``data``: an MLP (or ``model``), per-layer L1/L2 on its weight matrices.

    The model's initial weights and the mini-batch order both come from ``seed``, drawn on
    the CPU whatever ``device`` is, so a problem on ``cuda`` starts from the same weights and
    visits the same mini-batches as on the CPU. The three splits are copied to ``device``
    once (the problem's ``data`` holds those copies), and both hypergradient modes run where
    the weights are. A ``model`` passed in is moved to ``dtype`` and ``device`` in place, as
    ``Module.to`` does.
    """
    device = usable_device(device)
    _check_labels(data)
    if device.type != "cpu":  # once here, not at every report's accuracies
        data = replace(data, **{part: Split(getattr(data, part).inputs.to(device), getattr(data, part).labels.to(device))
                                for part in ("train", "validation", "test")})
    if model is None:
        with torch.random.fork_rng(devices=[]):  # seeded initial weights, and the caller's generator left as it was
            torch.manual_seed(seed)
            model = mlp(data.features, hidden, data.classes)
    _refuse_running_statistics(model)
    model = model.to(dtype=dtype, device=device)
    weights = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    frozen = {name: p.detach() for name, p in model.named_parameters() if not p.requires_grad}
    buffers = dict(model.named_buffers())
    train_x, train_y = _flat(data.train, dtype, device), _labels(data.train, device)
    schedule = epoch_schedule(len(data.train), batch_size, steps, seed)
    on_device = schedule.to(device)  # one copy, not one host-to-device index copy per step
    val_x, val_y = _flat(data.validation, dtype, device), _labels(data.validation, device)

    def loss(current: Params, batch: Batch) -> torch.Tensor:
        inputs, labels = batch
        return F.cross_entropy(functional_call(model, {**current, **frozen, **buffers}, (inputs,)), labels)

    def batch(step: int) -> Batch:
        index = on_device[step]
        return train_x[index], train_y[index]

    def validation_loss(current: Params) -> torch.Tensor:
        return loss(current, (val_x, val_y))

    penalties = layerwise_penalties(penalized_parameters(weights), vector=vector_penalties)
    inner_update = make_update(update, loss, penalties)
    plan = plan_for(model)  # a plain stack: forward mode's tangent step is written out (hypergrad/fused.py)
    if plan is not None:
        inner_update = replace(inner_update, network=plan)
    inner = InnerProblem(weights, inner_update, batch, validation_loss, steps)
    return ClassificationProblem(inner, model, data, schedule)


def _refuse_running_statistics(model: nn.Module) -> None:
    """Batch norm in training mode updates its running statistics in place at every call: the unrolled
    problem would change the caller's model, and forward mode cannot push tangents through an in-place
    update. In ``eval()`` it is a fixed affine map of the stored statistics, which both modes handle."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._NormBase) and module.training and module.track_running_stats:
            raise SipgradError(f"layer {name or type(module).__name__} ({type(module).__name__}) is in training "
                               f"mode and would update its running statistics at every inner step; call "
                               f"model.eval() first (it then uses the stored statistics) or leave it out")


def _check_labels(data: SmallDataset) -> None:
    """Labels must be class indices: the hand-written pass (``fused.py``) indexes by them, where a negative label
    would silently pick a class from the end, and the accuracies and the report count every example (the loss's
    ``ignore_index`` is not used here)."""
    for part in ("train", "validation", "test"):
        labels = getattr(data, part).labels
        if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
            raise SipgradError(f"{data.name} {part} labels must be integer class indices, got {labels.dtype}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= data.classes):
            raise SipgradError(f"{data.name} {part} labels must lie in 0..{data.classes - 1}; found "
                               f"{int(labels.min())}..{int(labels.max())}")


def seed_hyperparameters(problem: InnerProblem, eta: float = 0.01, mu: float = 0.5, l1: float = 0.0,
                         l2: float = 0.0) -> dict[str, torch.Tensor]:
    """RFHO's starting point: eta 0.01, mu 0.5, every penalty coefficient 0.

    The starts must lie where the outer loop's projection keeps them (eta > 0, 0 <= mu < 1,
    penalties >= 0) and fit the problem's dtype: a start of 1e308 would become inf in
    float32 and only fail steps later.
    """
    largest = torch.finfo(problem.dtype).max
    for label, start, valid, needs in (("eta", eta, eta > 0, "> 0"), ("mu", mu, 0 <= mu < 1, "in [0, 1)"),
                                       ("l1", l1, l1 >= 0, ">= 0"), ("l2", l2, l2 >= 0, ">= 0")):
        if not (math.isfinite(start) and abs(start) <= largest):
            raise SipgradError(f"start {label}={start!r} is not a finite {str(problem.dtype).split('.')[-1]} number")
        if not valid:
            raise SipgradError(f"start {label}={start!r} must be {needs}")
    names = getattr(problem.update, "hyperparameters", ())
    values: dict[str, torch.Tensor] = {}
    for name in names:
        start = {"eta": eta, "mu": mu}.get(name, l1 if name.startswith("rho_l1") else l2)
        penalties = [p for p in getattr(problem.update, "penalties", ()) if p.hyper == name and p.index is not None]
        shape = (max(p.index for p in penalties) + 1,) if penalties else ()
        values[name] = torch.full(shape, start, dtype=problem.dtype, device=problem.device)
    return values


def check_hyperparameters(hyper: Mapping[str, torch.Tensor], needed: Sequence[str]) -> None:
    missing = [name for name in needed if name not in hyper]
    if missing:
        raise SipgradError(f"missing hyperparameter(s) {', '.join(missing)}")
