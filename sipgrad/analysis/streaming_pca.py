"""Streaming PCA of gradients: Frequent Directions, one sketch per layer.

Projecting gradients onto their top principal directions needs those directions *without*
keeping every gradient seen (the seed's first open problem: a buffer of gradients). Frequent
Directions (Liberty 2013; Ghashami, Liberty, Phillips & Woodruff 2016) keeps an l x P sketch B
of the rows of a stream A (one row per example gradient) such that

    0 <= A^T A - B^T B   and   ||A^T A - B^T B||_2 <= Delta <= ||A - A_k||_F**2 / (l + 1 - k)

for every k < l + 1, where Delta is the total shrinkage (``shrinkage``) and A_k the best rank-k
approximation of A. Rows arrive in chunks of at most l: each chunk is stacked under the sketch
(at most 2l rows), decomposed, and every squared singular value is reduced by the (l+1)-th,
which leaves at most l non-zero rows. Memory is O(l x P), time O(l P) per row.

Gradients drift as a model trains, so ``decay`` < 1 forgets: before each ``update`` the
sketch is scaled by sqrt(decay), which makes it a sketch of the rows weighted by
decay**(age in updates / 2), so that a row counts decay**age in A^T A; the bound then holds
for that weighted A.

Layers have different shapes (the seed's second open problem), so ``LayerwiseSketch`` keeps one
sketch per layer, of that layer's flattened gradient (P_layer columns), and projects each layer's
gradient onto its own top-k subspace. A layer with P_layer <= k is not sketched: its projection
is the identity.
"""

from __future__ import annotations

from typing import Mapping

import torch

from sipgrad.errors import SipgradError


class FrequentDirections:
    """An l x P Frequent Directions sketch of a stream of P-dimensional rows (float64)."""

    def __init__(self, dim: int, sketch_size: int, decay: float = 1.0, device: torch.device | str = "cpu") -> None:
        if dim < 1 or sketch_size < 1:
            raise SipgradError(f"sketch needs a positive dimension and size, got dim={dim}, size={sketch_size}")
        if not 0 < decay <= 1:
            raise SipgradError(f"decay must be in (0, 1], got {decay}")
        self.dim, self.sketch_size, self.decay = dim, sketch_size, decay
        self.sketch = torch.zeros(0, dim, dtype=torch.float64, device=device)
        self.shrinkage = torch.zeros((), dtype=torch.float64, device=device)  # a tensor: no host sync per chunk
        self.rows_seen = 0

    def update(self, rows: torch.Tensor) -> None:
        """Add rows (m x P); with ``decay`` < 1 the older rows are down-weighted first."""
        if rows.dim() != 2 or rows.shape[1] != self.dim:
            raise SipgradError(f"expected rows of width {self.dim}, got shape {tuple(rows.shape)}")
        if self.decay < 1:
            self.sketch = self.sketch * self.decay ** 0.5
            self.shrinkage = self.shrinkage * self.decay
        for chunk in rows.detach().to(self.sketch).split(self.sketch_size):
            self._absorb(chunk)
        self.rows_seen += rows.shape[0]

    def _absorb(self, chunk: torch.Tensor) -> None:
        singular, directions = _row_svd(torch.cat([self.sketch, chunk]))
        keep = self.sketch_size
        delta = singular[keep].square() if singular.numel() > keep else singular.new_zeros(())
        shrunk = (singular[:keep].square() - delta).clamp_min(0).sqrt()
        # Rows shrunk to zero stay, as zeros: their number depends on the data, and trimming them would read
        # it on the host at every chunk. They add nothing to B^T B nor to a projection (``basis``).
        self.sketch = shrunk[:, None] * directions[:keep]
        self.shrinkage = self.shrinkage + delta

    def components(self, k: int) -> torch.Tensor:
        """Orthonormal rows spanning the sketch's top-k subspace (at most k, fewer if the sketch has fewer)."""
        basis = self.basis(k)
        return basis[basis.norm(dim=1) > 0]

    def basis(self, k: int) -> torch.Tensor:
        """``components(k)`` padded with zero rows to min(k, rows kept): the same projection, no host sync."""
        if k < 1:
            raise SipgradError(f"k must be at least 1, got {k}")
        # The rows of the sketch are orthogonal and sorted by norm (they are s_i v_i^T after each absorb).
        rows = self.sketch[:k]
        norms = rows.norm(dim=1, keepdim=True)
        return rows / torch.where(norms > 0, norms, torch.ones_like(norms))

    def covariance_error_bound(self) -> float:
        """Delta: ||A^T A - B^T B||_2 is at most this."""
        return float(self.shrinkage)


def _row_svd(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Singular values and right singular vectors (as rows) of a short, wide m x P matrix.

    LAPACK's SVD of a wide matrix is several times slower than the eigendecomposition of the
    m x m Gram matrix, which gives the same factors in O(m^2 P). In float64
    its resolution is about 1e-8 of the largest singular value, so smaller ones are dropped
    (as zeros): FD only keeps the strongest directions anyway."""
    values, left = torch.linalg.eigh(rows @ rows.T)
    singular = values.flip(0).clamp_min(0).sqrt()
    keep = singular > 1e-7 * singular[0] if singular.numel() else singular > 0
    # Dropped as zeros, not removed: the shapes stay those of the input, so nothing is read on the host.
    singular = torch.where(keep, singular, torch.zeros_like(singular))
    scale = torch.where(keep, singular, torch.ones_like(singular))
    directions = (left.flip(1).T @ rows) / scale[:, None] * keep[:, None]
    return singular, directions


def principal_angles(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Principal angles (radians, ascending) between the row spaces of two k x P matrices.

    Rows need not be orthonormal: each is orthonormalised by QR first. With k1 != k2 rows,
    min(k1, k2) angles are returned."""
    if first.shape[0] < second.shape[0]:
        first, second = second, first
    q1 = torch.linalg.qr(first.to(torch.float64).T).Q
    q2 = torch.linalg.qr(second.to(torch.float64).T).Q
    cosines = torch.linalg.svdvals(q1.T @ q2).clamp(-1, 1)
    # arcsin of the sines is accurate for small angles, where arccos of cosines near 1 is not.
    residual = q2 - q1 @ (q1.T @ q2)
    sines = torch.linalg.svdvals(residual).flip(0)[: cosines.numel()].clamp(-1, 1)
    small = cosines > 2 ** -0.5
    angles = torch.where(small, torch.arcsin(sines), torch.arccos(cosines))
    return angles.sort().values


def project(vector: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """The orthogonal projection of ``vector`` (P) onto the span of orthonormal rows ``basis`` (k x P)."""
    basis = basis.to(vector.dtype)
    return basis.T @ (basis @ vector)


class LayerwiseSketch:
    """One Frequent Directions sketch per layer, and projections onto each layer's top-k subspace."""

    def __init__(self, sizes: Mapping[str, int], k: int, sketch_size: int | None = None, decay: float = 1.0,
                 device: torch.device | str = "cpu") -> None:
        sketch_size = 2 * k if sketch_size is None else sketch_size
        if k < 1:
            raise SipgradError(f"k must be at least 1, got {k}")
        if sketch_size < k:
            raise SipgradError(f"the sketch size ({sketch_size}) must be at least k ({k})")
        self.k = k
        self.sizes = dict(sizes)
        self.sketches = {layer: FrequentDirections(size, sketch_size, decay, device)
                         for layer, size in self.sizes.items() if size > k}

    def update(self, layer_rows: Mapping[str, torch.Tensor]) -> None:
        """Add one batch of per-example gradients (layer name -> B x P_layer)."""
        for layer, sketch in self.sketches.items():
            sketch.update(layer_rows[layer])

    def project(self, layer_vectors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each layer's vector projected onto its top-k subspace; unsketched layers pass unchanged."""
        out = {}
        for layer, vector in layer_vectors.items():
            sketch = self.sketches.get(layer)
            out[layer] = vector if sketch is None else project(vector, sketch.basis(self.k))
        return out
