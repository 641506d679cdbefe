"""Forward-mode gradients: JVPs, forward-gradient estimates, training without backprop.

* ``jvp``: input-space JVPs and forward gradients (``model_jvp``, ``forward_gradient``).
* ``samplers``: direction samplers, one registry (``SAMPLERS``, ``make_sampler``).
* ``estimators``: K directions in one vmapped JVP over a model's parameters.
* ``cosine``: how well each sampler's estimate points along the true gradient.
* ``binary``: sign-binarised layers with a straight-through estimator that works in forward mode.
* ``models``: the small MLP / CNN / binary models of these experiments.
* ``training``: SGD (momentum) and Adam on forward gradients, beside backprop.
* ``figures``: accuracy curves and gradient row-correlation heatmaps.

The names of the former single module ``sipgrad.engines.forward`` stay importable from here.
"""

from sipgrad.engines.forward.estimators import (
                                                GradientEstimate,
                                                directional_derivatives,
                                                estimate_gradient,
                                                forward_gradient_step,
                                                model_gradient_estimate,
)
from sipgrad.engines.forward.jvp import (
                                                forward_gradient,
                                                model_jvp,
                                                quiet_forward_ad,
                                                target_logit,
)
from sipgrad.engines.forward.samplers import SAMPLERS, DirectionSampler, make_sampler

__all__ = [
    "SAMPLERS", "DirectionSampler", "GradientEstimate", "directional_derivatives", "estimate_gradient",
    "forward_gradient", "forward_gradient_step", "make_sampler", "model_gradient_estimate", "model_jvp",
    "quiet_forward_ad", "target_logit",
]
