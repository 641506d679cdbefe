"""Gradient engines: forward mode (JVPs, forward gradients) and hypergradients through unrolled SGD."""

from sipgrad.engines.forward import forward_gradient, forward_gradient_step, model_jvp, target_logit
from sipgrad.engines.hypergradient import (HYPERPARAMETERS, Hypergradient, hypergradient, module_losses,
                                           tune_hyperparameters)

__all__ = [
    "HYPERPARAMETERS", "Hypergradient", "forward_gradient", "forward_gradient_step", "hypergradient", "model_jvp",
    "module_losses", "target_logit", "tune_hyperparameters",
]
