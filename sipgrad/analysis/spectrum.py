"""SVD/PCA of the internal gradients of one layer: how many directions does a gradient use?

For one image, the gradient G at a conv output is a C x HW matrix: every spatial
position carries a C-dimensional gradient vector. Its singular value decomposition

    G = U diag(s) V^T,   U: C x R (channel loadings), V^T: R x HW (spatial components)

says how the gradient is organised. If a few singular values carry nearly all the
energy, the gradient is essentially a few channel patterns, each painted over the image
by one spatial map; if the energy is spread evenly, the gradient is closer to
unstructured noise. With ``centre=True`` each channel's mean over positions is removed
first, so ``s**2`` are the PCA variances of the positions' gradient vectors.

Everything is batched (``torch.linalg.svd`` on B x C x HW): no loop over images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sipgrad.errors import renamed_centre

_TINY = 1e-30


@dataclass
class GradientSpectrum:
    """The spectrum of a batch of gradients at one layer.

    Attributes:
        singular_values: B x R, descending (R = min(C, HW)).
        explained: B x R, share of the gradient's energy (sum of s**2) in each component.
        effective_rank: B, exp of the entropy of the normalised singular values (Roy &
            Vetterli 2007): 1 for a rank-1 gradient, R for a flat spectrum, 0 for a zero gradient.
        components: B x k x H x W, the spatial maps of the k strongest components (rows of V^T).
            Signs are fixed so each map's largest-magnitude entry is positive (SVD signs are arbitrary).
        loadings: B x k x C, the matching channel loadings (columns of U), signs fixed alike.
    """

    singular_values: torch.Tensor
    explained: torch.Tensor
    effective_rank: torch.Tensor
    components: torch.Tensor
    loadings: torch.Tensor

    def energy_in_top(self, k: int) -> torch.Tensor:
        """Share of each image's gradient energy in its ``k`` strongest components (B,)."""
        return self.explained[:, :k].sum(dim=1)


def effective_rank(singular_values: torch.Tensor) -> torch.Tensor:
    """Roy & Vetterli's effective rank of each row of non-negative singular values (B x R -> B)."""
    total = singular_values.sum(dim=1, keepdim=True)
    p = singular_values / total.clamp_min(_TINY)
    entropy = -(p * torch.log(p.clamp_min(_TINY))).sum(dim=1)
    return torch.where(total[:, 0] > 0, entropy.exp(), torch.zeros_like(entropy))


def gradient_spectrum(grad: torch.Tensor, components: int = 3, centre: bool = True, *,
                      center: bool | None = None) -> GradientSpectrum:
    """SVD of each image's gradient (B x C x H x W), viewed as a C x HW matrix.

    Args:
        grad: gradients at one layer's output.
        components: how many spatial components and loadings to keep.
        centre: remove each channel's mean over positions first (PCA); ``False`` keeps the
            mean, whose pattern then usually dominates the first component.
    """
    centre = renamed_centre(centre, center)
    if grad.dim() != 4:
        raise ValueError(f"expected a B x C x H x W gradient, got shape {tuple(grad.shape)}")
    batch, channels, height, width = grad.shape
    matrix = grad.detach().to(torch.float64).reshape(batch, channels, height * width)
    if centre:
        matrix = matrix - matrix.mean(dim=2, keepdim=True)
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    energy = s.square()
    explained = energy / energy.sum(dim=1, keepdim=True).clamp_min(_TINY)
    k = min(components, s.shape[1])
    maps, loads = vh[:, :k, :], u[:, :, :k].transpose(1, 2)
    # Fix the sign of each component pair (u_k, v_k) so v_k's largest-magnitude entry is positive.
    peak = maps.gather(2, maps.abs().argmax(dim=2, keepdim=True))
    sign = torch.where(peak < 0, -1.0, 1.0).to(maps.dtype)
    maps, loads = maps * sign, loads * sign
    return GradientSpectrum(
        singular_values=s.float(), explained=explained.float(), effective_rank=effective_rank(s).float(),
        components=maps.reshape(batch, k, height, width).float(), loadings=loads.float())
