"""Gradient analysis.

Per image: SVD/PCA of the internal gradients a saliency map is made of (``gradients``,
``spectrum``). Across examples: per-example parameter gradients (``per_example``), their
spectrum (``example_spectrum``), streaming PCA with Frequent Directions per layer
(``streaming_pca``), and training on the gradients' top-k directions (``projected_training``).
"""

from sipgrad.analysis.example_spectrum import (ExampleGradientSpectrum, example_gradient_spectrum,
                                               model_gradient_spectra, spectra_over_batch_sizes)
from sipgrad.analysis.gradients import (GradientAnalysis, GradientRecorder, RecordedGradients, analysis_layers,
                                        analyze_gradients, channel_pca, concat_analyses, record_gradients,
                                        save_analyses)
from sipgrad.analysis.per_example import LayerLayout, layer_gradients, per_example_gradients
from sipgrad.analysis.projected_training import (OPTIMIZERS, SUBSPACES, ProjectedTrainConfig, ProjectedTrainResult,
                                                 randomize_labels, train_projected)
from sipgrad.analysis.spectrum import GradientSpectrum, effective_rank, gradient_spectrum
from sipgrad.analysis.streaming_pca import FrequentDirections, LayerwiseSketch, principal_angles

__all__ = [
    "ExampleGradientSpectrum", "FrequentDirections", "GradientAnalysis", "GradientRecorder", "GradientSpectrum",
    "LayerLayout", "LayerwiseSketch", "OPTIMIZERS", "ProjectedTrainConfig", "ProjectedTrainResult", "RecordedGradients",
    "SUBSPACES",
    "analysis_layers", "analyze_gradients", "channel_pca", "concat_analyses", "effective_rank",
    "example_gradient_spectrum", "gradient_spectrum", "layer_gradients", "model_gradient_spectra",
    "per_example_gradients", "principal_angles", "randomize_labels", "record_gradients", "save_analyses",
    "spectra_over_batch_sizes", "train_projected",
]
