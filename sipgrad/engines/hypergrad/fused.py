"""Hand-written forward-over-reverse for plain layer stacks: the inner gradient and its m HVPs in one pass.

Forward-HG's tangent step needs, every inner step, the loss gradient g and the m
Hessian-vector products H Z_k (Z_k: the weight part of tangent k). The general path takes
``jvp`` of ``grad`` under ``vmap``; on the small networks of RFHO's experiment its per-op
and per-direction overhead costs more than the arithmetic (docs/engines.md, Performance).
For a model the code can read -- an ``nn.Sequential`` of ``Linear``, ``ReLU``, ``Flatten``
and ``Identity`` trained with mean cross-entropy on integer labels -- this module writes
the derivative out, as ``sipgrad/engines/forward/fused.py`` does for forward gradients:

* forward pass, per Linear layer (z = h W^T + b), with the m tangents as ONE tensor laid
  out examples x directions x features (B x m x F):

      dz = h cat(dW_1..dW_m)^T + db + dh W^T          (one matmul on the shared input,
                                                         one addmm for the tangent from below)
      ReLU: dh' = dz where z > 0 (``threshold_backward``, autograd's convention at 0)

* loss: with p = softmax(z) the error is delta = (p - onehot(y)) / B and its tangent
  d delta = p * (dz - <p, dz>) / B;
* backward pass, per Linear layer, the tangent of (gW = delta^T h, gb = sum delta,
  delta_below = delta W):

      d gW = d delta^T h + delta^T dh                 (two matmuls over all m at once)
      d gb = sum_b d delta
      d delta_below = d delta W + delta cat(dW_k)     (one addmm into the same buffer)

  and ReLU's tangent again masks with z > 0 (its second derivative is zero).

The result equals the vmapped ``jvp`` of ``grad`` up to float rounding (tests compare
them in float64 to 1e-10). ``plan_for`` returns None for anything else (another layer,
hooks, buffers, frozen or shared parameters) and the caller keeps the general path.
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
        """Whether this call can take the fused path: the same parameters, (inputs, integer labels)."""
        if len(batch) != 2 or set(weights) != self.names:
            return False
        labels = batch[1]
        return labels.dim() == 1 and not labels.dtype.is_floating_point and not labels.dtype.is_complex


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


def gradient_and_hvps(plan: SequentialPlan, weights: Params, directions: Params,
                      batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[dict[str, torch.Tensor],
                                                                        dict[str, torch.Tensor]]:
    """(g, {name: (m, *shape)} H Z) for mean cross-entropy of the stack at ``weights``.

    ``directions[name]`` holds the m tangents of parameter ``name`` stacked on a leading
    axis. The products are fresh tensors (the caller updates them in place).
    """
    inputs, labels = batch
    examples = inputs.shape[0]
    m = next(iter(directions.values())).shape[0]
    h, dh = inputs, None  # dh: examples x m x features, None while it is zero (below the first Linear)
    saved: list = []
    for op in plan.ops:
        if op.kind == "flatten":
            saved.append(h.shape)
            h = h.reshape(examples, -1)
            if dh is not None:
                dh = dh.reshape(examples, m, -1)
        elif op.kind == "relu":
            h = torch.relu(h)
            if dh is not None:
                dh = torch.ops.aten.threshold_backward(dh, h.unsqueeze(1), 0)
            saved.append(h)
        else:
            w, dw = weights[op.weight], directions[op.weight]
            out, features = w.shape
            b = weights[op.bias] if op.bias is not None else None
            z = torch.nn.functional.linear(h, w, b)
            dz = torch.mm(h, dw.reshape(m * out, features).t())  # examples x (m out): all m weight tangents
            if op.bias is not None:
                dz.add_(directions[op.bias].reshape(1, m * out))
            if dh is not None:
                dz.view(examples * m, out).addmm_(dh.reshape(examples * m, features), w.t())
            saved.append((h, dh))
            h, dh = z, dz.view(examples, m, out)
    logits, dlogits = h, dh
    p = torch.softmax(logits, dim=1)
    delta = p.clone()
    delta[torch.arange(examples, device=labels.device), labels] -= 1
    delta.div_(examples)
    pu = p.unsqueeze(1)
    ddelta = dlogits - (pu * dlogits).sum(2, keepdim=True)
    ddelta.mul_(pu).div_(examples)

    first_linear = next(i for i, op in enumerate(plan.ops) if op.kind == "linear")
    gradient: dict[str, torch.Tensor] = {}
    hvp: dict[str, torch.Tensor] = {}
    g, dg = delta, ddelta
    for index in range(len(plan.ops) - 1, first_linear - 1, -1):
        op, state = plan.ops[index], saved[index]
        if op.kind == "flatten":
            g = g.reshape(state)
            dg = dg.reshape(state[0], m, *state[1:])
        elif op.kind == "relu":
            g = torch.ops.aten.threshold_backward(g, state, 0)
            dg = torch.ops.aten.threshold_backward(dg, state.unsqueeze(1), 0)
        else:
            h_in, dh_in = state
            w, dw = weights[op.weight], directions[op.weight]
            out, features = w.shape
            dg2 = dg.reshape(examples, m * out)
            gradient[op.weight] = torch.mm(g.t(), h_in)
            # Both terms as wide products (features x (m out), out x (m features): on CPU about 1.5x faster than
            # the tall (m out) x features one), summed into the m x out x features layout in one strided pass.
            from_error = torch.mm(h_in.t(), dg2).view(features, m, out).permute(1, 2, 0)
            if dh_in is not None:
                from_input = torch.mm(g.t(), dh_in.reshape(examples, m * features)).view(out, m, features)
                dgw = torch.add(from_error, from_input.transpose(0, 1), out=w.new_empty(m, out, features))
            else:
                dgw = from_error.contiguous()
            hvp[op.weight] = dgw
            if op.bias is not None:
                gradient[op.bias] = g.sum(0)
                hvp[op.bias] = dg2.sum(0).view(m, out)
            if index > first_linear:
                below = torch.mm(dg.reshape(examples * m, out), w).view(examples, m, features)
                below.view(examples, m * features).addmm_(g, dw.transpose(0, 1).reshape(out, m * features))
                g, dg = torch.mm(g, w), below
    return gradient, hvp
