"""Inner updates: one step of training as a pure function of (weights, velocity, batch, hyperparameters).

Both hypergradient modes differentiate exactly this function, so anything written here
(a new optimiser, a new penalty) is differentiable with respect to every hyperparameter it
reads, in both modes, without further code. An update is any callable

    update(weights, velocity, batch, hyper) -> (new_weights, new_velocity)

over dicts of tensors (``hyper`` maps names to scalar or vector tensors). It must be built
from differentiable torch operations, use no in-place writes and call no ``.item()``:
the forward mode runs it under ``torch.func.jvp`` and ``vmap``, the reverse modes through
autograd (``torch.autograd.grad``).

The built-in heavy-ball update comes in two conventions (``UPDATES``):

* ``rfho``: Franceschi et al.'s ``MomentumOptimizer`` with their penalties added to the
  training loss, ``rho_l1 * |W|_1 + rho_l2 * ||W||^2`` (so the L2 gradient is
  ``2 rho_l2 W``), and v = mu v + g, w = w - eta v.
* ``torch``: ``torch.optim.SGD(momentum=mu, weight_decay=lambda)``: the L2 coefficient is
  a weight decay added to the gradient (``lambda W``, i.e. a penalty ``lambda/2 ||W||^2``)
  *before* it enters the momentum buffer, exactly as PyTorch does; same v and w updates.

The L1 term's derivative is ``rho_l1 * sign(W)``; at W == 0 exactly, sign gives 0 (the
subgradient autograd uses for ``abs``), and the hypergradient is that of this choice.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch.func import grad, jvp, vmap

from sipgrad.engines.hypergrad.fused import (
    Activations,
    SequentialPlan,
    Workspace,
    gradient_and_hvps,
    hessian_products,
    primal_pass,
)
from sipgrad.engines.hypergrad.graphs import graph_saved_tensors
from sipgrad.errors import SipgradError
from sipgrad.validation import check_count

Params = dict[str, torch.Tensor]
Batch = tuple[torch.Tensor, ...]
LEARNING_RATE, MOMENTUM = "eta", "mu"


class InnerUpdate(Protocol):
    """One differentiable training step."""

    def __call__(self, weights: Params, velocity: Params, batch: Batch,
                 hyper: Mapping[str, torch.Tensor]) -> tuple[Params, Params]: ...


@dataclass(frozen=True)
class Penalty:
    """``coefficient * |W|_1`` (kind ``l1``) or an L2 term on some parameters.

    ``hyper`` names the coefficient; ``index`` picks one entry when that hyperparameter
    is a per-layer vector (``rho_l2[k]``) instead of a scalar (``rho_l2_k``).
    """

    kind: str
    hyper: str
    params: tuple[str, ...]
    index: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("l1", "l2"):
            raise SipgradError(f"penalty kind must be 'l1' or 'l2', got {self.kind!r}")
        if not self.params:
            raise SipgradError(f"penalty {self.hyper!r} applies to no parameter")
        if self.index is not None:  # -1 would silently read the vector's last entry
            check_count(f"penalty {self.hyper!r}: index", self.index, minimum=0)

    def coefficient(self, hyper: Mapping[str, torch.Tensor]) -> torch.Tensor:
        value = hyper[self.hyper]
        return value if self.index is None else value[self.index]


def penalized_parameters(params: Mapping[str, torch.Tensor]) -> tuple[str, ...]:
    """The weight matrices and kernels (2+ dimensions): biases and norms are excluded by default."""
    return tuple(name for name, p in params.items() if p.dim() >= 2)


def layerwise_penalties(names: Sequence[str], l1: bool = True, l2: bool = True,
                        vector: bool = False) -> tuple[Penalty, ...]:
    """One L1 and one L2 coefficient per parameter, as RFHO: ``rho_l1_k`` / ``rho_l2_k``.

    With ``vector=True`` the coefficients are entries of two per-layer vectors,
    ``rho_l1`` and ``rho_l2`` (one hyperparameter tensor each, ``len(names)`` long).
    """
    penalties = []
    for kind, wanted in (("l1", l1), ("l2", l2)):
        if not wanted:
            continue
        for k, name in enumerate(names):
            penalties.append(Penalty(kind, f"rho_{kind}", (name,), k) if vector
                             else Penalty(kind, f"rho_{kind}_{k}", (name,)))
    return tuple(penalties)


@dataclass(frozen=True)
class HeavyBall:
    """SGD with heavy-ball momentum and penalties, differentiable in every coefficient.

    ``loss(weights, batch)`` is the unregularised training loss on one mini-batch; with
    ``loss_hyper`` names it is ``loss(weights, batch, {name: value})`` and may depend on
    those hyperparameters too (per-example weights, RFHO's "synthetic" hyperparameters).
    ``l2_scale`` is the derivative factor of the L2 term: 2 for RFHO's ``rho ||W||^2``, 1
    for PyTorch's weight decay. Hyperparameters read: ``eta``, ``mu``, each penalty's
    coefficient and ``loss_hyper``.

    ``network`` (set by ``classification_problem`` when it recognises the model: a plain
    ``nn.Sequential`` of Linear / ReLU / Flatten / Identity under mean cross-entropy, see
    ``hypergrad/fused.py``) says that ``loss`` is that network's loss; ``tangent_step`` then
    computes the gradient and its m Hessian-vector products by hand instead of by vmapped
    ``jvp`` of ``grad``. Whoever sets it vouches that ``loss`` is exactly that function.
    """

    loss: Callable[..., torch.Tensor]
    penalties: tuple[Penalty, ...] = ()
    l2_scale: float = 2.0
    learning_rate: str = LEARNING_RATE
    momentum: str = MOMENTUM
    loss_hyper: tuple[str, ...] = ()
    network: SequentialPlan | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "_gradient", grad(self.loss))
        object.__setattr__(self, "_compiled", None)
        object.__setattr__(self, "_by_param", {})

    def _hvp_batch(self, weights: Params, directions: Params, loss_hyper: Params, loss_directions: Params,
                   batch: Batch) -> tuple[Params, Params]:
        """The inner gradient and its m tangents (Hessian-vector products): one vmapped forward-over-reverse."""
        def one(direction: Params, loss_direction: Params) -> tuple[Params, Params]:
            return jvp(lambda w, lh: self.loss_gradient(w, batch, lh), (weights, loss_hyper),
                       (direction, loss_direction))

        return vmap(one, out_dims=(None, 0))(directions, loss_directions)

    @property
    def hyperparameters(self) -> tuple[str, ...]:
        """Names this update reads, in a stable order (penalties first, as RFHO prints them)."""
        names = [p.hyper for p in self.penalties]
        return tuple(dict.fromkeys([*names, self.learning_rate, self.momentum, *self.loss_hyper]))

    def loss_gradient(self, weights: Params, batch: Batch, hyper: Mapping[str, torch.Tensor]) -> Params:
        """The inner gradient: ``torch.func.grad`` under transforms, plain autograd inside a reverse sweep.

        When the weights are ordinary tensors that autograd tracks (the reverse modes),
        ``torch.autograd.grad(create_graph=True)`` gives the same gradient about 7% faster
        than ``torch.func.grad`` (benchmarks/hypergradient.py measures the modes).
        """
        if _tracked_by_autograd(weights):
            # A weight that no differentiated hyperparameter reaches (a bias when only penalties are
            # differentiated) does not require grad, yet its gradient is part of the step: make it a leaf.
            weights = {name: w if w.requires_grad else w.detach().requires_grad_() for name, w in weights.items()}
        extra = (weights, batch) if not self.loss_hyper else (weights, batch, {n: hyper[n] for n in self.loss_hyper})
        if _tracked_by_autograd(weights):
            values = list(weights.values())
            grads = torch.autograd.grad(self.loss(*extra), values, create_graph=True, allow_unused=True)
            return {name: torch.zeros_like(w) if g is None else g for (name, w), g in zip(weights.items(), grads)}
        return self._gradient(*extra)

    def penalty_gradient(self, weights: Params, hyper: Mapping[str, torch.Tensor]) -> Params:
        extra: Params = {}
        for penalty in self.penalties:
            rho = penalty.coefficient(hyper)
            for name in penalty.params:
                w = weights[name]
                term = rho * torch.sign(w) if penalty.kind == "l1" else (self.l2_scale * rho) * w
                extra[name] = extra[name] + term if name in extra else term
        return extra

    def __call__(self, weights: Params, velocity: Params, batch: Batch,
                 hyper: Mapping[str, torch.Tensor]) -> tuple[Params, Params]:
        return self._apply(weights, velocity, self.loss_gradient(weights, batch, hyper), hyper)

    def _apply(self, weights: Params, velocity: Params, gradient: Params,
               hyper: Mapping[str, torch.Tensor]) -> tuple[Params, Params]:
        """The update given the loss gradient: add the penalties, then heavy ball (v' = mu v + g, w' = w - eta v')."""
        extra = self.penalty_gradient(weights, hyper)
        eta, mu = hyper[self.learning_rate], hyper[self.momentum]
        new_weights, new_velocity = {}, {}
        for name, w in weights.items():
            g = gradient[name] + extra[name] if name in extra else gradient[name]
            v = mu * velocity[name] + g
            new_velocity[name] = v
            new_weights[name] = w - eta * v
        return new_weights, new_velocity

    def tangent_step(self, weights: Params, velocity: Params, batch: Batch, hyper: Mapping[str, torch.Tensor],
                     tangent_w: Params, tangent_v: Params, rows: Mapping[str, int],
                     compiled: bool = False, workspace: Workspace | None = None) -> tuple[Params, ...]:
        """One step of the state and of its m tangents Z = d(w, v)/dh, with the update's structure fused.

        The same numbers as ``jvp`` of ``__call__`` vmapped over the m tangents (a test checks
        it), but only the inner gradient goes through ``jvp``: its tangent is the batch of m
        Hessian-vector products H Z_w, one ``vmap``-ed forward-over-reverse pass. The rest is
        linear in Z and written out, in place, with the one-hot structure of the
        hyperparameter tangents (``rows[name]`` is the row of Z that ``name``'s first entry
        drives; fixed hyperparameters have no row):

            Z_v' = mu Z_v + H Z_w + sum_l2 s rho Z_w + e_mu v + e_rho_l1 sign(w) + e_rho_l2 s w
            Z_w' = Z_w - eta Z_v' - e_eta v'

        ``tangent_w`` and ``tangent_v`` are consumed (updated in place). ``compiled`` runs the
        Hessian-vector products through ``torch.compile`` (compiled once per update and shape;
        the compilation takes minutes on CPU, so it pays only for long or repeated runs).
        With a recognised ``network`` (and no loss hyperparameters, not ``compiled``) the
        gradient and the m products come from ``fused.gradient_and_hvps`` instead: the same
        numbers, written out layer by layer with the m tangents in one matmul per product;
        ``workspace`` (``fused.Workspace``, one per run) then keeps their intermediates
        from step to step.
        """
        loss_hyper = {name: hyper[name] for name in self.loss_hyper}
        m = next(iter(tangent_w.values())).shape[0]
        loss_directions = {name: _one_hot(m, rows.get(name), value) for name, value in loss_hyper.items()}

        if not compiled and self._written_out(weights, batch):
            gradient, hvp = gradient_and_hvps(self.network, weights, tangent_w, batch, workspace)
        else:
            hvp_batch = self._hvp_batch
            if compiled:
                if self._compiled is None:
                    object.__setattr__(self, "_compiled", torch.compile(self._hvp_batch, dynamic=False))
                hvp_batch = self._compiled
            gradient, hvp = hvp_batch(weights, tangent_w, loss_hyper, loss_directions, batch)
            # A loss whose Hessian is zero (piecewise linear, such as F.l1_loss) gets its products back from
            # vmap as one expanded zero; the in-place updates below need tensors of their own.
            hvp = {name: h if h.is_contiguous() else h.contiguous() for name, h in hvp.items()}
        # The state steps by the same code as the reverse modes' forward sweep (``_apply_fused``).
        new_weights, new_velocity = self._apply_fused(weights, velocity, gradient, hyper)
        eta, mu = hyper[self.learning_rate], hyper[self.momentum]
        for name, w in weights.items():
            z_v = hvp[name].addcmul_(tangent_v[name], mu)
            z_w = tangent_w[name]
            for penalty in self._penalties_of(name):
                rho = penalty.coefficient(hyper)
                row = rows.get(penalty.hyper)
                if penalty.kind == "l2":
                    z_v.addcmul_(z_w, self.l2_scale * rho)
                if row is not None:
                    row += penalty.index or 0
                    z_v[row] += torch.sign(w) if penalty.kind == "l1" else self.l2_scale * w
            if self.momentum in rows:
                z_v[rows[self.momentum]] += velocity[name]
            z_w.addcmul_(z_v, -eta)
            if self.learning_rate in rows:
                z_w[rows[self.learning_rate]] -= new_velocity[name]
            tangent_v[name] = z_v
        return new_weights, new_velocity, tangent_w, tangent_v


    def traced_step(self, weights: Params, velocity: Params, batch: Batch, hyper: Mapping[str, torch.Tensor],
                    wrt: Collection[str] = (), keep: bool = False
                    ) -> tuple[Params, Params, StepGraph | Activations | None]:
        """One step for the reverse modes' forward sweep, and (with ``keep``) what its Hessian-vector product needs.

        The gradient comes from plain ``torch.autograd.grad`` (faster than ``torch.func.grad``
        outside transforms). With ``keep`` it is taken with ``create_graph=True`` and that graph
        is returned: it holds the step's activations (for an MLP: the layer inputs, the ReLU
        outputs and the back-propagated errors, O(batch x width)), so the reverse sweep's
        Hessian-vector product needs no second forward and backward pass. With a recognised
        ``network`` the gradient is written out instead (``fused.primal_pass``) and ``keep``
        returns the same activations as an ``Activations``. The new state carries no graph.
        """
        if self._written_out(weights, batch):
            gradient, kept = primal_pass(self.network, weights, batch, keep=keep)
        else:
            graph = self.gradient_graph(weights, batch, hyper, wrt, create_graph=keep)
            gradient, kept = graph.gradient_values(), graph if keep else None
        with torch.no_grad():
            new_weights, new_velocity = self._apply_fused(weights, velocity, gradient, hyper)
        return new_weights, new_velocity, kept

    def _written_out(self, weights: Params, batch: Batch) -> bool:
        """Whether this step's gradient and Hessian-vector products take ``fused.py``'s hand-written pass."""
        return self.network is not None and not self.loss_hyper and self.network.applies(weights, batch)

    def _apply_fused(self, weights: Params, velocity: Params, gradient: Params,
                     hyper: Mapping[str, torch.Tensor]) -> tuple[Params, Params]:
        """``_apply`` in fewer passes over the weights (fused multiply-adds), for plain tensors only.

        Equal to ``_apply`` up to the order of the additions (a test checks it). It is what the
        reverse modes' forward sweep and forward mode's ``tangent_step`` run; ``__call__`` keeps
        the plain form because the transforms (``jvp``, ``vmap``) and the generic sweep differentiate it.
        """
        eta, mu = hyper[self.learning_rate], hyper[self.momentum]
        new_weights, new_velocity = {}, {}
        for name, w in weights.items():
            v = torch.addcmul(gradient[name], velocity[name], mu)
            for penalty in self._penalties_of(name):
                rho = penalty.coefficient(hyper)
                if penalty.kind == "l1":
                    v.addcmul_(torch.sign(w), rho)
                else:
                    v.addcmul_(w, self.l2_scale * rho)
            new_velocity[name] = v
            new_weights[name] = torch.addcmul(w, v, eta, value=-1)
        return new_weights, new_velocity

    def gradient_graph(self, weights: Params, batch: Batch, hyper: Mapping[str, torch.Tensor],
                       wrt: Collection[str] = (), create_graph: bool = True) -> StepGraph:
        """The inner gradient at ``weights`` with autograd's graph, whose leaves are the weights and the
        differentiated loss hyperparameters (``wrt``)."""
        with torch.enable_grad():
            leaves = {name: w.detach().requires_grad_() for name, w in weights.items()}
            loss_leaves = {name: hyper[name].detach().requires_grad_(create_graph and name in wrt)
                           for name in self.loss_hyper}
            loss = self.loss(leaves, batch, loss_leaves) if self.loss_hyper else self.loss(leaves, batch)
            grads = torch.autograd.grad(loss, list(leaves.values()), create_graph=create_graph, allow_unused=True)
        gradient = {name: torch.zeros_like(w) if g is None else g for (name, w), g in zip(leaves.items(), grads)}
        return StepGraph(leaves, {n: t for n, t in loss_leaves.items() if t.requires_grad}, gradient)

    def adjoint_step(self, weights: Params, velocity: Params, new_velocity: Params, batch: Batch,
                     hyper: Mapping[str, torch.Tensor], wrt: Collection[str], adjoint_w: Params, adjoint_v: Params,
                     graph: StepGraph | Activations | None = None) -> tuple[Params, Params, dict[str, torch.Tensor]]:
        """One step of the reverse sweep with the update's structure written out (no autograd through it).

        (p_w', p_v') = dE/d(w_{t+1}, v_{t+1}) becomes dE/d(w_t, v_t) and this step's share of
        dE/dh. With q = p_v' - eta p_w' (w' reads v'):

            p_w = p_w' + H q + sum_l2 s rho q,     p_v = mu q
            dE/d eta += -<p_w', v'>,  dE/d mu += <q, v>,
            dE/d rho_l1 += <q, sign(w)>,  dE/d rho_l2 += s <q, w>,  dE/d (loss hyper) += <q, dg/d(loss hyper)>

        H q, the only product with the Hessian, is one double-backward through the gradient's
        graph: the one kept by ``traced_step`` (``graph``) or, without it, one rebuilt here from
        the stored weights (a forward and backward pass more). With a recognised ``network``
        it is ``fused.hessian_products`` on the kept ``Activations`` or on a rebuilt pass (the
        forward pass and the errors only: 2 products per layer). ``v'`` is the stored next
        velocity. Returns (p_w, p_v, {name: contribution} for the names in ``wrt``).
        """
        eta, mu = hyper[self.learning_rate], hyper[self.momentum]
        q = {name: torch.addcmul(adjoint_v[name], adjoint_w[name], eta, value=-1) for name in weights}
        products, mixed = self._hessian_times(weights, batch, hyper, wrt, q, graph)
        out = {name: torch.zeros_like(hyper[name]) for name in wrt}
        new_adjoint_w = {}
        for (name, w), hq in zip(weights.items(), products):
            p = hq.add_(adjoint_w[name])
            for penalty in self._penalties_of(name):
                rho = penalty.coefficient(hyper)
                if penalty.kind == "l2":
                    p.addcmul_(q[name], self.l2_scale * rho)
                if penalty.hyper in out:
                    term = torch.vdot(q[name].reshape(-1), (torch.sign(w) if penalty.kind == "l1" else w).reshape(-1))
                    term = term if penalty.kind == "l1" else self.l2_scale * term
                    if penalty.index is None:
                        out[penalty.hyper] = out[penalty.hyper] + term
                    else:
                        out[penalty.hyper][penalty.index] += term
            new_adjoint_w[name] = p
        if self.learning_rate in out:
            out[self.learning_rate] = out[self.learning_rate] - _dot(adjoint_w, new_velocity)
        if self.momentum in out:
            out[self.momentum] = out[self.momentum] + _dot(q, velocity)
        for name, share in mixed.items():
            out[name] = out[name] + share
        return new_adjoint_w, {name: mu * q[name] for name in weights}, out

    def _hessian_times(self, weights: Params, batch: Batch | None, hyper: Mapping[str, torch.Tensor],
                       wrt: Collection[str], q: Params, graph: StepGraph | Activations | None
                       ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """([H q per weight], {loss hyperparameter: <q, dg/d(it)>}) at ``weights``: the adjoint step's products."""
        if isinstance(graph, Activations) or (graph is None and self._written_out(weights, batch)):
            if graph is None:
                graph = primal_pass(self.network, weights, batch, weight_gradient=False, keep=True)[1]
            products = hessian_products(self.network, weights, {n: t.unsqueeze(0) for n, t in q.items()}, graph)
            return [products[name][0] for name in weights], {}
        if graph is None:
            graph = self.gradient_graph(weights, batch, hyper, wrt, create_graph=True)
        inputs = [*graph.weights.values(), *graph.loss_hyper.values()]
        outputs = [(g, q[name]) for name, g in graph.gradient.items() if g.requires_grad]  # not a constant gradient
        products = torch.autograd.grad([g for g, _ in outputs], inputs, [c for _, c in outputs],
                                       allow_unused=True) if outputs else [None] * len(inputs)
        products = [torch.zeros_like(x) if g is None else g for g, x in zip(products, inputs)]
        count = len(graph.weights)
        return products[:count], dict(zip(graph.loss_hyper, products[count:]))

    def _penalties_of(self, name: str) -> tuple[Penalty, ...]:
        by_param = self._by_param
        if name not in by_param:
            by_param[name] = tuple(p for p in self.penalties if name in p.params)
        return by_param[name]


@dataclass(frozen=True)
class StepGraph:
    """One inner step's loss gradient and the autograd graph behind it (leaves: weights, loss hyperparameters)."""

    weights: Params
    loss_hyper: Params
    gradient: Params

    def gradient_values(self) -> Params:
        return {name: g.detach() for name, g in self.gradient.items()}

    def saved_tensors(self) -> list[torch.Tensor]:
        """The tensors the graph keeps for its backward pass (for state-memory accounting)."""
        return graph_saved_tensors(self.gradient.values())


def _dot(a: Params, b: Params) -> torch.Tensor:
    return sum(torch.vdot(a[name].reshape(-1), b[name].reshape(-1)) for name in a)


def _tracked_by_autograd(weights: Params) -> bool:
    return torch.is_grad_enabled() and any(
        w.requires_grad and not torch._C._functorch.is_functorch_wrapped_tensor(w) for w in weights.values())


def _one_hot(m: int, row: int | None, value: torch.Tensor) -> torch.Tensor:
    """The m tangent directions of one hyperparameter: rows ``row ..`` of the identity (zeros if fixed)."""
    directions = value.new_zeros((m, value.numel()))
    if row is not None:
        directions[row:row + value.numel()] = torch.eye(value.numel(), dtype=value.dtype, device=value.device)
    return directions.reshape(m, *value.shape)


def rfho_momentum(loss: Callable[[Params, Batch], torch.Tensor], penalties: Sequence[Penalty] = ()) -> HeavyBall:
    """RFHO's momentum update: penalties ``rho_l1 |W|_1 + rho_l2 ||W||^2`` in the loss."""
    return HeavyBall(loss, tuple(penalties), l2_scale=2.0)


def torch_momentum(loss: Callable[[Params, Batch], torch.Tensor], penalties: Sequence[Penalty] = ()) -> HeavyBall:
    """``torch.optim.SGD(lr=eta, momentum=mu, weight_decay=rho_l2)``: decay inside the momentum buffer."""
    return HeavyBall(loss, tuple(penalties), l2_scale=1.0)


UPDATES: dict[str, Callable[..., HeavyBall]] = {"rfho": rfho_momentum, "torch": torch_momentum}


def make_update(name: str, loss: Callable[[Params, Batch], torch.Tensor],
                penalties: Sequence[Penalty] = ()) -> HeavyBall:
    """A built-in update by name (``UPDATES``)."""
    if name not in UPDATES:
        raise SipgradError(f"unknown inner update {name!r}; choose from {', '.join(UPDATES)}")
    return UPDATES[name](loss, penalties)
