"""Hand-written forward-over-reverse for plain layer stacks: the inner gradient and its HVPs without autograd.

Both hypergradient modes spend their time on the inner gradient g and Hessian-vector
products: forward-HG needs, every inner step, g and the m products H Z_k (Z_k: the
weight part of tangent k); reverse-HG needs g on the way forward and one product H q per
step on the way back. The general path takes ``jvp`` of ``grad`` under ``vmap`` (forward)
or a double backward through autograd's graph (reverse); on the small networks of RFHO's
experiment their per-op overhead costs more than the arithmetic (docs/engines.md,
Performance). For a model the code can read -- an ``nn.Sequential`` of ``Linear``,
``ReLU``, ``Flatten`` and ``Identity`` trained with mean cross-entropy on integer labels --
this module writes the derivatives out, as ``sipgrad/engines/forward/fused.py`` does for
forward gradients, in two halves:

* ``primal_pass``: the forward pass, the error delta = (softmax(z) - onehot(y)) / B and
  the backward pass (gW = delta^T h, gb = sum delta, delta_below = delta W), keeping what
  the products need (``Activations``: each Linear input, each ReLU output, the errors).
  The reverse sweep's rebuild skips gW (2 products per layer instead of 3).
* ``hessian_products``: the tangent of that pass for m directions at once, laid out
  examples x directions x features (B x m x F), one matmul per product over all m:

      dz = h cat(dW_1..dW_m)^T + db + dh W^T          (forward; ReLU: dh' = dz where z > 0,
                                                         ``threshold_backward``, autograd's convention at 0)
      d delta = p * (dz - <p, dz>) / B                 (the softmax cross-entropy's tangent)
      d gW = d delta^T h + delta^T dh,  d gb = sum_b d delta
      d delta_below = d delta W + delta cat(dW_k)      (backward; ReLU masks again)

The results equal autograd's (``jvp`` of ``grad``, or the double backward) up to float
rounding; tests compare them in float64 to 1e-10. ``plan_for`` returns None for anything
else (another layer, hooks, buffers, frozen or shared parameters) and the callers keep
the general path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from sipgrad.engines.module_hooks import global_hooks_present, has_hooks

Params = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class Op:
    """One layer of a recognised stack: ``linear`` (with its parameter names), ``relu`` or ``flatten``."""

    kind: str
    weight: str = ""
    bias: str | None = None


@dataclass(frozen=True)
class SequentialPlan:
    """The layers of a plain ``nn.Sequential`` classifier trained with mean cross-entropy."""

    ops: tuple[Op, ...]
    names: frozenset[str]

    def applies(self, weights: Params, batch: tuple) -> bool:
        """Whether this call can take the fused path: the same parameters, (examples x features inputs, int64 labels).

        Only int64 labels: the pass indexes the probabilities by them, and a uint8 tensor would index as a boolean
        mask (cross-entropy itself accepts uint8 targets, so those take the general path).
        """
        if len(batch) != 2 or set(weights) != self.names:
            return False
        inputs, labels = batch
        flat_inputs = inputs.dim() == 2 or self.ops[0].kind == "flatten"  # a Linear on N-d inputs: general path
        return labels.dim() == 1 and labels.dtype == torch.int64 and flat_inputs


def plan_for(model: nn.Module) -> SequentialPlan | None:
    """The plan for ``model`` when it is a stack this module handles, else None (use the general path).

    Handled: an ``nn.Sequential`` of ``nn.Linear``, ``nn.ReLU``, ``nn.Identity`` and
    ``nn.Flatten()`` (start_dim 1, end_dim -1), every parameter trained, no buffers, no
    hooks, no module used twice. The types are matched exactly: a subclass may override
    ``forward``.
    """
    if type(model) is not nn.Sequential or list(model.buffers()) or has_hooks(model) or global_hooks_present():
        return None
    ops: list[Op] = []
    names: set[str] = set()
    seen: set[int] = set()
    for child_name, module in model._modules.items():  # what Sequential.forward runs (named_children dedups)
        if id(module) in seen or has_hooks(module):
            return None
        seen.add(id(module))
        kind = type(module)
        if kind is nn.Linear:
            weight = f"{child_name}.weight"
            bias = f"{child_name}.bias" if module.bias is not None else None
            ops.append(Op("linear", weight, bias))
            names.update(n for n in (weight, bias) if n is not None)
        elif kind is nn.ReLU:
            ops.append(Op("relu"))
        elif kind is nn.Flatten and module.start_dim == 1 and module.end_dim == -1:
            ops.append(Op("flatten"))
        elif kind is nn.Identity:
            continue
        else:
            return None
    parameters = dict(model.named_parameters())
    if set(parameters) != names or not all(p.requires_grad for p in parameters.values()):
        return None
    if not any(op.kind == "linear" for op in ops):
        return None
    return SequentialPlan(tuple(ops), frozenset(names))


@dataclass
class Activations:
    """What one forward and backward pass through a stack leaves for its Hessian-vector products.

    The tensors the products read, which autograd's graph of the gradient also keeps (with
    a few more: the labels, transposed copies), so ``store_activations`` costs at most what
    it did through autograd: ``inputs[i]`` is, for op i, a Linear layer's input, a ReLU's
    output (its mask) or the shape before a Flatten; ``errors[i]`` is the error dL/dz at a
    Linear layer's output (not the first one's, which no product reads); ``probabilities``
    is softmax(logits).
    """

    inputs: list
    errors: dict[int, torch.Tensor]
    probabilities: torch.Tensor

    def saved_tensors(self) -> list[torch.Tensor]:
        """The tensors kept (for state-memory accounting)."""
        kept = [x for x in self.inputs if isinstance(x, torch.Tensor)]
        return kept + list(self.errors.values()) + [self.probabilities]


def primal_pass(plan: SequentialPlan, weights: Params, batch: tuple[torch.Tensor, torch.Tensor],
                weight_gradient: bool = True, keep: bool = False) -> tuple[dict[str, torch.Tensor],
                                                                           Activations | None]:
    """The mean cross-entropy gradient of the stack at ``weights`` and, with ``keep``, its ``Activations``.

    ``weight_gradient=False`` skips the gradient's own products (the reverse sweep rebuilding
    a step needs only the activations for its Hessian-vector product): 2 products per
    Linear layer instead of 3.
    """
    inputs, labels = batch
    examples = inputs.shape[0]
    h = inputs
    saved: list = []
    for op in plan.ops:
        if op.kind == "flatten":
            saved.append(h.shape)
            h = h.reshape(examples, -1)
        elif op.kind == "relu":
            h = torch.relu(h)
            saved.append(h)
        else:
            saved.append(h)
            h = torch.nn.functional.linear(h, weights[op.weight], weights[op.bias] if op.bias is not None else None)
    p = torch.softmax(h, dim=1)
    delta = p.clone()
    delta[torch.arange(examples, device=labels.device), labels] -= 1
    delta.div_(examples)

    first_linear = _first_linear(plan)
    gradient: dict[str, torch.Tensor] = {}
    errors: dict[int, torch.Tensor] = {}
    g = delta
    for index in range(len(plan.ops) - 1, first_linear - 1, -1):
        op, state = plan.ops[index], saved[index]
        if op.kind == "flatten":
            g = g.reshape(state)
        elif op.kind == "relu":
            g = torch.ops.aten.threshold_backward(g, state, 0)
        else:
            if keep and index > first_linear:  # the first layer's products never read its error
                errors[index] = g
            if weight_gradient:
                gradient[op.weight] = torch.mm(g.t(), state)
                if op.bias is not None:
                    gradient[op.bias] = g.sum(0)
            if index > first_linear:
                g = torch.mm(g, weights[op.weight])
    return gradient, Activations(saved, errors, p) if keep else None


class Workspace:
    """Scratch tensors that one run reuses at every inner step, by name.

    Forward mode's intermediates are examples x m x width, a few MiB each on RFHO's
    network (dz and the back-propagated tangent of every layer). Allocated afresh at every
    step, memory that the allocator may just have handed back to the system is faulted in
    again page by page (whether it does depends on what the process allocated before).
    Reused, the buffers stay mapped. Results never live in a workspace.
    """

    def __init__(self) -> None:
        self._tensors: dict[str, torch.Tensor] = {}

    def empty(self, key: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """An uninitialised tensor of ``shape`` with ``like``'s dtype and device: the same storage at every call."""
        tensor = self._tensors.get(key)
        if tensor is None or tensor.shape != shape or tensor.dtype != like.dtype or tensor.device != like.device:
            tensor = like.new_empty(shape)
            self._tensors[key] = tensor
        return tensor


@torch.no_grad()
def hessian_products(plan: SequentialPlan, weights: Params, directions: Params, activations: Activations,
                     workspace: Workspace | None = None) -> dict[str, torch.Tensor]:
    """{name: (m, *shape)} H Z: the m Hessian-vector products at the pass that left ``activations``.

    ``directions[name]`` holds the m tangents of parameter ``name`` stacked on a leading
    axis. The products are fresh tensors (the caller may update them in place). The
    intermediates go to ``workspace`` when one is given (a caller that runs many steps
    keeps one), else to fresh memory. Autograd is off: the products are written out, and
    the in-place and ``out=`` products would refuse weights that require grad.
    """
    saved, errors, p = activations.inputs, activations.errors, activations.probabilities
    examples = p.shape[0]
    m = next(iter(directions.values())).shape[0]
    workspace = workspace if workspace is not None else Workspace()
    dh = None  # examples x m x features; None while it is zero (below the first Linear)
    tangent_inputs: dict[int, torch.Tensor | None] = {}
    for index, op in enumerate(plan.ops):
        if op.kind == "flatten":
            if dh is not None:
                dh = dh.reshape(examples, m, -1)
        elif op.kind == "relu":
            if dh is not None:  # in place: the layer's dz is read nowhere else
                _relu_tangent_(dh, saved[index])
        else:
            h, w, dw = saved[index], weights[op.weight], directions[op.weight]
            out, features = w.shape
            dz = workspace.empty(f"dz{index}", (examples, m * out), h)
            torch.mm(h, dw.reshape(m * out, features).t(), out=dz)  # examples x (m out): all m weight tangents
            if op.bias is not None:
                dz.add_(directions[op.bias].reshape(1, m * out))
            if dh is not None:
                dz.view(examples * m, out).addmm_(dh.reshape(examples * m, features), w.t())
            tangent_inputs[index] = dh
            dh = dz.view(examples, m, out)
    pu = p.unsqueeze(1)
    ddelta = dh - (pu * dh).sum(2, keepdim=True)
    ddelta.mul_(pu).div_(examples)

    first_linear = _first_linear(plan)
    hvp: dict[str, torch.Tensor] = {}
    dg = ddelta
    for index in range(len(plan.ops) - 1, first_linear - 1, -1):
        op, state = plan.ops[index], saved[index]
        if op.kind == "flatten":
            dg = dg.reshape(state[0], m, *state[1:])
        elif op.kind == "relu":
            _relu_tangent_(dg, state)
        else:
            h_in, dh_in, g = state, tangent_inputs[index], errors.get(index)
            w, dw = weights[op.weight], directions[op.weight]
            out, features = w.shape
            dg2 = dg.reshape(examples, m * out)
            # d delta^T h for all m at once is one (m out) x features product, already in the m x out x features
            # layout; delta^T dh_k adds into it as a batched product reading dh in place (examples x m x
            # features seen as m x examples x features), so no operand is copied or permuted.
            dgw = torch.mm(dg2.t(), h_in).view(m, out, features)
            if dh_in is not None:
                dgw.baddbmm_(g.t().expand(m, out, examples), dh_in.transpose(0, 1))
            hvp[op.weight] = dgw
            if op.bias is not None:
                hvp[op.bias] = dg2.sum(0).view(m, out)
            if index > first_linear:
                below = workspace.empty(f"below{index}", (examples, m, features), h_in)
                torch.mm(dg.reshape(examples * m, out), w, out=below.view(examples * m, features))
                # delta dW_k adds into below's k-th slice (examples x features, rows m features apart): one
                # batched product writing in place, no transposed copy of the m weight tangents.
                below.transpose(0, 1).baddbmm_(g.expand(m, examples, out), dw)
                dg = below
    return hvp


def _relu_tangent_(tangent: torch.Tensor, relu_output: torch.Tensor) -> None:
    """Zero, in place, the tangent (examples x m x features) where the ReLU was off (autograd's convention at 0)."""
    torch.ops.aten.threshold_backward.grad_input(tangent, relu_output.unsqueeze(1), 0, grad_input=tangent)


def gradient_and_hvps(plan: SequentialPlan, weights: Params, directions: Params,
                      batch: tuple[torch.Tensor, torch.Tensor], workspace: Workspace | None = None
                      ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(g, {name: (m, *shape)} H Z) for mean cross-entropy of the stack at ``weights``: forward mode's step."""
    gradient, activations = primal_pass(plan, weights, batch, keep=True)
    return gradient, hessian_products(plan, weights, directions, activations, workspace)


def _first_linear(plan: SequentialPlan) -> int:
    return next(i for i, op in enumerate(plan.ops) if op.kind == "linear")
