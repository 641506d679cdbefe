"""Direction samplers for forward gradients: where the K tangents of one step point.

A forward gradient averages (grad . v_k) v_k over K directions. It is an unbiased estimate
of the gradient whenever E[v v^T] acts as the identity on the space the gradient lives in,
and its quality (its cosine with the true gradient) depends on how much of that space the
directions must cover. Each sampler here is one strategy, registered by name in
``SAMPLERS``; ``make_sampler("NAME")`` builds one (``"orthogonal:NAME"`` wraps any other).

* ``gaussian``: v ~ N(0, I) over all parameters (Baydin et al. 2022).
* ``rademacher``: independent +-1 entries; same second moment, no heavy tails.
* ``layerwise``: a Gaussian draw normalised per parameter tensor to norm sqrt(n_l), so every
  layer gets the same share of the direction whatever its scale.
* ``orthonormal``: K orthonormal directions (QR of a Gaussian n x K matrix) scaled by
  sqrt(n), so (n / K) sum_k (g . q_k) q_k stays unbiased and no two directions overlap.
* ``activity`` (input span): a linear layer's weight gradient is sum_b delta_b x_b^T, so
  its rows lie in the span of the batch's inputs to that layer (for a conv, of its input
  patches). The sampler draws weight directions Z Q^T with Q an orthonormal basis of that
  span, isotropic inside it: E[v v^T] is the projector onto the span, which leaves the true
  gradient unchanged, so the estimate stays unbiased while the directions skip the
  dimensions the gradient cannot reach. Biases and other parameters get Gaussian
  directions. The gain shrinks as the batch grows and the span fills the input space.
* ``orthogonal`` (the research notes' orthogonal trick): each step's K directions are made
  orthogonal to the previous step's (projected out after a QR) and rescaled by
  sqrt(n / (n - K)) (n: the number of parameters), on top of a base sampler
  that draws in one fixed space (``orthogonal:rademacher``; plain ``orthogonal`` means
  Gaussian). ``activity`` cannot be wrapped: its space is each batch's input span, which
  moves between steps, and the previous step's directions do not lie in the new one. Conditionally on the previous step the estimate misses the
  previous span; averaged over steps it is unbiased for an isotropic base.

Every sampler returns the K directions as a dict of stacked tensors (K x the parameter's
shape), which ``estimators.directional_derivatives`` pushes through one vmapped JVP.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch

from sipgrad.errors import SipgradError

Params = Mapping[str, torch.Tensor]
Directions = dict[str, torch.Tensor]


def flatten_directions(directions: Directions) -> torch.Tensor:
    """K x n: each direction as one row over all parameters (in the dict's order)."""
    return torch.cat([v.reshape(v.shape[0], -1) for v in directions.values()], dim=1)


def unflatten_directions(rows: torch.Tensor, like: Params) -> Directions:
    """Inverse of ``flatten_directions``: K x n rows back to K x shape tensors named like ``like``."""
    out, start = {}, 0
    for name, p in like.items():
        out[name] = rows[:, start:start + p.numel()].reshape(rows.shape[0], *p.shape)
        start += p.numel()
    return out


def parameter_count(params: Params) -> int:
    return sum(p.numel() for p in params.values())


class DirectionSampler:
    """A strategy for drawing K directions over a dict of parameters.

    ``needs_layer_inputs`` tells the estimator to capture each linear/conv layer's inputs
    (rows of ``layer_inputs[weight_name]``, N x fan_in) before sampling.
    """

    name = "base"
    needs_layer_inputs = False

    def sample(self, params: Params, count: int, generator: torch.Generator | None = None,
               layer_inputs: Mapping[str, torch.Tensor] | None = None) -> Directions:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget any state carried between steps (only stateful samplers have some)."""

    def __repr__(self) -> str:
        return self.name


def _gaussian(p: torch.Tensor, count: int, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn((count, *p.shape), generator=generator, device=p.device, dtype=p.dtype)


class GaussianSampler(DirectionSampler):
    name = "gaussian"

    def sample(self, params, count, generator=None, layer_inputs=None):
        return {name: _gaussian(p, count, generator) for name, p in params.items()}


class RademacherSampler(DirectionSampler):
    name = "rademacher"

    def sample(self, params, count, generator=None, layer_inputs=None):
        return {name: torch.randint(0, 2, (count, *p.shape), generator=generator, device=p.device).to(p.dtype) * 2 - 1
                for name, p in params.items()}


class LayerwiseSampler(DirectionSampler):
    name = "layerwise"

    def sample(self, params, count, generator=None, layer_inputs=None):
        out = {}
        for name, p in params.items():
            v = _gaussian(p, count, generator)
            norms = v.reshape(count, -1).norm(dim=1).clamp_min(torch.finfo(v.dtype).tiny)
            out[name] = v * (math.sqrt(p.numel()) / norms).reshape(count, *(1,) * p.dim())
        return out


class OrthonormalSampler(DirectionSampler):
    name = "orthonormal"

    def sample(self, params, count, generator=None, layer_inputs=None):
        n = parameter_count(params)
        if count > n:
            raise SipgradError(f"the orthonormal sampler needs directions <= parameters ({n}), got {count}")
        first = next(iter(params.values()))
        gaussian = torch.randn((n, count), generator=generator, device=first.device, dtype=first.dtype)
        basis, _ = torch.linalg.qr(gaussian)
        return unflatten_directions(basis.T * math.sqrt(n), params)


def span_basis(rows: torch.Tensor, relative_tolerance: float = 1e-5) -> torch.Tensor:
    """An orthonormal basis (d x r) of the span of ``rows`` (N x d), from the smaller Gram matrix.

    Directions whose singular value is below ``relative_tolerance`` times the largest are
    dropped, so inputs that are always zero (digits' corner pixels, MNIST's border) do not
    count as dimensions. (The Gram matrix's eigenvalues are squared singular values.)
    """
    threshold = relative_tolerance ** 2
    x = rows.double()
    if x.shape[0] < x.shape[1]:
        values, vectors = torch.linalg.eigh(x @ x.T)
        keep = values > threshold * values[-1].clamp_min(1e-300)
        basis = (x.T @ vectors[:, keep]) / values[keep].sqrt()
    else:
        values, vectors = torch.linalg.eigh(x.T @ x)
        keep = values > threshold * values[-1].clamp_min(1e-300)
        basis = vectors[:, keep]
    if basis.shape[1] == 0:  # all-zero inputs: the gradient is zero too; any direction is unbiased
        basis = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    return basis.to(rows.dtype)


class ActivitySampler(DirectionSampler):
    name = "activity"
    needs_layer_inputs = True

    def sample(self, params, count, generator=None, layer_inputs=None):
        layer_inputs = layer_inputs or {}
        out = {}
        for name, p in params.items():
            rows = layer_inputs.get(name)
            if rows is None or p.dim() < 2 or p[0].numel() != rows.shape[1]:
                out[name] = _gaussian(p, count, generator)
                continue
            basis = span_basis(rows)  # fan_in x r
            # Z Q Q^T, Z Gaussian over the whole fan-in: isotropic in the span, as Z' Q^T with Z' over r is, but it
            # depends on the projector alone, not on which orthonormal basis eigh returned (its eigenvector signs
            # change with the thread count, and with them a seed's draws did).
            gaussian = torch.randn((count, p.shape[0], basis.shape[0]), generator=generator, device=p.device,
                                   dtype=p.dtype)
            out[name] = ((gaussian @ basis) @ basis.T).reshape(count, *p.shape)
        return out


class OrthogonalSampler(DirectionSampler):
    """The orthogonal trick on top of ``base``: each step's directions avoid the previous step's span."""

    def __init__(self, base: DirectionSampler) -> None:
        self.base = base
        self.name = "orthogonal" if isinstance(base, GaussianSampler) else f"orthogonal:{base.name}"
        self.needs_layer_inputs = base.needs_layer_inputs
        self.previous: torch.Tensor | None = None  # n x K orthonormal basis of the previous step's directions

    def reset(self) -> None:
        self.previous = None
        self.base.reset()

    def sample(self, params, count, generator=None, layer_inputs=None):
        n = parameter_count(params)
        if 2 * count > n:
            raise SipgradError(f"the orthogonal sampler needs 2 x directions <= parameters ({n}), got {count}")
        rows = flatten_directions(self.base.sample(params, count, generator, layer_inputs))
        # the base draws isotropically in all n dimensions (``_orthogonal`` refuses bases that draw in a
        # batch's span); projecting out K of them leaves (1 - K / n) of the second moment on average,
        # which the rescaling restores
        if self.previous is not None and self.previous.shape[0] == n and n > self.previous.shape[1]:
            rows = (rows - (rows @ self.previous) @ self.previous.T) * math.sqrt(n / (n - self.previous.shape[1]))
        self.previous = torch.linalg.qr(rows.T)[0]
        return unflatten_directions(rows, params)


def _orthogonal(base: str | None) -> DirectionSampler:
    sampler = make_sampler(base or "gaussian")
    if sampler.needs_layer_inputs:  # e.g. activity: each step draws in that batch's input span
        raise SipgradError(f"the orthogonal trick cannot wrap {sampler.name}: its directions lie in each batch's "
                           f"input span, which changes from step to step, so projecting out the previous step's "
                           f"directions would bias the estimate")
    return OrthogonalSampler(sampler)


SAMPLERS: dict[str, Callable[[str | None], DirectionSampler]] = {
    "gaussian": lambda _: GaussianSampler(),
    "rademacher": lambda _: RademacherSampler(),
    "layerwise": lambda _: LayerwiseSampler(),
    "orthonormal": lambda _: OrthonormalSampler(),
    "activity": lambda _: ActivitySampler(),
    "orthogonal": _orthogonal,
}


def make_sampler(spec: str) -> DirectionSampler:
    """A sampler from its name; ``orthogonal:BASE`` applies the orthogonal trick to another sampler."""
    name, colon, argument = spec.strip().partition(":")
    if colon and not argument.strip():  # `orthogonal:` is a typo, not a request for the default base
        raise SipgradError(f"sampler {spec!r}: nothing after ':'; name the base (e.g. orthogonal:rademacher) "
                           f"or give the name alone")
    if name not in SAMPLERS:
        raise SipgradError(f"unknown direction sampler {spec!r}; choose from {', '.join(SAMPLERS)} "
                           f"(or orthogonal:NAME)")
    if argument and name != "orthogonal":
        raise SipgradError(f"sampler {name!r} takes no argument, got {spec!r}")
    if argument.partition(":")[0] == "orthogonal":
        raise SipgradError(f"the orthogonal trick cannot wrap itself: {spec!r}")
    return SAMPLERS[name](argument or None)
