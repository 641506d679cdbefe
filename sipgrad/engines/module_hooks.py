"""Whether a module's forward pass can be replaced by hand-written derivatives.

Both engines' fused paths (``forward/fused.py``, ``hypergrad/fused.py``) compute a plain
layer stack's derivatives without calling its modules. A hook, on one module or global,
could change what the module computes, so a hooked model must take the general path.
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules import module as _module_py


def has_hooks(module: nn.Module) -> bool:
    """True when ``module`` itself has any forward, forward-pre or backward hook."""
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or getattr(module, "_backward_pre_hooks", None))


def global_hooks_present() -> bool:
    """True when a global module hook (``nn.modules.module.register_module_*_hook``) is registered."""
    return bool(getattr(_module_py, "_global_forward_hooks", None)
                or getattr(_module_py, "_global_forward_pre_hooks", None)
                or getattr(_module_py, "_global_backward_hooks", None))
