"""Gradient hooks on module outputs, attached for the duration of a ``with`` block.

Why not ``register_full_backward_hook``: module backward hooks break when a module's
output is modified in place (torchvision's ``ReLU(inplace=True)``, pytorch#61519).
Instead, a forward hook registers a *tensor* hook on the module's output. That hook
receives the gradient at the output and may return a replacement, so autograd
computes the module's input gradient once, from the replaced gradient. A tensor hook
registered before an in-place op still sees the gradient w.r.t. the original output.

The *value* a hook saw at forward time is another matter: ``output.detach()`` shares
storage with the output, so an in-place op after the module (``LeakyReLU(inplace=True)``,
``SiLU(inplace=True)``, a residual ``out += identity``) would change what the hook reads at
backward time. Once the forward pass is over, each hooked output is checked: if its version
counter moved through anything but in-place ReLUs (which every SIP score tolerates, see
``sipgrad.hooks.policies``), the module is run again on its saved inputs and the hook gets
the output it really produced. Models with no in-place op after a hooked layer (BatchNorm
follows the conv in ResNet and EfficientNet) pay nothing.

The design follows zennit's Hook/Composite split: a ``GradientHook`` says what to do
with one layer's gradient; ``HookedModel`` attaches a set of them to named modules,
reads each forward pass's explained targets from the gradient at its logits, and removes everything on exit,
also when the body raises. The user's model is never modified.
"""

from __future__ import annotations

import abc
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn

from sipgrad.errors import SipgradError
from sipgrad.models.registry import is_compiled


@dataclass
class ForwardRecord:
    """What hooks know about one forward pass of the root model.

    ``targets`` (shape (B,)) are the classes being explained, one per row of that pass.
    They are read at backward time from the gradient arriving at the model's logits,
    which autograd computes before any internal layer's gradient: the class with the
    largest |dL/dlogit| in each row. For every captum gradient method (and any loss made
    of one logit per row) that gradient is one-hot at the explained class, so each row's
    target is known exactly, whatever way the method expanded, reordered or split the
    batch (IG's internal batches, NoiseTunnel's samples): nothing is guessed and no
    per-run state is copied around. ``None`` until the logits' gradient has arrived, or
    when the model's output is not a B x K tensor.
    """

    targets: torch.Tensor | None = None
    pending: list["_HookedOutput"] = field(default_factory=list, repr=False)

    def settle(self) -> None:
        """Settle every hooked output of this pass (the pass is over: no in-place op can follow)."""
        for hooked in self.pending:
            hooked.settle()
        self.pending.clear()


# In-place ops after which a hook may keep reading the output as it is (see the module docstring).
_HARMLESS_IN_PLACE = frozenset({"ReluBackward0"})


class _HookedOutput:
    """One hooked module output of one forward pass, and the state its hook made of it.

    Holds the output, the module and its inputs only until the pass is over (``settle``);
    then it keeps just the hook's state, recomputed first if an in-place op changed the output.
    """

    def __init__(self, name: str, module: nn.Module, args: tuple, output: torch.Tensor,
                 make_state: Callable[[torch.Tensor], Any], reads_output: bool) -> None:
        self.name = name
        self.state = make_state(output)
        self._make_state = make_state
        self._check = (module, args, output, output._version, output.grad_fn,
                       [a._version if isinstance(a, torch.Tensor) else None for a in args]) if reads_output else None

    def settle(self) -> None:
        if self._check is None:
            return
        module, args, output, version, node, arg_versions = self._check
        self._check = None
        if output._version == version or _only_harmless_since(output.grad_fn, node):
            return
        if any(isinstance(a, torch.Tensor) and a._version != v for a, v in zip(args, arg_versions)):
            raise SipgradError(f"layer {self.name!r}: both its output and its input were changed in place "
                               "after it ran, so what the layer produced cannot be recovered; make the "
                               "in-place operations after it out of place (inplace=False)")
        with torch.no_grad():
            self.state = self._make_state(module.forward(*args))


def _only_harmless_since(current: Any, start: Any) -> bool:
    """Whether the autograd nodes from ``current`` back to ``start`` are all harmless in-place ops."""
    while current is not start:
        if current is None or current.name() not in _HARMLESS_IN_PLACE or not current.next_functions:
            return False
        current = current.next_functions[0][0]
    return True


class GradientHook(abc.ABC):
    """Sees, and may replace, the gradient arriving at one module's output.

    ``reads_output``: whether the state ``forward`` returns depends on the output's values.
    Such state is recomputed when an in-place op changes the output later in the pass.
    """

    reads_output: bool = True

    def forward(self, name: str, output: torch.Tensor, record: ForwardRecord) -> Any:
        """Called after the module's forward; returns the state handed to ``backward``."""
        return output.detach()

    @abc.abstractmethod
    def backward(self, name: str, grad: torch.Tensor, state: Any, record: ForwardRecord) -> torch.Tensor | None:
        """Return a replacement gradient, or ``None`` to leave it unchanged."""


def targets_from_logit_gradient(grad: torch.Tensor) -> torch.Tensor:
    """Each row's explained class: where |dL/dlogit| is largest (exact for one-hot gradients)."""
    return grad.detach().abs().argmax(dim=1)


def refuse_compiled(model: nn.Module) -> None:
    """Hooks on a ``torch.compile``'d model would silently never run (compiled code skips them)."""
    if is_compiled(model):
        raise SipgradError("a torch.compile'd model runs compiled code that skips module hooks; hook and "
                           "call the original module (model._orig_mod) instead")


class HookedModel:
    """Context manager that attaches ``GradientHook``s to named modules of ``model``.

    >>> with HookedModel(model, {"layer4.1.conv2": hook}):
    ...     model(x)[0, 285].backward()
    """

    def __init__(self, model: nn.Module, hooks: Mapping[str, GradientHook]) -> None:
        refuse_compiled(model)
        modules = dict(model.named_modules())
        missing = [name for name in hooks if name not in modules]
        if missing:
            raise SipgradError(f"no module named {missing[0]!r} in {type(model).__name__}")
        self.model = model
        self.hooks = dict(hooks)
        self._modules = {name: modules[name] for name in hooks}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._record: ForwardRecord | None = None
        self._active = False

    def set_targets(self, targets: torch.Tensor | None) -> None:
        """Deprecated and ignored: each row's target is now read from the gradient at the logits."""
        warnings.warn("set_targets() is no longer needed and is ignored: SIP reads each row's explained class "
                      "from the gradient at the model's logits (pass target= to captum as usual)",
                      DeprecationWarning, stacklevel=2)

    # -- hook plumbing -------------------------------------------------------------------
    def _root_pre_hook(self, module: nn.Module, args: tuple) -> None:
        self._record = ForwardRecord()

    def _root_hook(self, module: nn.Module, args: tuple, output: Any) -> None:
        record = self._record
        if record is not None:
            record.settle()
        if record is None or not (isinstance(output, torch.Tensor) and output.dim() == 2 and output.requires_grad):
            return

        def logits_hook(grad: torch.Tensor) -> None:
            if self._active:
                record.targets = targets_from_logit_gradient(grad)

        output.register_hook(logits_hook)

    def _make_forward_hook(self, name: str):
        hook = self.hooks[name]

        def forward_hook(module: nn.Module, args: tuple, output: Any) -> None:
            if not (self._active and isinstance(output, torch.Tensor) and output.requires_grad):
                return
            record = self._record if self._record is not None else ForwardRecord()
            hooked = _HookedOutput(name, module, args, output, lambda out: hook.forward(name, out, record),
                                   hook.reads_output)
            record.pending.append(hooked)

            def tensor_hook(grad: torch.Tensor) -> torch.Tensor | None:
                if not self._active:  # a graph built inside the block, backpropagated after it
                    return None
                hooked.settle()  # already done at the end of the pass, unless the root never finished one
                return hook.backward(name, grad, hooked.state, record)

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
