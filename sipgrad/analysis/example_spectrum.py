"""The spectrum of a batch of per-example gradients: how many directions do examples share?

Stack the B per-example gradients of one layer into a B x P matrix G. Its SVD
G = U diag(s) V^T gives

* the **singular values** s and the share ``s_i**2 / sum(s**2)`` of the gradients' energy
  along each right singular vector v_i (a direction in parameter space);
* the **effective rank** (Roy & Vetterli 2007, as in ``sipgrad.analysis.spectrum``);
* how much of the **batch-mean gradient** g = G^T 1 / B lies in the top-k directions:
  ``cos(g, P_k g) = ||V_k^T g|| / ||g||``, the cosine between the SGD step and its
  projection onto the k strongest directions (the step pca-sgd would take with the batch's
  exact subspace). Near 1 for small k means the examples agree along a few shared
  directions and the rest of the spectrum averages out.

The SVD is *uncentred* by default: these are the directions of the second moment of the
gradients. Centring would remove exactly the batch mean whose projection is measured.

The matrix is never decomposed directly: the smaller Gram matrix (B x B or P x P) goes
through ``torch.linalg.eigh`` in float64, which is much cheaper for B = 1024 and P in the
thousands, and the projections need only U and s (v_i^T g = u_i^T G g / s_i).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
from torch import nn

from sipgrad.analysis.per_example import layer_gradients
from sipgrad.analysis.spectrum import effective_rank
from sipgrad.errors import SipgradError

_TINY = 1e-300


@dataclass
class ExampleGradientSpectrum:
    """The spectrum of one layer's B x P per-example gradient matrix.

    Attributes:
        batch_size, parameters: B and P.
        singular_values: min(B, P) values, descending.
        explained: each direction's share of the gradients' energy (sums to 1).
        effective_rank: exp of the entropy of the normalised singular values.
        ks: the k values of ``mean_projection_cosine``.
        mean_projection_cosine: cos(g, P_k g) for each k in ``ks`` (1 when k >= rank, uncentred;
            centred, g need not lie in the centred rows' span).
    """

    batch_size: int
    parameters: int
    singular_values: torch.Tensor
    explained: torch.Tensor
    effective_rank: float
    ks: tuple[int, ...] = field(default_factory=tuple)
    mean_projection_cosine: torch.Tensor = field(default_factory=lambda: torch.zeros(0))

    def summary(self) -> dict:
        """JSON-ready: sizes, effective rank, the cosines by k, and the full spectrum."""
        return {"batch size": self.batch_size, "parameters": self.parameters,
                "effective rank": self.effective_rank, "top-1 energy": float(self.explained[:1].sum()),
                "cosine": {str(k): float(c) for k, c in zip(self.ks, self.mean_projection_cosine)},
                "singular values": self.singular_values.tolist(), "explained": self.explained.tolist()}


def example_gradient_spectrum(matrix: torch.Tensor, ks: tuple[int, ...] = (1, 2, 4, 8, 16, 32),
                              centre: bool = False) -> ExampleGradientSpectrum:
    """Spectrum and mean-projection cosines of a B x P per-example gradient matrix (see module doc)."""
    if matrix.dim() != 2 or matrix.shape[0] < 1 or matrix.shape[1] < 1:
        raise SipgradError(f"expected a B x P gradient matrix, got shape {tuple(matrix.shape)}")
    if any(k < 1 for k in ks):
        raise SipgradError(f"every k must be at least 1, got {list(ks)}")
    g_matrix = matrix.detach().to(torch.float64)
    batch, width = g_matrix.shape
    mean = g_matrix.mean(dim=0)
    if centre:
        g_matrix = g_matrix - mean
    if batch <= width:  # G G^T = U S^2 U^T, and v_i = G^T u_i / s_i, so v_i^T g = u_i^T G g / s_i
        values, vectors = torch.linalg.eigh(g_matrix @ g_matrix.T)
        values, vectors = values.flip(0), vectors.flip(1)
        singular = values.clamp_min(0).sqrt()
        defined = singular > 1e-12 * singular[0].clamp_min(_TINY)  # null directions carry nothing
        coefficients = torch.where(defined, ((g_matrix @ mean) @ vectors) / singular.clamp_min(_TINY), 0.0)
    else:  # G^T G = V S^2 V^T; coefficients: V^T g
        values, vectors = torch.linalg.eigh(g_matrix.T @ g_matrix)
        values, vectors = values.flip(0), vectors.flip(1)
        singular = values.clamp_min(0).sqrt()
        coefficients = mean @ vectors
    energy = singular.square()
    explained = energy / energy.sum().clamp_min(_TINY)
    captured = coefficients.square().cumsum(0)
    norm_squared = mean.square().sum()
    index = torch.tensor([min(k, captured.numel()) - 1 for k in ks], dtype=torch.long)
    cosine = (captured[index] / norm_squared.clamp_min(_TINY)).clamp(0, 1).sqrt()
    if norm_squared == 0:
        cosine = torch.zeros_like(cosine)
    return ExampleGradientSpectrum(batch_size=batch, parameters=width, singular_values=singular.float(), explained=explained.float(),
                                   effective_rank=float(effective_rank(singular[None])[0]), ks=tuple(ks),
                                   mean_projection_cosine=cosine.float())


def model_gradient_spectra(layer_matrices: dict[str, torch.Tensor], ks: tuple[int, ...] = (1, 2, 4, 8, 16, 32),
                           centre: bool = False) -> dict[str, ExampleGradientSpectrum]:
    """One spectrum per layer, plus ``"all"``: the whole model's gradient (the layers concatenated)."""
    spectra = {layer: example_gradient_spectrum(m, ks, centre) for layer, m in layer_matrices.items()}
    spectra["all"] = example_gradient_spectrum(torch.cat(list(layer_matrices.values()), dim=1), ks, centre)
    return spectra


def spectra_over_batch_sizes(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                             batch_sizes: tuple[int, ...], ks: tuple[int, ...] = (1, 2, 4, 8, 16, 32),
                             params: Mapping[str, torch.Tensor] | None = None, seed: int = 0, centre: bool = False,
                             chunk_size: int | None = None, progress: Callable[[int], None] | None = None
                             ) -> dict[int, dict[str, ExampleGradientSpectrum]]:
    """Spectra of nested random batches: batch size -> layer (and ``"all"``) -> spectrum.

    One seeded draw of max(batch_sizes) examples; each smaller batch is its first B examples,
    so the per-example gradients are computed once and the batch sizes are compared on
    the same examples. ``progress(1)`` is called once the per-example gradients are in, then
    once per distinct batch size (``len(set(batch_sizes)) + 1`` calls in all)."""
    if not batch_sizes or min(batch_sizes) < 1:
        raise SipgradError(f"batch sizes must be at least 1, got {list(batch_sizes)}")
    largest = max(batch_sizes)
    if largest > labels.shape[0]:
        raise SipgradError(f"batch size {largest} exceeds the {labels.shape[0]} examples available")
    order = torch.randperm(labels.shape[0], generator=torch.Generator().manual_seed(seed))[:largest]
    step = progress or (lambda done: None)
    rows = layer_gradients(model, inputs[order], labels[order], params, chunk_size=chunk_size)
    step(1)
    spectra = {}
    for size in sorted(set(batch_sizes)):
        spectra[size] = model_gradient_spectra({layer: m[:size] for layer, m in rows.items()}, ks, centre)
        step(1)
    return spectra


def spectrum_rows(spectra: Mapping[int, Mapping[str, ExampleGradientSpectrum]]) -> list[dict]:
    """Flatten ``spectra_over_batch_sizes``'s result into JSON-ready rows (one per batch size and layer)."""
    return [{"layer": layer, **spectrum.summary()} for by_layer in spectra.values()
            for layer, spectrum in by_layer.items()]
