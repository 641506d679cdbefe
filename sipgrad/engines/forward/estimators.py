"""Forward-gradient estimates over a model's parameters: K directions in one vmapped JVP.

``directional_derivatives`` evaluates grad L . v_k for all K directions at once
(``torch.func.vmap`` over ``torch.func.jvp`` of a ``functional_call``), so K directions
cost one batched forward pass, not K Python-level passes. ``estimate_gradient`` turns the
derivatives into the forward gradient mean_k (grad L . v_k) v_k; ``model_gradient_estimate``
does it for an ``nn.Module`` and a loss, capturing layer inputs for samplers that need them
and naming the layer when forward mode cannot run through one. For plain linear / conv
stacks with cross-entropy it takes ``fused``'s hand-written tangent path instead, several
times cheaper per op on small models (same derivatives, tested).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jvp, vmap
from torch.nn.modules.utils import _pair
from torch.overrides import TorchFunctionMode

from sipgrad.engines.forward.fused import (
    FusedPlan,
    compiled_gaussian,
    flat_combine,
    flat_gaussian,
    fused_chunk_size,
    plan_for,
)
from sipgrad.engines.forward.jvp import quiet_forward_ad
from sipgrad.engines.forward.samplers import (
    Directions,
    DirectionSampler,
    GaussianSampler,
)
from sipgrad.errors import SipgradError

Params = dict[str, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# Rows (directions x examples) per vmapped chunk when chunking is automatic: beyond this a
# CNN's K x B activations fall out of cache and one huge vmapped batch gets slower per
# direction than several smaller ones (benchmarks/forward_gradient.py, "unchunked" rows).
AUTO_CHUNK_ROWS = 2048


def auto_chunk_size(batch_size: int, directions: int) -> int | None:
    """Directions per vmapped chunk so that a chunk covers at most ``AUTO_CHUNK_ROWS`` rows (None: one chunk)."""
    chunk = max(1, AUTO_CHUNK_ROWS // max(batch_size, 1))
    return None if chunk >= directions else chunk


@dataclass(frozen=True)
class GradientEstimate:
    """The loss at the current parameters, the forward-gradient estimate, and the K derivatives."""

    loss: torch.Tensor
    gradient: Params
    derivatives: torch.Tensor


def directional_derivatives(loss_of: Callable[[Params], torch.Tensor], params: Params, directions: Directions,
                            chunk_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, K derivatives grad L . v_k) for the K stacked directions, in one vmapped JVP.

    Randomness inside the loss (dropout) is the same for every direction: they are
    derivatives of one function.
    """
    count = next(iter(directions.values())).shape[0]
    with torch.no_grad(), quiet_forward_ad():
        if count == 1:  # no batching needed: plain dual numbers skip vmap's and torch.func's per-call overhead
            single = {k: v[0] for k, v in directions.items()}
            try:
                return _single_jvp(loss_of, params, single)
            except RuntimeError:  # e.g. already inside another forward-mode level: torch.func nests, dual_level not
                loss, derivative = jvp(loss_of, (params,), (single,))
                return loss, derivative.reshape(1)
        losses, derivatives = vmap(lambda v: jvp(loss_of, (params,), (v,)), randomness="same",
                                   chunk_size=chunk_size)(directions)
    return losses[0], derivatives


def _single_jvp(loss_of: Callable[[Params], torch.Tensor], params: Params,
                tangent: Params) -> tuple[torch.Tensor, torch.Tensor]:
    """One JVP with ``torch.autograd.forward_ad`` dual tensors (about half torch.func.jvp's overhead)."""
    with fwAD.dual_level():
        loss = loss_of({name: fwAD.make_dual(p, tangent[name]) for name, p in params.items()})
        primal, derivative = fwAD.unpack_dual(loss)
    if derivative is None:  # the loss does not depend on the parameters
        derivative = torch.zeros_like(primal)
    return primal, derivative.reshape(1)


def combine(derivatives: torch.Tensor, directions: Directions) -> Params:
    """mean_k d_k v_k for each parameter: the forward gradient."""
    count = derivatives.shape[0]
    if count == 1:  # one multiply per parameter (tensordot's set-up costs more than the product; same values)
        return {name: v[0] * derivatives[0] for name, v in directions.items()}
    return {name: torch.tensordot(derivatives, v, dims=1) / count for name, v in directions.items()}


def estimate_gradient(loss_of: Callable[[Params], torch.Tensor], params: Params, sampler: DirectionSampler,
                      directions: int, generator: torch.Generator | None = None,
                      layer_inputs: Mapping[str, torch.Tensor] | None = None,
                      chunk_size: int | None = None, *,
                      around_derivatives: Callable[[], contextlib.AbstractContextManager] | None = None
                      ) -> GradientEstimate:
    """Forward-gradient estimate of grad loss_of(params) from ``directions`` directions of ``sampler``.

    ``around_derivatives`` (a context-manager factory) wraps the derivative pass alone, after the
    directions are drawn: ``model_gradient_estimate`` replays the random state of its layer-input
    capture there, so that dropout draws the captured pass's mask.
    """
    if directions < 1:
        raise SipgradError(f"a forward gradient needs at least one direction, got {directions}")
    tangents = sampler.sample(params, directions, generator, layer_inputs)
    with around_derivatives() if around_derivatives is not None else contextlib.nullcontext():
        loss, derivatives = directional_derivatives(loss_of, params, tangents, chunk_size)
    return GradientEstimate(loss.detach(), combine(derivatives, tangents), derivatives)


def trainable_parameters(model: nn.Module) -> Params:
    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise SipgradError("the model has no trainable parameters")
    return params


def loss_function(model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor,
                  labels: torch.Tensor) -> Callable[[Params], torch.Tensor]:
    """``params -> loss_fn(model(inputs; params), labels)`` with frozen parameters and buffers held fixed."""
    fixed = {name: p.detach() for name, p in model.named_parameters() if not p.requires_grad}
    fixed.update(model.named_buffers())
    return lambda params: loss_fn(functional_call(model, {**params, **fixed}, (inputs,)), labels)


def capture_layer_inputs(model: nn.Module, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """The rows each linear / conv weight meets in one forward pass (N x fan_in), keyed by the weight's name.

    ``ActivitySampler`` relies on every row of a weight's gradient lying in the span of these
    rows, so they come from the operations themselves, not from module hooks: a
    ``TorchFunctionMode`` sees each ``F.linear`` / ``F.conv2d`` call and records the input it
    multiplies with a parameter. That way the span is exact where a module-level view is not:

    * a conv's rows are its input patches after the padding it really uses (``F.unfold``
      zero-pads, but ``padding_mode="reflect"`` etc. pad with ``F.pad`` before a padding-0
      conv, and ``padding="same"`` may pad one side more);
    * a weight used several times in the pass (a module called twice, weights tied between
      modules) gets the rows of every call, since its gradient sums over all of them;
    * a grouped conv's rows are the patches of every group (each group's gradient lies in
      its own group's span, so in their union).

    A weight that also meets any other operation (``binarize`` in the binary layers, an
    embedding tied to an output layer, ``w * mask``, a parametrization) is left out, so the
    sampler gives it Gaussian directions: its gradient need not lie in any input span.
    Randomness in the pass (dropout) draws from the global generator as the estimate's own
    pass does; ``model_gradient_estimate`` replays the generator's state so both see the
    same mask.
    """
    names = {id(p): name for name, p in model.named_parameters()}
    rows: dict[str, list[torch.Tensor]] = {}
    other_use: set[str] = set()
    with torch.no_grad(), _LayerInputRecorder(names, rows, other_use):
        model(inputs)
    return {name: torch.cat(parts) for name, parts in rows.items() if name not in other_use}


# Tensor methods that read metadata only: a weight passed to them is not "used" by the pass.
_METADATA = frozenset({"dim", "size", "numel", "shape", "dtype", "device", "ndim", "is_cuda", "requires_grad",
                       "layout", "is_floating_point", "is_complex", "stride", "is_contiguous", "data_ptr",
                       "element_size", "nelement", "__len__", "__format__", "__repr__"})


def _operation_name(func) -> str | None:
    """The name of what ``func`` does; a property read (``w.shape``) reaches a mode as its getter, named ``__get__``."""
    name = getattr(func, "__name__", None)
    if name == "__get__":
        name = getattr(getattr(func, "__self__", None), "__name__", name)
    return name


class _LayerInputRecorder(TorchFunctionMode):
    """Records the rows each parameter meets as a linear / conv2d weight; flags any other use of it."""

    def __init__(self, names: dict[int, str], rows: dict[str, list[torch.Tensor]], other_use: set[str]) -> None:
        super().__init__()
        self.names, self.rows, self.other_use = names, rows, other_use

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        weight_name = None
        if func is F.linear or func is F.conv2d:
            weight = args[1] if len(args) > 1 else kwargs.get("weight")
            weight_name = self.names.get(id(weight)) if isinstance(weight, torch.Tensor) else None
            if weight_name is not None and weight_name not in self.other_use:
                x = args[0] if args else kwargs["input"]
                rows = (_linear_rows(x) if func is F.linear
                        else _conv2d_rows(x, weight, *_conv2d_options(args, kwargs)))
                self.rows.setdefault(weight_name, []).append(rows.detach())
        if _operation_name(func) not in _METADATA:
            tensors = list(_tensors_in((args, kwargs)))
            if weight_name is not None:  # its one use as this call's weight is accounted for; any other is not
                tensors.pop(next(i for i, value in enumerate(tensors) if value is weight))
            for value in tensors:
                name = self.names.get(id(value))
                if name is not None:
                    self.other_use.add(name)
        return func(*args, **kwargs)


def _tensors_in(value: object) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors_in(item)


def _linear_rows(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1])


def _conv2d_options(args: tuple, kwargs: dict) -> tuple:
    """(stride, padding, dilation, groups) of an ``F.conv2d`` call, with its defaults."""
    defaults = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1}
    return tuple(args[3 + i] if len(args) > 3 + i else kwargs.get(key, default)
                 for i, (key, default) in enumerate(defaults.items()))


def _conv2d_rows(x: torch.Tensor, weight: torch.Tensor, stride, padding, dilation, groups: int) -> torch.Tensor:
    """The input patches ``F.conv2d(x, weight, ...)`` multiplies with ``weight``'s rows (every group's)."""
    if x.dim() == 3:  # unbatched C x H x W
        x = x.unsqueeze(0)
    kernel = tuple(weight.shape[-2:])
    dilation = _pair(dilation)
    if isinstance(padding, str):  # "valid": none; "same": total d (k - 1) per side pair, the odd one at the end
        pads: list[int] = []
        for k, d in zip(kernel[::-1], dilation[::-1]):
            total = d * (k - 1) if padding == "same" else 0
            pads += [total // 2, total - total // 2]
        x = F.pad(x, pads)
        padding = 0
    # One unfold for every group: its rows are channel-major, so each group's (C / groups) k k block is contiguous.
    unfolded = F.unfold(x, kernel, dilation, _pair(padding), _pair(stride))  # B x (C k k) x L
    batch, _, positions = unfolded.shape
    fan_in = unfolded.shape[1] // groups
    return unfolded.view(batch, groups, fan_in, positions).permute(1, 0, 3, 2).reshape(-1, fan_in)


@contextlib.contextmanager
def batchnorm_for_forward_mode(model: nn.Module) -> Iterator[None]:
    """Let training-mode BatchNorm run under vmapped JVPs: batch statistics, running statistics untouched.

    A training-mode BatchNorm updates its running statistics in place, which a vmapped JVP
    cannot do (one function, K tangents). Inside this block such layers normalise with the
    batch's own statistics (the functional batch norm of ``torch.func``) and leave their
    running statistics as they were; eval-mode layers are unaffected.
    """
    changed = [m for m in model.modules()
               if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats]
    for module in changed:
        module.track_running_stats = False
    try:
        yield
    finally:
        for module in changed:
            module.track_running_stats = True


def _failing_layer(model: nn.Module, run: Callable[[], object]) -> str | None:
    """Rerun ``run`` with every leaf module announcing itself; the last one entered is where it failed."""
    entered: list[str] = []
    handles = [module.register_forward_pre_hook(lambda _m, _a, name=name: entered.append(name))
               for name, module in model.named_modules() if name and not list(module.children())]
    try:
        run()
    except RuntimeError:
        return entered[-1] if entered else None
    finally:
        for handle in handles:
            handle.remove()
    return None


def model_gradient_estimate(model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor, labels: torch.Tensor,
                            sampler: DirectionSampler | None = None, directions: int = 1, *,
                            generator: torch.Generator | None = None,
                            chunk_size: int | None | str = "auto", fused: bool = True,
                            compiled: bool = False) -> GradientEstimate:
    """Forward-gradient estimate of grad_params loss_fn(model(inputs), labels), without backprop.

    ``chunk_size`` directions go through vmap at a time: ``"auto"`` bounds a chunk to
    ``AUTO_CHUNK_ROWS`` directions x examples, None runs all K at once. The result does not
    depend on it.

    With ``fused`` (default), a model the fused path supports (``fused.plan_for``: a plain
    stack of linear / conv / ReLU / pooling layers with cross-entropy, as the MLP and CNN of
    ``models``) skips torch's forward-AD machinery: the K tangents go through each layer as
    one op with the K weight tangents stacked, and Gaussian directions are drawn as one flat
    tensor (``fused.flat_gaussian``; a different random stream from ``GaussianSampler.sample``,
    the same distribution). Same derivatives up to float rounding (tested); ``fused=False``
    forces the general path. ``compiled`` runs the fused Gaussian step through
    ``torch.compile`` (``fused.compiled_gaussian``): the first call per shape compiles (seconds,
    needs a C++ compiler on CPU), later ones skip Python's per-op overhead.

    Works with BatchNorm (eval mode: its running statistics; training mode: batch statistics,
    see ``batchnorm_for_forward_mode``) and with dropout (one mask shared by all directions).
    A layer that forward mode cannot run through is named in the error.
    """
    sampler = sampler or GaussianSampler()
    plan = plan_for(model, loss_fn, inputs, labels) if fused else None
    if plan is not None:
        with torch.no_grad():
            return _fused_estimate(plan, model, inputs, labels, sampler, directions, generator, chunk_size, compiled)
    params = trainable_parameters(model)
    if chunk_size == "auto":
        chunk_size = auto_chunk_size(inputs.shape[0], directions)
    loss_of = loss_function(model, loss_fn, inputs, labels)
    with batchnorm_for_forward_mode(model):
        try:
            if not sampler.needs_layer_inputs:
                return estimate_gradient(loss_of, params, sampler, directions, generator, None, chunk_size)
            # The capture pass and the estimate's pass must draw the same random numbers (one dropout
            # mask), or the gradient leaves the captured span: replay the global generator's state.
            before = _rng_states(inputs.device)
            layer_inputs = capture_layer_inputs(model, inputs)
            return estimate_gradient(loss_of, params, sampler, directions, generator, layer_inputs, chunk_size,
                                     around_derivatives=lambda: _replaying(before, inputs.device))
        except RuntimeError as error:
            def retry():
                return directional_derivatives(loss_of, params, GaussianSampler().sample(params, 2, generator))
            layer = _failing_layer(model, retry)
            if layer is None:
                raise
            module = model.get_submodule(layer)
            first = str(error).strip().splitlines()[0]
            raise SipgradError(f"forward mode cannot run through layer {layer!r} ({type(module).__name__}): "
                               f"{first}") from None


def _rng_states(device: torch.device) -> list[tuple[Callable[[torch.Tensor], None], torch.Tensor]]:
    """(setter, state) of each global generator a forward pass on ``device`` may draw from (CPU, the device's)."""
    states: list[tuple[Callable[[torch.Tensor], None], torch.Tensor]] = [(torch.set_rng_state, torch.get_rng_state())]
    backend = getattr(torch, device.type, None) if device.type != "cpu" else None
    if backend is not None and hasattr(backend, "get_rng_state") and hasattr(backend, "set_rng_state"):
        states.append((lambda state: backend.set_rng_state(state, device), backend.get_rng_state(device)))
    return states


def _set_rng_states(states: list[tuple[Callable[[torch.Tensor], None], torch.Tensor]]) -> None:
    for setter, state in states:
        setter(state)


@contextlib.contextmanager
def _replaying(before: list, device: torch.device) -> Iterator[None]:
    """Run the block from the random state ``before``; afterwards go on from where the draws had got to."""
    after = _rng_states(device)  # past the capture's and the sampler's draws
    _set_rng_states(before)
    try:
        yield
    finally:
        _set_rng_states(after)


def _fused_estimate(plan: FusedPlan, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                    sampler: DirectionSampler, directions: int, generator: torch.Generator | None,
                    chunk_size: int | None | str, compiled: bool = False) -> GradientEstimate:
    """``model_gradient_estimate`` on the fused path (``fused.FusedPlan``)."""
    if directions < 1:
        raise SipgradError(f"a forward gradient needs at least one direction, got {directions}")
    if chunk_size == "auto":
        chunk_size = fused_chunk_size(inputs.shape[0], directions)
    params = plan.params
    if type(sampler) is GaussianSampler:  # one randn call, per-parameter views, one multiply for the estimate
        flat, tangents = flat_gaussian(params, directions, generator)
        if compiled:
            loss, derivatives, gradient = compiled_gaussian()(plan, inputs, labels, flat, directions, chunk_size)
            return GradientEstimate(loss, gradient, derivatives)
        loss, derivatives = plan.derivatives(inputs, labels, tangents, chunk_size)
        if directions == 1:  # the direction is spent: its buffer becomes g = d v, its views the gradient's
            flat.mul_(derivatives)
            return GradientEstimate(loss, {name: v[0] for name, v in tangents.items()}, derivatives)
        return GradientEstimate(loss, flat_combine(derivatives, flat, params), derivatives)
    layer_inputs = capture_layer_inputs(model, inputs) if sampler.needs_layer_inputs else None
    tangents = sampler.sample(params, directions, generator, layer_inputs)
    loss, derivatives = plan.derivatives(inputs, labels, tangents, chunk_size)
    return GradientEstimate(loss, combine(derivatives, tangents), derivatives)


def forward_gradient_step(model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor, labels: torch.Tensor, lr: float,
                          directions: int = 1, *, generator: torch.Generator | None = None,
                          sampler: DirectionSampler | None = None) -> torch.Tensor:
    """One plain SGD step on ``model``'s parameters with a forward-gradient estimate instead of backprop.

    Kept for existing callers; ``sipgrad.engines.forward.training`` adds momentum, Adam,
    samplers and binary networks. Draws ``directions`` directions (Gaussian unless
    ``sampler`` is given) in one vmapped JVP and moves the parameters in place by
    ``-lr * mean_k (d_k v_k)``. Returns the loss before the step.
    """
    if directions < 1:
        raise SipgradError("forward_gradient_step needs at least one direction")
    estimate = model_gradient_estimate(model, loss_fn, inputs, labels, sampler, directions, generator=generator)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in estimate.gradient:
                p -= lr * estimate.gradient[name]
    return estimate.loss
