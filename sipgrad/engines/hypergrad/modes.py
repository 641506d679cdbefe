"""Two exact modes of one unrolled procedure: forward-HG and reverse-HG (Franceschi et al. 2017).

With state s = (w, v) and one inner step s_{t+1} = Phi_t(s_t, h), the hypergradient of the
validation loss E(w_T) is

    forward:  Z_{t+1} = A_t Z_t + B_t,  Z_0 = 0,       dE/dh = dE/ds_T . Z_T
    reverse:  p_T = dE/ds_T,  p_t = p_{t+1} A_t,        dE/dh = sum_t p_{t+1} B_t

with A_t = dPhi_t/ds and B_t = dPhi_t/dh. Neither mode forms A_t or B_t:

* **forward** carries Z (for every weight tensor, a leading axis of m = number of scalar
  hyperparameters) and pushes all m columns through one step with ``torch.func.jvp`` of
  the update, ``vmap``-ed over the m tangents: the primal step runs once, the m
  Hessian-vector products of the inner gradient run as one batched pass. It keeps
  (m + 1) copies of the state whatever T is.
* **reverse** stores the trajectory s_0 .. s_T and sweeps back with the vector-Jacobian
  product of the same update, through autograd (one reverse-over-reverse product per step). It keeps T + 2 copies of
  the state (trajectory and adjoint), as RFHO's ``ReverseHyperGradient``; with
  ``checkpoint_every=k`` it stores every k-th state and recomputes each segment on the way
  back (about T/k + k + 2 copies, one extra forward sweep).

``state_mib`` counts the bytes of the tensors each mode keeps across steps (RFHO's
"memory usage"), not transient activations.

Nothing is clipped: a non-finite value in a weight, velocity, tangent, adjoint, the
validation loss or a hypergradient raises ``NonFiniteError`` naming the step.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch.func import jvp, vmap

from sipgrad.engines.hypergrad.fused import Activations, Workspace
from sipgrad.engines.hypergrad.graphs import graph_saved_tensors
from sipgrad.engines.hypergrad.problem import InnerProblem, check_hyperparameters
from sipgrad.engines.hypergrad.updates import HeavyBall, Params, StepGraph
from sipgrad.errors import SipgradError
from sipgrad.validation import check_count

MIB = 2.0 ** 20
CHECK_EVERY = 10  # steps between finiteness checks (one host sync each); the failing step is still named


class NonFiniteError(SipgradError):
    """A NaN or infinity appeared in the unrolled training or its derivatives."""


@dataclass
class HypergradientResult:
    """The validation loss after T steps and its derivative for each hyperparameter.

    ``hypergradient[name]`` has the shape of ``hyper[name]`` (scalars for scalars).
    """

    validation_loss: float
    hypergradient: dict[str, torch.Tensor]
    mode: str
    steps: int
    state_mib: float
    seconds: float
    weights: Params = field(repr=False, default_factory=dict)
    velocity: Params = field(repr=False, default_factory=dict)

    def as_floats(self) -> dict[str, float | list[float]]:
        return {name: g.tolist() for name, g in self.hypergradient.items()}


def tensor_mib(tensors: Iterable[torch.Tensor]) -> float:
    """MiB held by ``tensors``, each storage counted once."""
    seen, total = set(), 0
    for tensor in tensors:
        storage = tensor.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        if key not in seen:
            seen.add(key)
            total += storage.nbytes()
    return total / MIB


def _values(*groups: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
    return [t for group in groups for t in group.values()]


class _FiniteWatch:
    """Collects per-step finiteness flags on the device; syncs once every few steps."""

    def __init__(self, what: str) -> None:
        self.what, self.flags, self.steps = what, [], []

    def add(self, step: int, tensors: Sequence[torch.Tensor]) -> None:
        # min and max in one read-only pass (NaN propagates to both; +-inf reaches one): on forward mode's
        # m x n tangents about 20x cheaper than abs().amax(), which writes a copy first.
        extremes = [x for t in tensors if t.numel() for x in torch.aminmax(t.detach())]
        self.flags.append(torch.isfinite(torch.stack(extremes)).all() if extremes else torch.tensor(True))
        self.steps.append(step)
        if len(self.flags) >= CHECK_EVERY:
            self.check()

    def check(self) -> None:
        if not self.flags:
            return
        ok = torch.stack(self.flags)
        if not bool(ok.all()):
            first = self.steps[int((~ok).nonzero()[0, 0])]
            raise NonFiniteError(f"non-finite {self.what} at inner step {first}; lower the learning rate "
                                 f"(eta) or the number of steps")
        self.flags, self.steps = [], []


def _prepare(problem: InnerProblem, hyper: Mapping[str, torch.Tensor],
             wrt: Sequence[str] | None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split ``hyper`` into (differentiated, fixed), as tensors of the problem's dtype."""
    needed = getattr(problem.update, "hyperparameters", ())
    check_hyperparameters(hyper, needed)
    values = {}
    for name, value in hyper.items():
        if isinstance(value, torch.Tensor) and _carries_derivatives(value):
            raise SipgradError(f"hyperparameter {name} carries a derivative (requires_grad, a dual or a torch.func "
                               f"tensor); hypergradients are computed once and are not differentiable again, so "
                               f"pass plain values")
        tensor = torch.as_tensor(value, dtype=problem.dtype, device=problem.device).detach()
        if not bool(torch.isfinite(tensor).all()):
            raise NonFiniteError(f"hyperparameter {name} is not finite ({tensor.tolist()})")
        values[name] = tensor
    _check_names_and_shapes(problem.update, values)
    wrt = tuple(values) if wrt is None else tuple(wrt)
    unknown = [name for name in wrt if name not in values]
    if unknown or not wrt:
        raise SipgradError(f"wrt must name given hyperparameters; unknown: {', '.join(unknown) or '(none given)'}")
    return {n: values[n] for n in wrt}, {n: v for n, v in values.items() if n not in wrt}


def _check_names_and_shapes(update: object, values: Mapping[str, torch.Tensor]) -> None:
    """A hyperparameter the update does not read would get a hypergradient of 0 and be tuned for nothing, and a
    per-layer vector of the wrong length would leave entries unread (or index past a scalar): refuse both.

    Only updates that say what they read (``hyperparameters``) are checked for names. Shapes are checked for
    the built-in ``HeavyBall``, whose layout is known: a penalty's coefficient must be a scalar, or a vector of
    one entry per indexed layer, and the learning rate and momentum scalars (another update may give the same
    attribute names other meanings, such as a fixed momentum of 0.9).
    """
    known = tuple(getattr(update, "hyperparameters", ()))
    if not known:
        return
    unknown = [name for name in values if name not in known]
    if unknown:
        raise SipgradError(f"hyperparameter(s) {', '.join(unknown)} not read by this update (it reads "
                           f"{', '.join(known)})")
    if not isinstance(update, HeavyBall):
        return
    lengths: dict[str, int | None] = {update.learning_rate: None, update.momentum: None}
    for penalty in update.penalties:
        index = penalty.index
        lengths[penalty.hyper] = None if index is None else max(lengths.get(penalty.hyper) or 0, index + 1)
    for name, length in lengths.items():
        value = values[name]
        if length is None and value.numel() != 1:
            raise SipgradError(f"hyperparameter {name} must be a scalar, got shape {tuple(value.shape)}")
        if length is not None and tuple(value.shape) != (length,):
            raise SipgradError(f"hyperparameter {name} must be a vector of {length} (one entry per layer it "
                               f"penalises), got shape {tuple(value.shape)}")


def _carries_derivatives(tensor: torch.Tensor) -> bool:
    """True for a tensor an outer autograd / jvp / vmap would differentiate (we would silently cut it)."""
    from torch.autograd.forward_ad import unpack_dual

    if tensor.requires_grad or torch._C._functorch.is_functorch_wrapped_tensor(tensor):
        return True
    return unpack_dual(tensor).tangent is not None


def _basis(diff: Mapping[str, torch.Tensor]) -> tuple[int, dict[str, torch.Tensor]]:
    """The m one-hot tangent directions, per hyperparameter: shape (m, *its shape)."""
    m = sum(h.numel() for h in diff.values())
    eye = torch.eye(m, dtype=next(iter(diff.values())).dtype, device=next(iter(diff.values())).device)
    basis, offset = {}, 0
    for name, h in diff.items():
        basis[name] = eye[:, offset:offset + h.numel()].reshape(m, *h.shape)
        offset += h.numel()
    return m, basis


def _rows(diff: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """The first row of Z (tangent index) that each differentiated hyperparameter drives."""
    rows, offset = {}, 0
    for name, h in diff.items():
        rows[name] = offset
        offset += h.numel()
    return rows


def _final_gradient(problem: InnerProblem, weights: Params, watch: _FiniteWatch) -> tuple[torch.Tensor, Params]:
    """dE/dw_T by plain autograd: ``torch.func.grad`` would import ``torch._dynamo`` on first use (about
    1.5 s and 180 MiB once per process), which the reverse modes otherwise never need."""
    with torch.enable_grad():
        leaves = {name: w.detach().requires_grad_() for name, w in weights.items()}
        loss = problem.validation_loss(leaves)
        grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    gradient = {name: torch.zeros_like(w) if g is None else g for (name, w), g in zip(leaves.items(), grads)}
    loss = loss.detach()
    if not bool(torch.isfinite(loss)):
        raise NonFiniteError(f"non-finite validation loss after {problem.steps} inner steps")
    watch.add(problem.steps, list(gradient.values()))
    watch.check()
    return loss, gradient


def forward_hypergradient(problem: InnerProblem, hyper: Mapping[str, torch.Tensor],
                          wrt: Sequence[str] | None = None, fused: bool = True,
                          compiled: bool = False) -> HypergradientResult:
    """Forward-HG: carry Z = ds/dh for all m hyperparameters at once (jvp vmapped over tangents).

    With ``fused`` (default) and an update that offers ``tangent_step`` (the built-in
    heavy ball), only the inner gradient is pushed through ``jvp`` and the linear rest of
    the update is applied to Z in place; otherwise the whole update goes through ``jvp``.
    Both are exact; the fused step does fewer passes over the m x n tangents. When the
    update carries a recognised ``network`` (``classification_problem`` on a plain
    Linear/ReLU stack), the fused step's gradient and m Hessian-vector products are written
    out by hand (``hypergrad/fused.py``), 1.2x to 1.4x faster on the digits goal block
    (docs/engines.md, Performance).
    ``compiled`` (fused only) runs the vmapped-``jvp`` products through ``torch.compile``.
    """
    began = time.perf_counter()
    diff, fixed = _prepare(problem, hyper, wrt)
    m, basis = _basis(diff)
    weights = dict(problem.weights)
    velocity = {name: torch.zeros_like(w) for name, w in weights.items()}
    tangent_w = {name: w.new_zeros((m, *w.shape)) for name, w in weights.items()}
    tangent_v = {name: w.new_zeros((m, *w.shape)) for name, w in weights.items()}
    watch = _FiniteWatch("weight, velocity or tangent")
    state_mib = tensor_mib(_values(weights, velocity, tangent_w, tangent_v, diff, fixed))
    rows = _rows(diff)
    fused_step = getattr(problem.update, "tangent_step", None) if fused else None
    workspace = Workspace()
    with _torch_forward_ad_gaps():
        for step in range(problem.steps):
            weights, velocity, tangent_w, tangent_v = _forward_step(problem, problem.batch(step), fused_step, diff,
                                                                  fixed, basis, weights, velocity, tangent_w,
                                                                  tangent_v, rows, compiled, workspace)
            watch.add(step, _values(weights, velocity, tangent_w, tangent_v))
    loss, gradient = _final_gradient(problem, weights, watch)
    flat = sum((tangent_w[name] * gradient[name]).reshape(m, -1).sum(1) for name in weights)
    return HypergradientResult(float(loss), _unflatten(flat, diff, "forward"), "forward", problem.steps,
                               state_mib, time.perf_counter() - began, weights, velocity)


def _forward_step(problem: InnerProblem, batch: tuple, fused_step: Callable | None, diff: Params, fixed: Params,
                  basis: Params, weights: Params, velocity: Params, tangent_w: Params, tangent_v: Params,
                  rows: Mapping[str, int], compiled: bool, workspace: Workspace) -> tuple[Params, ...]:
    """One inner step of the state and of its m tangents, fused or through ``jvp`` of the whole update."""
    if fused_step is not None:
        return fused_step(weights, velocity, batch, {**fixed, **diff}, tangent_w, tangent_v, rows, compiled,
                          workspace=workspace)

    def inner(w: Params, v: Params, h: Params) -> tuple[Params, Params]:
        return problem.update(w, v, batch, {**fixed, **h})

    def push(zw: Params, zv: Params, zh: Params) -> tuple:
        return jvp(inner, (weights, velocity, diff), (zw, zv, zh))

    (weights, velocity), (tangent_w, tangent_v) = vmap(push, out_dims=((None, None), (0, 0)))(
        tangent_w, tangent_v, basis)
    return weights, velocity, tangent_w, tangent_v


@contextmanager
def _torch_forward_ad_gaps():
    """Turn the known torch failures of forward-over-reverse into one clear error.

    ``F.mse_loss`` with its mean reduction writes in place into the zero tangent of a target
    that has none, under ``jvp`` of its gradient (pytorch#123996, open as of torch 2.14); some
    ops' backward has no forward-mode rule at all (``F.huber_loss``'s, for one).
    """
    try:
        yield
    except NotImplementedError as error:  # before RuntimeError, of which it is a subclass
        if "forward AD" not in str(error):
            raise
        operation = str(error).split(" with ", 1)[1].split(" that ", 1)[0] if " with " in str(error) else "an op"
        raise SipgradError(f"forward mode cannot push tangents through {operation}: torch has no forward-mode "
                           f"rule for it; use mode='reverse'") from None
    except RuntimeError as error:
        if "ZeroTensors are immutable" not in str(error):
            raise
        raise SipgradError("forward mode cannot push tangents through this loss's gradient (a torch bug, "
                           "pytorch#123996, hit by F.mse_loss with its mean reduction); use mode='reverse', or "
                           "write the loss out, e.g. ((output - target) ** 2).mean()") from None


def _unflatten(flat: torch.Tensor, diff: Mapping[str, torch.Tensor], mode: str) -> dict[str, torch.Tensor]:
    if not bool(torch.isfinite(flat).all()):
        raise NonFiniteError(f"non-finite hypergradient ({mode} mode)")
    out, offset = {}, 0
    for name, h in diff.items():
        out[name] = flat[offset:offset + h.numel()].reshape(h.shape)
        offset += h.numel()
    return out


def reverse_hypergradient(problem: InnerProblem, hyper: Mapping[str, torch.Tensor],
                          wrt: Sequence[str] | None = None, checkpoint_every: int | None = 1,
                          store_activations: bool = False, fused: bool = True) -> HypergradientResult:
    """Reverse-HG: store the trajectory, then sweep back one vector-Jacobian product per step.

    ``checkpoint_every=k`` stores every k-th state and recomputes each segment on the way
    back. ``None`` keeps autograd's whole unrolled graph instead (as ``higher`` does): no
    recomputation, but every step's activations stay alive; its ``state_mib`` counts the
    tensors that graph saves.

    With an update that offers ``adjoint_step`` (the built-in heavy ball) and ``fused``
    (default), each backward step is written out and only its Hessian-vector product goes
    through autograd; when the update carries a recognised ``network`` (a plain
    Linear/ReLU stack, see ``hypergrad/fused.py``) the gradient and that product are
    written out too. ``fused=False`` takes the vector-Jacobian product of the whole update, for any update.
    ``store_activations`` (fused only) also keeps, for every stored step, what its
    Hessian-vector product needs (the gradient's graph, or the hand-written pass's
    ``Activations``; counted in ``state_mib``), so that the backward sweep does not redo
    each step's forward and backward pass. Without it the trajectory keeps T + 2 copies of
    the state.
    """
    structured = _check_reverse_options(problem, checkpoint_every, store_activations, fused)
    began = time.perf_counter()
    diff, fixed = _prepare(problem, hyper, wrt)
    step_fn = _step_function(problem, fixed)
    if checkpoint_every is None:
        loss, flat, state_mib, weights, velocity = _reverse_through_graph(problem, step_fn, diff, fixed)
    else:
        sweep = _Sweep(problem, step_fn, diff, fixed, structured, store_activations)
        loss, flat, state_mib, weights, velocity = _reverse_by_trajectory(problem, sweep, checkpoint_every)
    return HypergradientResult(float(loss), _unflatten(flat, diff, "reverse"), "reverse", problem.steps,
                               state_mib, time.perf_counter() - began, weights, velocity)


def _check_reverse_options(problem: InnerProblem, checkpoint_every: int | None, store_activations: bool,
                           fused: bool) -> bool:
    """Refuse option values reverse mode cannot honour; True when the update's own adjoint step is used."""
    if checkpoint_every is not None:
        check_count("checkpoint_every (or None)", checkpoint_every)
    structured = getattr(problem.update, "adjoint_step", None) is not None and fused
    if store_activations and (checkpoint_every is None or not structured):
        raise SipgradError("store_activations needs a stored trajectory (checkpoint_every >= 1) and an update with "
                           "adjoint_step (the built-in heavy ball) with fused=True")
    return structured


class _Sweep:
    """The two halves of a trajectory reverse mode: one inner step forward, one adjoint step back.

    ``structured``: the update's own ``traced_step`` / ``adjoint_step`` (plain autograd for
    the gradient, the linear rest written out); otherwise ``step_fn`` and one ``vjp`` of the
    whole update. ``keep``: each forward step returns its gradient's graph, which the
    matching backward step consumes.
    """

    def __init__(self, problem: InnerProblem, step_fn: Callable, diff: Params, fixed: Params, structured: bool,
                 keep: bool) -> None:
        self.problem, self.step_fn, self.diff, self.structured, self.keep = problem, step_fn, diff, structured, keep
        self.hyper = {**fixed, **diff}

    def forward(self, step: int, weights: Params, velocity: Params,
                keep: bool = False) -> tuple[Params, Params, StepGraph | Activations | None]:
        """The next state, and (``keep``, structured only) this step's gradient graph."""
        if not self.structured:
            with torch.no_grad():
                return (*self.step_fn(step, weights, velocity, self.diff), None)
        return self.problem.update.traced_step(weights, velocity, self.batch(step), self.hyper, self.diff, keep)

    def backward(self, step: int, state: tuple, new_velocity: Params, adjoint_w: Params,
                 adjoint_v: Params) -> tuple[Params, Params, list[torch.Tensor]]:
        """dE/d(state t) and this step's share of dE/dh, from dE/d(state t+1); ``new_velocity`` is v_{t+1}."""
        weights, velocity, graph = state
        if not self.structured:
            return _step_vjp(self.step_fn, step, weights, velocity, self.diff, adjoint_w, adjoint_v)
        batch = None if graph is not None else self.batch(step)
        adjoint_w, adjoint_v, share = self.problem.update.adjoint_step(weights, velocity, new_velocity, batch,
                                                                       self.hyper, self.diff, adjoint_w, adjoint_v,
                                                                       graph)
        return adjoint_w, adjoint_v, [share[name] for name in self.diff]

    def batch(self, step: int):
        return self.problem.batch(step)


def _reverse_by_trajectory(problem: InnerProblem, sweep: _Sweep, every: int):
    """Forward sweep storing every ``every``-th state (with its gradient graph when ``sweep.keep`` and every
    step is stored), then the backward sweep, segment by segment from the end, recomputing each segment's
    states (and graphs) from its checkpoint."""
    weights = dict(problem.weights)
    velocity = {name: torch.zeros_like(w) for name, w in weights.items()}
    stored: dict[int, tuple[Params, Params, StepGraph | Activations | None]] = {}
    keep_now = sweep.keep and every == 1
    watch = _FiniteWatch("weight or velocity")
    for step in range(problem.steps):
        new_weights, new_velocity, graph = sweep.forward(step, weights, velocity, keep_now)
        if step % every == 0:
            stored[step] = (weights, velocity, graph)
        weights, velocity = new_weights, new_velocity
        watch.add(step, _values(weights, velocity))
    loss, adjoint_w = _final_gradient(problem, weights, watch)
    adjoint_v = {name: torch.zeros_like(w) for name, w in weights.items()}
    total = [torch.zeros_like(h) for h in sweep.diff.values()]
    fixed = {n: v for n, v in sweep.hyper.items() if n not in sweep.diff}
    kept = _values(weights, velocity, adjoint_w, adjoint_v, sweep.diff, fixed)
    state_mib = 0.0
    watch = _FiniteWatch("adjoint (reverse sweep)")
    next_velocity = velocity
    for start in sorted(stored, reverse=True):
        segment = [stored.pop(start)]
        end = min(start + every, problem.steps)
        for step in range(start, end - 1):
            new_weights, new_velocity, graph = sweep.forward(step, *segment[-1][:2], sweep.keep)
            segment[-1] = (*segment[-1][:2], graph)
            segment.append((new_weights, new_velocity, None))
        # The segment's last step keeps no graph: its backward step rebuilds the products' pass itself, as the
        # plain trajectory does, without the state update that nothing reads (and, on a recognised stack, without
        # the weight gradient). That rebuilt pass is transient, so state_mib counts one step's activations fewer;
        # the peak is the same, since it sits beside the others while that step is swept back.
        if every > 1 or start == problem.steps - 1:  # every == 1: the first segment holds everything later ones do
            held = [t for s in (*stored.values(), *segment) for part in s[:2] for t in part.values()]
            held += [t for s in (*stored.values(), *segment) if s[2] is not None for t in s[2].saved_tensors()]
            state_mib = max(state_mib, tensor_mib(held + kept))
        for offset in range(len(segment) - 1, -1, -1):
            step = start + offset
            state = segment.pop()
            adjoint_w, adjoint_v, adjoint_h = sweep.backward(step, state, next_velocity, adjoint_w, adjoint_v)
            next_velocity = state[1]
            total = [a + b for a, b in zip(total, adjoint_h)]
            watch.add(step, _values(adjoint_w, adjoint_v))
    watch.check()
    return loss, torch.cat([t.reshape(-1) for t in total]), state_mib, weights, velocity


def _step_vjp(step_fn: Callable, step: int, weights: Params, velocity: Params, diff: Params, adjoint_w: Params,
              adjoint_v: Params) -> tuple[Params, Params, list[torch.Tensor]]:
    """(p_w, p_v) . dPhi_t/d(w, v, h) at the stored state: one reverse-over-reverse product."""
    with torch.enable_grad():
        w = {name: t.detach().requires_grad_() for name, t in weights.items()}
        v = {name: t.detach().requires_grad_() for name, t in velocity.items()}
        h = {name: t.detach().requires_grad_() for name, t in diff.items()}
        new_w, new_v = step_fn(step, w, v, h)
        pairs = [(out, adjoint_w[name]) for name, out in new_w.items()]
        pairs += [(out, adjoint_v[name]) for name, out in new_v.items()]
        # An output that depends on nothing differentiated (a velocity the update resets to zeros, a frozen
        # part of the state) passes no cotangent back; autograd.grad refuses such outputs outright.
        pairs = [(out, cotangent) for out, cotangent in pairs if out.requires_grad]
        inputs = [*w.values(), *v.values(), *h.values()]
        grads = (torch.autograd.grad([o for o, _ in pairs], inputs, [c for _, c in pairs], allow_unused=True)
                 if pairs else [None] * len(inputs))
    grads = [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]
    n = len(w)
    return dict(zip(w, grads[:n])), dict(zip(v, grads[n:2 * n])), grads[2 * n:]


def _reverse_through_graph(problem: InnerProblem, step_fn: Callable, diff: Params, fixed: Params):
    watch = _FiniteWatch("weight or velocity")
    with torch.enable_grad():
        h = {name: t.detach().requires_grad_() for name, t in diff.items()}
        weights = dict(problem.weights)
        velocity = {name: torch.zeros_like(w) for name, w in weights.items()}
        for step in range(problem.steps):
            weights, velocity = step_fn(step, weights, velocity, h)
            watch.add(step, _values(weights, velocity))
        watch.check()
        loss = problem.validation_loss(weights)
    if not bool(torch.isfinite(loss)):
        raise NonFiniteError(f"non-finite validation loss after {problem.steps} inner steps")
    state_mib = graph_saved_mib(loss) + tensor_mib(_values(diff, fixed))
    grads = torch.autograd.grad(loss, list(h.values()), allow_unused=True)
    flat = torch.cat([(torch.zeros_like(x) if g is None else g).reshape(-1) for g, x in zip(grads, h.values())])
    detached = ({n: t.detach() for n, t in weights.items()}, {n: t.detach() for n, t in velocity.items()})
    return loss.detach(), flat, state_mib, *detached


def graph_saved_mib(output: torch.Tensor) -> float:
    """MiB of the tensors autograd's graph behind ``output`` keeps for the backward pass."""
    return tensor_mib(graph_saved_tensors([output]))


def _step_function(problem: InnerProblem, fixed: Mapping[str, torch.Tensor]) -> Callable:
    def step_fn(step: int, w: Params, v: Params, h: Params) -> tuple[Params, Params]:
        return problem.update(w, v, problem.batch(step), {**fixed, **h})
    return step_fn


MODES: dict[str, Callable[..., HypergradientResult]] = {
    "forward": forward_hypergradient,
    "reverse": reverse_hypergradient,
}


def hypergradient(problem: InnerProblem, hyper: Mapping[str, torch.Tensor], mode: str = "reverse",
                  wrt: Sequence[str] | None = None, **options) -> HypergradientResult:
    """d validation_loss(w_T) / d hyper, by ``mode`` (``MODES``: ``forward`` or ``reverse``)."""
    _check_mode_and_options(mode, options)  # the mode itself checks the hyperparameters and option values
    return MODES[mode](problem, hyper, wrt, **options)


def _check_mode_and_options(mode: str, options: Mapping[str, object]) -> None:
    """A known mode, and only options that mode takes (a TypeError from Python otherwise)."""
    if mode not in MODES:
        raise SipgradError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    accepted = [name for name in inspect.signature(MODES[mode]).parameters if name not in ("problem", "hyper", "wrt")]
    unknown = [name for name in options if name not in accepted]
    if unknown:
        raise SipgradError(f"{mode} mode takes no option {', '.join(unknown)} (its options: {', '.join(accepted)})")


def check_arguments(problem: InnerProblem, hyper: Mapping[str, torch.Tensor], mode: str = "reverse",
                    wrt: Sequence[str] | None = None, **options) -> None:
    """Everything ``hypergradient`` would refuse, checked now, before any inner step runs.

    The outer loop calls it at its own call, so that a bad mode, hyperparameter or option is
    reported before the first (possibly long) hypergradient, not after the other mode's.
    """
    _check_mode_and_options(mode, options)
    _prepare(problem, hyper, wrt)
    if mode == "reverse":
        defaults = {name: p.default for name, p in inspect.signature(reverse_hypergradient).parameters.items()}
        _check_reverse_options(problem, **{name: options.get(name, defaults[name])
                                           for name in ("checkpoint_every", "store_activations", "fused")})
