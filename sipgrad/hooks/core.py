"""Gradient hooks on module outputs, attached for the duration of a ``with`` block.

Why not ``register_full_backward_hook``: module backward hooks break when a module's
output is modified in place (torchvision's ``ReLU(inplace=True)``, pytorch#61519).
Instead, a forward hook registers a *tensor* hook on the module's output. That hook
receives the gradient at the output and may return a replacement, so autograd
computes the module's input gradient once, from the replaced gradient. A tensor hook
registered before an in-place op still sees the gradient w.r.t. the original output.

The design follows zennit's Hook/Composite split: a ``GradientHook`` says what to do
with one layer's gradient; ``HookedModel`` attaches a set of them to named modules,
tracks the explained targets of each forward pass, and removes everything on exit,
also when the body raises. The user's model is never modified.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from sipgrad.errors import SipgradError


@dataclass
class ForwardRecord:
    """What hooks know about one forward pass of the root model.

    ``targets`` (shape (B,)) are the classes being explained: given explicitly through
    ``HookedModel.set_targets``, or the argmax of the logits once the pass finishes.
    Hooks read it at backward time, when it is always filled.
    """

    targets: torch.Tensor | None = None


class GradientHook(abc.ABC):
    """Sees, and may replace, the gradient arriving at one module's output."""

    def forward(self, name: str, output: torch.Tensor, record: ForwardRecord) -> Any:
        """Called after the module's forward; returns the state handed to ``backward``."""
        return output.detach()

    @abc.abstractmethod
    def backward(self, name: str, grad: torch.Tensor, state: Any, record: ForwardRecord) -> torch.Tensor | None:
        """Return a replacement gradient, or ``None`` to leave it unchanged."""


class HookedModel:
    """Context manager that attaches ``GradientHook``s to named modules of ``model``.

    >>> with HookedModel(model, {"layer4.1.conv2": hook}) as hooked:
    ...     hooked.set_targets(torch.tensor([285]))
    ...     model(x)[0, 285].backward()
    """

    def __init__(self, model: nn.Module, hooks: Mapping[str, GradientHook]) -> None:
        modules = dict(model.named_modules())
        missing = [name for name in hooks if name not in modules]
        if missing:
            raise SipgradError(f"no module named {missing[0]!r} in {type(model).__name__}")
        self.model = model
        self.hooks = dict(hooks)
        self._modules = {name: modules[name] for name in hooks}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._pending_targets: torch.Tensor | None = None
        self._record: ForwardRecord | None = None
        self._active = False

    # -- targets -------------------------------------------------------------------------
    def set_targets(self, targets: torch.Tensor | None) -> None:
        """Explain ``targets`` (shape (B,)) in the following forward passes; ``None`` or a
        negative entry: the predicted class (argmax of that pass's logits).

        When a forward batch is a whole multiple of ``len(targets)`` the targets are tiled,
        matching how captum expands inputs for SmoothGrad and Integrated Gradients.
        """
        self._pending_targets = None if targets is None else torch.as_tensor(targets).reshape(-1)

    def _explicit_targets(self, batch: int, device: torch.device) -> torch.Tensor | None:
        targets = self._pending_targets
        if targets is None:
            return None
        if batch % targets.numel() != 0:
            raise SipgradError(f"{targets.numel()} targets set for a forward batch of {batch}")
        return targets.to(device).repeat(batch // targets.numel())

    # -- hook plumbing -------------------------------------------------------------------
    def _root_pre_hook(self, module: nn.Module, args: tuple) -> None:
        first = args[0] if args and isinstance(args[0], torch.Tensor) else None
        targets = None if first is None else self._explicit_targets(first.shape[0], first.device)
        self._record = ForwardRecord(targets)

    def _root_hook(self, module: nn.Module, args: tuple, output: Any) -> None:
        record = self._record
        if record is None or not (isinstance(output, torch.Tensor) and output.dim() == 2):
            return
        predicted = output.detach().argmax(dim=1)
        # A negative explicit target means "the predicted class"; torch.where avoids a host sync.
        record.targets = predicted if record.targets is None else torch.where(record.targets < 0, predicted,
                                                                                record.targets)

    def _make_forward_hook(self, name: str):
        hook = self.hooks[name]

        def forward_hook(module: nn.Module, args: tuple, output: Any) -> None:
            if not (self._active and isinstance(output, torch.Tensor) and output.requires_grad):
                return
            record = self._record if self._record is not None else ForwardRecord()
            state = hook.forward(name, output, record)

            def tensor_hook(grad: torch.Tensor) -> torch.Tensor | None:
                if not self._active:  # a graph built inside the block, backpropagated after it
                    return None
                return hook.backward(name, grad, state, record)

            output.register_hook(tensor_hook)

        return forward_hook

    def __enter__(self) -> "HookedModel":
        self._active = True
        self._handles.append(self.model.register_forward_pre_hook(self._root_pre_hook))
        self._handles.append(self.model.register_forward_hook(self._root_hook))
        for name, module in self._modules.items():
            self._handles.append(module.register_forward_hook(self._make_forward_hook(name)))
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()

    def remove(self) -> None:
        """Detach every hook; safe to call twice."""
        self._active = False
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._record = None
