"""Per-example parameter gradients of any model, grouped by layer.

The batch gradient of a mean loss is the average of one gradient per example; looking at
those B gradients *before* they are averaged is what the gradient-structure analyses
(``example_spectrum``, ``streaming_pca``, ``projected_training``) are about.

They are computed with ``torch.func``: ``grad`` of the one-example loss, evaluated with
``functional_call`` on the model's parameters, and ``vmap``-ed over the batch, so there is no
Python loop over examples (``chunk_size`` bounds the memory of the vectorised pass).

Batch norm in training mode mixes the examples of a batch, so the gradient "of one example"
would depend on the others: such models are refused (switch them to ``eval()``, where batch
norm uses its running statistics and every example is independent).

A *layer* is a module that owns parameters directly (``0.weight`` and ``0.bias`` form layer
``0``; the parameters of the model's root module itself, say a bare ``nn.Linear``'s, form
layer ``""``). ``LayerLayout`` flattens a parameter dict into one vector per layer and back, so the
analyses can treat layers of any shapes as plain vectors of P_layer numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from sipgrad.errors import SipgradError

Params = dict[str, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def model_parameters(model: nn.Module) -> Params:
    """The trainable parameters of ``model``, detached (the functional training state)."""
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def _refuse_training_batchnorm(model: nn.Module) -> None:
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
            raise SipgradError(f"module {name!r} is batch norm in training mode, which mixes the examples of a "
                               "batch; per-example gradients need the model in eval mode")


def per_example_gradients(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                          params: Mapping[str, torch.Tensor] | None = None, loss_fn: LossFn = F.cross_entropy,
                          chunk_size: int | None = None) -> tuple[Params, torch.Tensor]:
    """The gradient of each example's loss with respect to every parameter.

    Args:
        model: any module; only its structure and buffers are used when ``params`` is given.
        inputs: B x ... inputs; labels: B targets.
        params: parameter values to differentiate at (default: the model's own).
        loss_fn: ``(logits of one example as 1 x K, label as (1,)) -> scalar``.
        chunk_size: examples vectorised at once (default: all); lower it to bound memory.

    Returns:
        (gradients, losses): parameter name -> B x *shape, and the B per-example losses.
        Their mean over the batch is the gradient of the mean loss.
    """
    _refuse_training_batchnorm(model)
    if inputs.shape[0] != labels.shape[0]:
        raise SipgradError(f"{inputs.shape[0]} inputs but {labels.shape[0]} labels")
    if chunk_size is not None and chunk_size < 1:
        raise SipgradError(f"chunk_size must be at least 1, got {chunk_size}")
    params = dict(params) if params is not None else model_parameters(model)
    buffers = dict(model.named_buffers())

    def loss_of_one(weights: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, (weights, buffers), (x.unsqueeze(0),))
        return loss_fn(logits, y.unsqueeze(0))

    compute = vmap(grad_and_value(loss_of_one), in_dims=(None, 0, 0), chunk_size=chunk_size)
    return compute(params, inputs, labels)


@dataclass(frozen=True)
class LayerLayout:
    """How parameters group into layers, and how a layer's parameters flatten into one vector.

    Attributes:
        layers: layer name -> the parameter names it owns, in model order.
        shapes: parameter name -> shape.
    """

    layers: dict[str, tuple[str, ...]]
    shapes: dict[str, tuple[int, ...]]

    @classmethod
    def of(cls, params: Mapping[str, torch.Tensor]) -> "LayerLayout":
        layers: dict[str, list[str]] = {}
        for name in params:
            layer = name.rsplit(".", 1)[0] if "." in name else ""  # the root module's own parameters: layer ""
            layers.setdefault(layer, []).append(name)
        return cls({layer: tuple(names) for layer, names in layers.items()},
                   {name: tuple(p.shape) for name, p in params.items()})

    def size(self, layer: str) -> int:
        """P_layer: the number of parameters in ``layer``."""
        return sum(int(torch.Size(self.shapes[name]).numel()) for name in self.layers[layer])

    def flatten(self, tensors: Mapping[str, torch.Tensor], batch_dims: int = 0) -> dict[str, torch.Tensor]:
        """Parameter-shaped tensors (with ``batch_dims`` leading dims) -> layer name -> ... x P_layer."""
        out = {}
        for layer, names in self.layers.items():
            parts = [tensors[name].reshape(*tensors[name].shape[:batch_dims], -1) for name in names]
            out[layer] = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
        return out

    def unflatten(self, vectors: Mapping[str, torch.Tensor]) -> Params:
        """Inverse of ``flatten`` for one vector per layer."""
        out = {}
        for layer, names in self.layers.items():
            sizes = [int(torch.Size(self.shapes[name]).numel()) for name in names]
            for name, part in zip(names, vectors[layer].split(sizes)):
                out[name] = part.reshape(self.shapes[name])
        return out


def layer_gradients(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                    params: Mapping[str, torch.Tensor] | None = None, chunk_size: int | None = None,
                    ) -> dict[str, torch.Tensor]:
    """Per-example gradients as one B x P_layer matrix per layer (model order)."""
    gradients, _ = per_example_gradients(model, inputs, labels, params, chunk_size=chunk_size)
    return LayerLayout.of(gradients).flatten(gradients, batch_dims=1)
