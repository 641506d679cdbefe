"""Gradient engines: forward mode (JVPs, forward gradients) and hypergradients through unrolled SGD."""

from sipgrad.engines.forward import (forward_gradient, forward_gradient_step, model_jvp, quiet_forward_ad,
                                     target_logit)
from sipgrad.engines.hypergradient import (HYPERPARAMETERS, Hypergradient, hypergradient, module_losses,
                                           tune_hyperparameters)

__all__ = [
    "HYPERPARAMETERS", "Hypergradient", "forward_gradient", "forward_gradient_step", "hypergradient", "model_jvp",
    "module_losses", "quiet_forward_ad", "target_logit", "tune_hyperparameters",
]
