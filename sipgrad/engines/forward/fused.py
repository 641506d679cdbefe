"""Fused forward-mode tangents for plain layer stacks: K directions per layer op, no dual tensors.

``estimators.directional_derivatives`` runs any model through ``torch.func`` (vmapped JVPs
over ``functional_call``) or ``torch.autograd.forward_ad`` dual tensors. Both are general,
and on the small models of these experiments both pay more in per-op overhead than the
arithmetic costs: a dual-tensor JVP of the digits MLP costs more than a whole backprop
step (docs/forward.md, Performance). This module computes the same derivatives by hand for
models built from a few layer types, the way a forward-mode implementation written for
them would:

* The tangents of all K directions travel as one tensor: B x K x C x H x W for images,
  K x F x B for features (which run transposed, features x examples: the classifier's
  matmuls and a softmax over a contiguous class axis are several times faster that way on
  batches of 10-class rows). No vmap, no dual tensors.
* A layer's weight directions enter as ONE op with the K weight tangents stacked: for a
  linear layer ``cat(V_1..V_K) h + cat(u_1..u_K)`` (one ``addmm``), for a convolution
  ``conv(h, cat(V_1..V_K))`` with the K tangents concatenated along the output channels
  (one conv on the shared input, K times the output channels). The input is read once for
  all K directions, which is where batching directions gains arithmetic intensity.
* The tangent arriving from the layer below goes through the layer's own weight as one op
  (``addmm_`` / ``baddbmm_`` into the same buffer, or one conv over a B*K batch).
* ReLU's tangent is one ``threshold_backward`` (the tangent where the input is positive),
  max pooling's a gather at the pooling indices; ReLU then max pooling runs as pooling then
  ReLU (same values, same derivatives on ties), masking a quarter of the elements.
* Cross-entropy's tangent is softmax(z) . dz - dz[label]: with G = softmax(z) - onehot(y),
  the derivative along direction k is sum_b G_b . dz_bk / B.

The derivatives are those of ``torch.func.jvp`` up to float rounding (tested against it,
against autograd's gradient . v and against vmapped JVPs). ``plan_for`` returns None for
anything else (another layer type, hooks, another loss, a grouped convolution, training-
mode dropout), and the caller falls back to the general path.

Layout of flat directions: ``flat_gaussian`` draws all K directions over all parameters in
ONE ``randn`` call, parameter-major (parameter p's K x shape block is contiguous), and hands
out per-parameter views; for K = 1 that is one flat direction vector v, and the estimate
is one multiply, g = d v, whose per-parameter views are the gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from sipgrad.engines.forward.models import GlobalAveragePool
from sipgrad.engines.module_hooks import global_hooks_present, has_hooks

Params = Mapping[str, torch.Tensor]
# Rows (directions x examples) per chunk when chunking is automatic. Measured on the digits
# MLP and CNN at B = 64 and 256 (benchmarks/forward_gradient.py --chunk-rows, docs/forward.md):
# 2,048 and 4,096 are within noise of each other, 512 is slower (each chunk reruns the plain
# forward pass), and one unchunked batch is slower at B = 256 (K x B tangents leave the caches).
FUSED_CHUNK_ROWS = 2048


def fused_chunk_size(batch_size: int, directions: int, rows: int = FUSED_CHUNK_ROWS) -> int | None:
    """Directions per chunk so that a chunk covers at most ``rows`` directions x examples (None: one chunk)."""
    chunk = max(1, rows // max(batch_size, 1))
    return None if chunk >= directions else chunk


class _Layer(NamedTuple):
    """One supported module, its step, and the names of its trainable weight / bias (None: absent or frozen).

    A named tuple, not a dataclass: plans are built on every call, and this is cheaper to make."""

    module: nn.Module
    step: Callable[..., tuple[torch.Tensor, torch.Tensor | None]]
    weight: str | None = None
    bias: str | None = None


def _supported(module: nn.Module) -> bool:
    kind = type(module)
    if kind is nn.Linear or kind is nn.ReLU or kind is GlobalAveragePool or kind is nn.Identity:
        return True
    if kind is nn.Conv2d:
        return module.groups == 1 and module.padding_mode == "zeros"
    if kind is nn.MaxPool2d:
        return not module.return_indices
    if kind is nn.Flatten:
        return module.start_dim == 1 and module.end_dim == -1
    if kind is nn.Dropout:
        return not module.training or module.p == 0
    return False


@dataclass(slots=True)
class FusedPlan:
    """The layers of a supported model in order; see the module docstring for how tangents go through them."""

    layers: tuple[_Layer, ...]
    params: dict[str, torch.Tensor]  # the trainable parameters by name (the modules' own tensors; used under no_grad)

    def derivatives(self, inputs: torch.Tensor, labels: torch.Tensor, directions: Params,
                    chunk_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, K derivatives of the mean cross-entropy along the K stacked ``directions``), no autograd.

        With ``chunk_size``, that many directions at a time; each chunk reruns the plain
        forward pass rather than keeping its activations (no tape).
        """
        count = next(iter(directions.values())).shape[0]
        if chunk_size is None or chunk_size >= count:
            return self._run(inputs, labels, directions, count)
        loss, parts = None, []
        for start in range(0, count, chunk_size):
            stop = min(start + chunk_size, count)
            loss, part = self._run(inputs, labels, {name: v[start:stop] for name, v in directions.items()},
                                   stop - start)
            parts.append(part)
        return loss, torch.cat(parts)

    def _run(self, inputs: torch.Tensor, labels: torch.Tensor, directions: Params,
             count: int) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            # images: h is B x C x H x W, t (the tangents) B x K x C x H x W; features: h is F x B
            # (transposed: the classifier's matmuls and its softmax over a contiguous class axis are
            # several times faster that way on small batches of 10 classes), t is K x F x B.
            # t is None while no parameter has entered yet (a zero tangent).
            h, t = (inputs.t(), None) if inputs.dim() == 2 else (inputs, None)
            for layer in self.layers:
                h, t = layer.step(layer, h, t, directions, count)
            log_p = torch.log_softmax(h, dim=0)  # classes x B
            rows = labels.unsqueeze(0)
            picked = log_p.gather(0, rows)
            loss = picked.mean().neg()
            if t is None:  # no trainable parameter: every derivative is zero
                return loss, torch.zeros(count, dtype=h.dtype, device=h.device)
            g = log_p.exp_()  # softmax(z) ...
            g.scatter_(0, rows, picked.exp_().sub_(1))  # ... - onehot(y): B times d loss / dz
            derivative = torch.mv(t.reshape(count, -1), g.view(-1))  # sum_(c, b) g dz_k
            return loss, derivative.div_(h.shape[1])


def _linear(layer: _Layer, h: torch.Tensor, t: torch.Tensor | None, directions: Params,
            count: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Features regime: out = W h + b (out x B); tangent K x out x B."""
    weight, bias = layer.module.weight, layer.module.bias  # plain tensors here: everything runs under no_grad
    out = torch.mm(weight, h) if bias is None else torch.addmm(bias.unsqueeze(1), weight, h)
    features, batch = out.shape
    v = directions[layer.weight] if layer.weight else None
    u = directions[layer.bias] if layer.bias else None
    if v is None and u is None and t is None:
        return out, None
    if v is not None:  # all K weight tangents in one matmul: cat(V_k) h (+ cat(u_k))
        stacked = v.reshape(count * features, -1)
        tangent = torch.mm(stacked, h) if u is None else torch.addmm(u.reshape(-1, 1), stacked, h)
        tangent = tangent.view(count, features, batch)
    elif u is not None:
        tangent = u.reshape(count, features, 1).expand(count, features, batch).clone()
    else:
        tangent = out.new_zeros(count, features, batch)
    if t is not None:  # the incoming tangents through the weight, added in place
        if count == 1:
            tangent[0].addmm_(weight, t[0])
        else:
            tangent.baddbmm_(weight.expand(count, -1, -1), t)
    return out, tangent


def _conv(layer: _Layer, h: torch.Tensor, t: torch.Tensor | None, directions: Params,
          count: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Image regime: out = conv(h, W) + b; tangent B x K x C x H x W."""
    module = layer.module
    weight, bias = module.weight, module.bias
    geometry = (module.stride, module.padding, module.dilation)
    out = F.conv2d(h, weight, bias, *geometry)
    v = directions[layer.weight] if layer.weight else None
    u = directions[layer.bias] if layer.bias else None
    if v is None and u is None and t is None:
        return out, None
    batch, channels = out.shape[:2]
    spatial = out.shape[2:]
    if v is not None:  # conv(h, V_k) for all k: ONE conv, the K weight tangents stacked along output channels
        tangent = F.conv2d(h, v.reshape(count * channels, *weight.shape[1:]),
                           None if u is None else u.reshape(-1), *geometry)
    elif u is not None:
        tangent = u.reshape(1, count * channels, 1, 1).expand(batch, -1, *spatial).clone()
    else:
        tangent = out.new_zeros(batch, count * channels, *spatial)
    tangent = tangent.view(batch, count, channels, *spatial)
    if t is not None:  # conv(t_k, W) for all k: one conv over a batch of B*K, added in place
        through = F.conv2d(t.reshape(batch * count, *t.shape[2:]), weight, None, *geometry)
        tangent.add_(through.unflatten(0, (batch, count)))
    return out, tangent


def _relu(layer: _Layer, h: torch.Tensor, t: torch.Tensor | None, directions: Params,
          count: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    out = torch.relu(h)
    if t is None:
        return out, None
    # relu's tangent: the incoming tangent where the input is positive (torch's own jvp rule)
    where = h if t.dim() == h.dim() + 1 and h.dim() == 2 else h.unsqueeze(1)
    return out, torch.ops.aten.threshold_backward(t, where, 0)


def _max_pool(layer: _Layer, h: torch.Tensor, t: torch.Tensor | None, directions: Params,
              count: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    module = layer.module
    out, where = F.max_pool2d(h, module.kernel_size, module.stride, module.padding, module.dilation,
                              module.ceil_mode, return_indices=True)
    if t is None:
        return out, None
    b, k, c = t.shape[:3]  # the tangent at each window's argmax (torch's own jvp rule)
    index = where.reshape(b, 1, c, -1).expand(b, k, c, where.shape[-1] * where.shape[-2])
    return out, t.reshape(b, k, c, -1).gather(3, index).reshape(b, k, *out.shape[1:])


def _relu_max_pool(layer: _Layer, h: torch.Tensor, t: torch.Tensor | None, directions: Params,
                   count: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """ReLU then max pooling, computed as pooling then ReLU: the same values (max commutes with a
    monotone function), and the tangent is masked after the gather, on a quarter of the elements."""
    return _relu(layer, *_max_pool(layer, h, t, directions, count), directions, count)


def _global_average(layer: _Layer, h: torch.Tensor, t: torch.Tensor | None, directions: Params,
                    count: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images -> features: B x C -> C x B, tangents B x K x C -> K x C x B."""
    return h.mean(dim=(2, 3)).t(), None if t is None else t.mean(dim=(3, 4)).permute(1, 2, 0)


def _flatten(layer: _Layer, h: torch.Tensor, t: torch.Tensor | None, directions: Params,
             count: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images -> features (a no-op on features)."""
    if h.dim() == 2:
        return h, t
    return h.flatten(1).t(), None if t is None else t.flatten(2).permute(1, 2, 0)


def _identity(layer: _Layer, h: torch.Tensor, t: torch.Tensor | None, directions: Params,
              count: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    return h, t


# per layer type: (its step, the regime it needs: "image", "features" or None for either, the regime after)
_STEPS = {
    nn.Linear: (_linear, "features", "features"),
    nn.Conv2d: (_conv, "image", "image"),
    nn.ReLU: (_relu, None, None),
    nn.MaxPool2d: (_max_pool, "image", "image"),
    GlobalAveragePool: (_global_average, "image", "features"),
    nn.Flatten: (_flatten, None, "features"),
    nn.Identity: (_identity, None, None),
    nn.Dropout: (_identity, None, None),
}


def plan_for(model: nn.Module, loss_fn: object, inputs: torch.Tensor, labels: torch.Tensor) -> FusedPlan | None:
    """The fused plan of ``model`` with ``loss_fn``, or None where the general path must run.

    Supported: an ``nn.Sequential`` of (or a single) ``Linear``, ``Conv2d`` (ungrouped, zero
    padding), ``ReLU``, ``MaxPool2d``, ``GlobalAveragePool``, ``Flatten()``, ``Identity`` and
    inactive ``Dropout``, exact types (subclasses such as the binary layers may change the
    forward pass), no module or global hooks, parameters of the inputs' dtype, inputs of
    B x features or B x C x H x W, ending in B x classes logits, with ``F.cross_entropy`` on
    class indices (a negative label, such as cross-entropy's ``ignore_index`` of -100, sends
    the call to the general path, which honours it; checking costs a few microseconds). Frozen parameters (``requires_grad=False``) are constants. Built on every
    call (a few microseconds), so it always sees the model as it is.
    """
    if loss_fn is not F.cross_entropy or labels.dim() != 1 or labels.dtype != torch.long:
        return None
    if labels.numel() and int(labels.min()) < 0:  # cross_entropy's ignore_index (-100): the general path skips those
        return None
    if not inputs.is_floating_point() or inputs.dim() not in (2, 4) or global_hooks_present():
        return None
    if type(model) is nn.Sequential:
        if has_hooks(model):
            return None
        children = [(f"{name}.", module) for name, module in model._modules.items()]
    else:
        children = [("", model)]
    regime = "features" if inputs.dim() == 2 else "image"
    layers, params = [], {}
    for prefix, module in children:
        if module is None or not _supported(module) or has_hooks(module):
            return None
        step, needs, after = _STEPS[type(module)]
        if needs is not None and needs != regime:
            return None
        regime = after or regime
        names = []
        for attribute in ("weight", "bias"):
            p = module._parameters.get(attribute)
            if p is None or not p.requires_grad:
                names.append(None)
                continue
            if p.dtype != inputs.dtype:
                return None
            names.append(prefix + attribute)
            params[prefix + attribute] = p
        if type(module) is nn.MaxPool2d and layers and layers[-1].step is _relu:
            layers[-1] = _Layer(module, _relu_max_pool)  # see _relu_max_pool
            continue
        layers.append(_Layer(module, step, *names))
    if not params or regime != "features":
        return None
    return FusedPlan(tuple(layers), params)


def flat_gaussian(params: Params, count: int, generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """K Gaussian directions over all parameters from ONE randn call: (flat buffer, per-parameter K x shape views).

    Parameter-major: parameter p's K x shape block is contiguous, so each view feeds the
    stacked-weight ops without a copy, and for K = 1 the buffer is the flat direction vector.
    """
    first = next(iter(params.values()))
    sizes = [count * p.numel() for p in params.values()]
    flat = torch.randn(sum(sizes), generator=generator, dtype=first.dtype, device=first.device)
    return flat, {name: block.view(count, *p.shape)
                  for (name, p), block in zip(params.items(), flat.split_with_sizes(sizes))}


def flat_combine(derivatives: torch.Tensor, flat: torch.Tensor, params: Params) -> dict[str, torch.Tensor]:
    """mean_k d_k v_k from a parameter-major flat buffer: for K = 1 one multiply g = d v, then views."""
    count = derivatives.shape[0]
    if count == 1:
        sizes = [p.numel() for p in params.values()]
        return {name: part.view(p.shape)
                for (name, p), part in zip(params.items(), torch.mul(flat, derivatives).split_with_sizes(sizes))}
    scale = derivatives / count
    sizes = [count * p.numel() for p in params.values()]
    return {name: torch.mv(block.view(count, -1).t(), scale).view(p.shape)
            for (name, p), block in zip(params.items(), flat.split_with_sizes(sizes))}


def _gaussian_core(plan: FusedPlan, inputs: torch.Tensor, labels: torch.Tensor, flat: torch.Tensor, count: int,
                   chunk_size: int | None) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Derivatives and estimate from a flat parameter-major direction buffer (what ``compiled_gaussian`` compiles)."""
    sizes = [count * p.numel() for p in plan.params.values()]
    views = {name: block.view(count, *p.shape)
             for (name, p), block in zip(plan.params.items(), flat.split_with_sizes(sizes))}
    loss, derivatives = plan.derivatives(inputs, labels, views, chunk_size)
    return loss, derivatives, flat_combine(derivatives, flat, plan.params)


_COMPILED: list[Callable] = []


def compiled_gaussian() -> Callable:
    """``_gaussian_core`` through ``torch.compile`` (built on first use; the first call per shape compiles, seconds).

    The directions are still drawn eagerly with the caller's generator (``flat_gaussian``), so
    the compiled and eager paths see the same directions; only the per-op overhead goes.
    """
    if not _COMPILED:
        _COMPILED.append(torch.compile(_gaussian_core))
    return _COMPILED[0]
