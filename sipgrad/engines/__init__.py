"""Gradient engines: forward mode (JVPs, forward gradients) and hypergradients through unrolled SGD."""

from sipgrad.engines.forward import (forward_gradient, forward_gradient_step, model_jvp, quiet_forward_ad,
                                     target_logit)
# Deprecated names; new code: sipgrad.engines.hypergrad. ``hypergradient`` is the module, callable
# as the old function (importing the function here would hide the module from ``import ... as``).
from sipgrad.engines import hypergradient
from sipgrad.engines.hypergradient import Hypergradient, module_losses, tune_hyperparameters

__all__ = [
    "HYPERPARAMETERS", "Hypergradient", "forward_gradient", "forward_gradient_step", "hypergradient", "model_jvp",
    "module_losses", "quiet_forward_ad", "target_logit", "tune_hyperparameters",
]


def __getattr__(name: str):  # HYPERPARAMETERS is deprecated: warn on use, not on import
    if name == "HYPERPARAMETERS":
        import importlib

        return importlib.import_module("sipgrad.engines.hypergradient").__getattr__(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
