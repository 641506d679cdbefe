"""Gradient analysis: SVD/PCA of the internal gradients a saliency map is made of."""

from sipgrad.analysis.gradients import (GradientAnalysis, GradientRecorder, RecordedGradients, analysis_layers,
                                        analyze_gradients, channel_pca, concat_analyses, record_gradients,
                                        save_analyses)
from sipgrad.analysis.spectrum import GradientSpectrum, effective_rank, gradient_spectrum

__all__ = [
    "GradientAnalysis", "GradientRecorder", "GradientSpectrum", "RecordedGradients", "analysis_layers",
    "analyze_gradients", "channel_pca", "concat_analyses", "effective_rank", "gradient_spectrum", "record_gradients", "save_analyses",
]
