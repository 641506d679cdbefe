"""How well forward gradients point: cosine with the true mini-batch gradient, per sampler and batch size.

The research notes' table: for batch sizes B and direction samplers, the mean cosine
between the forward-gradient estimate (K directions) and the backprop gradient of the same
mini-batch, over R independent trials (fresh batch and directions each), with its standard
error. Beside it, the closed form for K isotropic directions in n dimensions,

    E[cos] = E[sqrt(Beta(K/2, (n-K)/2))] = Gamma((K+1)/2) Gamma(n/2) / (Gamma(K/2) Gamma((n+1)/2)),

exact for K orthonormal directions and for one Gaussian direction (where it is
Gamma(n/2) / (sqrt(pi) Gamma((n+1)/2)) ~ sqrt(2 / (pi n))), and ~ sqrt(K / n) for
1 << K << n (K Gaussian directions are nearly orthogonal there). The notes' 0.000228 for
the naive sampler is this value for n ~ 1.2e7 parameters and K = 1.

``gradient_row_correlations`` gives the notes' "row-wise correlation of the gradient
matrix": per layer, the correlation between the rows (output units) of the true weight
gradient. Strongly correlated rows are what makes a low-rank (input-span) sampler pay.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad

from sipgrad.datasets import Split
from sipgrad.engines.forward.estimators import (
    batchnorm_for_forward_mode,
    capture_layer_inputs,
    estimate_gradient,
    loss_function,
    trainable_parameters,
)
from sipgrad.engines.forward.samplers import flatten_directions, make_sampler
from sipgrad.errors import SipgradError


def closed_form_cosine(parameters: int, directions: int) -> float:
    """Expected cosine between a gradient and its estimate from K isotropic directions in n dimensions."""
    n, k = parameters, directions
    if not 1 <= k <= n:
        raise SipgradError(f"the closed form needs 1 <= directions ({k}) <= parameters ({n})")
    if k == n:
        return 1.0
    return math.exp(math.lgamma((k + 1) / 2) + math.lgamma(n / 2) - math.lgamma(k / 2) - math.lgamma((n + 1) / 2))


@dataclass(frozen=True)
class CosineRow:
    batch_size: int
    sampler: str
    cosine: float
    stderr: float
    trials: int

    def to_json(self) -> dict:
        return {"batch_size": self.batch_size, "sampler": self.sampler, "cosine": self.cosine, "stderr": self.stderr,
                "trials": self.trials}


@dataclass
class CosineTable:
    parameters: int
    directions: int
    closed_form: float
    rows: list[CosineRow] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"parameters": self.parameters, "directions": self.directions, "closed_form": self.closed_form,
                "rows": [row.to_json() for row in self.rows]}


def _flat(params: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([p.reshape(-1) for p in params.values()]).double()


def estimate_cosines(model: nn.Module, split: Split, batch_size: int, sampler_name: str, directions: int, trials: int,
                     generator: torch.Generator,
                     loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy) -> list[float]:
    """Cosine between forward-gradient estimate and true gradient on ``trials`` fresh batches of ``batch_size``."""
    if batch_size > len(split):
        raise SipgradError(f"batch size {batch_size} exceeds the {len(split)} training examples")
    sampler = make_sampler(sampler_name)
    params = trainable_parameters(model)
    cosines = []
    with batchnorm_for_forward_mode(model):
        for _ in range(trials):
            rows = torch.randperm(len(split), generator=generator)[:batch_size]
            inputs, labels = split.inputs[rows], split.labels[rows]
            loss_of = loss_function(model, loss_fn, inputs, labels)
            true = _flat(grad(loss_of)(params))
            layer_inputs = capture_layer_inputs(model, inputs) if sampler.needs_layer_inputs else None
            estimate = _flat(estimate_gradient(loss_of, params, sampler, directions, generator, layer_inputs).gradient)
            cosines.append(float(true @ estimate / (true.norm() * estimate.norm()).clamp_min(1e-300)))
    return cosines


def cosine_table(model: nn.Module, split: Split, batch_sizes: Sequence[int], samplers: Sequence[str], directions: int,
                 trials: int, seed: int = 0, progress: Callable[[], None] | None = None) -> CosineTable:
    """Mean cosine (and standard error over ``trials``) for every batch size x sampler, at ``model``'s weights."""
    if trials < 2:
        raise SipgradError(f"a standard error needs at least 2 trials, got {trials}")
    n = sum(p.numel() for p in trainable_parameters(model).values())
    table = CosineTable(n, directions, closed_form_cosine(n, directions))
    for batch_size in batch_sizes:
        for name in samplers:
            generator = torch.Generator().manual_seed(seed)
            values = torch.tensor(estimate_cosines(model, split, batch_size, name, directions, trials, generator),
                                  dtype=torch.float64)
            table.rows.append(CosineRow(batch_size, name, float(values.mean()),
                                        float(values.std() / math.sqrt(trials)), trials))
            if progress:
                progress()
    return table


def gradient_row_correlations(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                              loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
                              ) -> dict[str, torch.Tensor]:
    """Per weight matrix (conv kernels flattened per output channel): the row-by-row correlation of its gradient."""
    params = trainable_parameters(model)
    with batchnorm_for_forward_mode(model):
        gradient = grad(loss_function(model, loss_fn, inputs, labels))(params)
    out = {}
    for name, g in gradient.items():
        if g.dim() >= 2 and g.shape[0] > 1:
            rows = g.reshape(g.shape[0], -1).double()
            usable = rows.std(dim=1) > 0
            matrix = torch.full((g.shape[0], g.shape[0]), float("nan"), dtype=torch.float64)
            if usable.sum() > 1:
                matrix[usable.nonzero()[:, 0, None], usable.nonzero()[:, 0]] = torch.corrcoef(rows[usable])
            out[name] = matrix
    return out


def max_direction_overlap(directions_a: dict[str, torch.Tensor], directions_b: dict[str, torch.Tensor]) -> float:
    """Largest |cosine| between any direction of one set and any of the other (0: orthogonal sets)."""
    a, b = flatten_directions(directions_a).double(), flatten_directions(directions_b).double()
    a = a / a.norm(dim=1, keepdim=True)
    b = b / b.norm(dim=1, keepdim=True)
    return float((a @ b.T).abs().max())
