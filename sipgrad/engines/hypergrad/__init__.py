"""Hypergradients through unrolled training, in forward and reverse mode (Franceschi et al. 2017).

* ``updates``: the inner step as a pure function of (weights, velocity, batch,
  hyperparameters); built in: heavy-ball SGD in RFHO's and PyTorch's conventions, with
  per-layer L1/L2 penalties.
* ``problem``: ``InnerProblem`` (start weights, update, mini-batches, validation loss) and
  ``classification_problem``, the seed experiment's MLP on a ``SmallDataset``.
* ``modes``: ``forward_hypergradient`` (tangents for all m hyperparameters at once,
  ``jvp`` vmapped) and ``reverse_hypergradient`` (stored trajectory, optional
    checkpointing, or autograd's whole graph).
* ``outer``: projected Adam on the hyperparameters.
* ``report``: RFHO's printed report, per outer step and mode.
"""

from sipgrad.engines.hypergrad.modes import (
    MODES,
    HypergradientResult,
    NonFiniteError,
    forward_hypergradient,
    hypergradient,
    reverse_hypergradient,
)
from sipgrad.engines.hypergrad.outer import (
    BOUNDS,
    AdamConfig,
    OuterStep,
    ProjectedAdam,
    bounds_for,
    optimize_hyperparameters,
)
from sipgrad.engines.hypergrad.problem import (
    ClassificationProblem,
    InnerProblem,
    classification_problem,
    epoch_schedule,
    mlp,
    seed_hyperparameters,
)
from sipgrad.engines.hypergrad.report import StepReport, run_experiment
from sipgrad.engines.hypergrad.updates import (
    UPDATES,
    HeavyBall,
    InnerUpdate,
    Penalty,
    layerwise_penalties,
    make_update,
    penalized_parameters,
    rfho_momentum,
    torch_momentum,
)

__all__ = [
    "BOUNDS", "MODES", "UPDATES", "AdamConfig", "ClassificationProblem", "HeavyBall", "HypergradientResult",
    "InnerProblem", "InnerUpdate", "NonFiniteError", "OuterStep", "Penalty", "ProjectedAdam", "StepReport",
    "bounds_for", "classification_problem", "epoch_schedule", "forward_hypergradient", "hypergradient",
    "layerwise_penalties", "make_update", "mlp", "optimize_hyperparameters", "penalized_parameters",
    "reverse_hypergradient", "rfho_momentum", "run_experiment", "seed_hyperparameters", "torch_momentum",
]
