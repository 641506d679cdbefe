"""Record the internal gradients of a classifier, plain or under SIP, and analyse them.

``record_gradients`` returns the gradient of each image's explained logit at the output
of chosen conv layers. ``analyze_gradients`` runs the same over many images in batches
and keeps, per layer, the SVD spectrum of every image's gradient
(``sipgrad.analysis.spectrum``) and its channel vector (the gradient averaged over
positions), whose PCA across images (``channel_pca``) shows how many channel directions
the explanations of a data set use.

Under SIP the recorded gradient is the *filtered* one: what the layer passes on to the
layers below it, and so what the saliency map is made of.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from sipgrad.analysis.spectrum import GradientSpectrum, gradient_spectrum
from sipgrad.attribution.engine import AttributionEngine
from sipgrad.attribution.explain import TargetSpec, resolve_targets
from sipgrad.attribution.inputs import prepare_batch
from sipgrad.errors import SipgradError, renamed_centre
from sipgrad.hooks.core import ForwardRecord, GradientHook
from sipgrad.hooks.sip import SIPConfig, layer_names, resolve_layers
from sipgrad.io.atomic import atomic_write
from sipgrad.models.registry import Classifier


_SPECTRUM_FIELDS = ("singular_values", "explained", "effective_rank", "components", "loadings")


class GradientRecorder(GradientHook):
    """Keeps the gradient that arrives at each hooked layer's output (detached)."""

    reads_output = False

    def __init__(self) -> None:
        self.gradients: dict[str, torch.Tensor] = {}

    def forward(self, name: str, output: torch.Tensor, record: ForwardRecord) -> None:
        return None

    def backward(self, name: str, grad: torch.Tensor, state: Any, record: ForwardRecord) -> None:
        self.gradients[name] = grad.detach()
        return None


@dataclass
class RecordedGradients:
    """Gradients of the explained logits at named layers, for one batch of images.

    Attributes:
        gradients: layer name -> B x C x H x W gradient at the layer's output (on the CPU).
        targets: the explained class of each image (B,).
        logits: the model's logits (B x K).
        layers: the recorded layers, in model order.
        sip: the SIP configuration's label, or ``None`` for plain gradients.
    """

    gradients: dict[str, torch.Tensor]
    targets: torch.Tensor
    logits: torch.Tensor
    layers: tuple[str, ...]
    sip: str | None = None


def _as_classifier(model: Classifier | nn.Module) -> Classifier:
    return model if isinstance(model, Classifier) else Classifier.wrap(model)


def analysis_layers(model: Classifier | nn.Module, layers: tuple[str, ...] | str | None = None,
                    layer_ratio: float | None = None) -> tuple[str, ...]:
    """The layers to analyse: explicit names, the last ``layer_ratio`` of the convs, or the SIP default."""
    classifier = _as_classifier(model)
    return resolve_layers(classifier.module, classifier.sip_layers, layer_names(layers), layer_ratio)


def _record_batch(engine: AttributionEngine, inputs: torch.Tensor, targets: torch.Tensor, layers: tuple[str, ...],
                  indices: torch.Tensor | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Run the engine's plain gradient with a recorder on ``layers``.

    The recorder is an engine *observer*: attached after SIP, so it sees the filtered
    gradient, the one each layer passes on. Gradients are taken w.r.t. the input only, so
    parameters' ``.grad`` stay untouched.
    """
    recorder = GradientRecorder()
    result = engine(inputs, targets, indices=indices, observers={name: recorder for name in layers})
    missing = [name for name in layers if name not in recorder.gradients]
    if missing:
        raise SipgradError(f"no gradient reached layer {missing[0]!r}: is it on the path from input to logits?")
    return {name: recorder.gradients[name] for name in layers}, result.targets, result.logits


def _setup(model, images, target, layers, layer_ratio, sip, crop):
    """What every analysis needs: the classifier, layers, the engine, prepared batch and targets."""
    classifier = _as_classifier(model)
    chosen_layers = analysis_layers(classifier, layers, layer_ratio)
    engine = AttributionEngine(classifier, "grad", sip)
    prepared = prepare_batch(images, classifier.preprocessing, crop)
    targets = resolve_targets(target, classifier.classes, prepared.inputs.shape[0])
    return classifier, chosen_layers, engine, prepared, targets


def record_gradients(model: Classifier | nn.Module, images: Any, target: TargetSpec = None,
                     layers: tuple[str, ...] | str | None = None, sip: str | SIPConfig | None = None, *,
                     layer_ratio: float | None = None, crop: bool = False) -> RecordedGradients:
    """Gradients of each image's explained logit at the output of ``layers`` (one batch).

    Args:
        model: a ``Classifier`` or any ``nn.Module`` returning logits.
        images: paths, PIL images, arrays, or a model-input tensor (as for ``sipgrad.explain``).
        target: ``None`` (the predicted class), one class for all, or one per image.
        layers: layer names (default: the model's SIP layers); or ``layer_ratio``.
        sip: record under SIP (``"topq:0.25"``, a ``SIPConfig``); ``None``: plain gradients.
    """
    _, chosen_layers, engine, prepared, targets = _setup(model, images, target, layers, layer_ratio, sip, crop)
    gradients, chosen, logits = _record_batch(engine, prepared.inputs, targets, chosen_layers)
    return RecordedGradients({name: grad.cpu() for name, grad in gradients.items()}, chosen.cpu(), logits.cpu(),
                             chosen_layers, engine.sip_label)


def median(values: torch.Tensor) -> float:
    """The median of ``values``: the mean of the two middle values when their number is even.

    ``torch.Tensor.median`` returns the lower of the two, which for two images is their
    minimum; a "median over images" table would then understate every even-sized sample.
    Computed in float64 so the mean of two float32 values is not rounded.
    """
    flat = values.detach().reshape(-1).double()
    if flat.numel() == 0:
        return float("nan")
    return float(torch.quantile(flat, 0.5))


@dataclass
class GradientAnalysis:
    """Per-layer gradient spectra of many images (see ``analyze_gradients``).

    Attributes:
        spectra: layer -> ``GradientSpectrum`` over all images.
        channel_vectors: layer -> N x C, each image's gradient averaged over positions.
        targets: explained class per image (N,).
        names: image names.
        layers: analysed layers, in model order.
        sip: SIP label or ``None``.
        images: the part of each original image the model saw (its centre crop with ``crop``),
            which the components cover, for figures.
    """

    spectra: dict[str, GradientSpectrum]
    channel_vectors: dict[str, torch.Tensor]
    targets: torch.Tensor
    names: list[str]
    layers: tuple[str, ...]
    sip: str | None = None
    images: list[np.ndarray] = field(default_factory=list, repr=False)

    def summary(self, top: int = 3) -> list[dict[str, Any]]:
        """One row per layer: medians over images of the effective rank and top-component energy.

        The median of an even number of images is the mean of the two middle values (see
        ``median``), not the lower one that ``torch.Tensor.median`` returns.
        """
        rows = []
        for layer in self.layers:
            spectrum = self.spectra[layer]
            rows.append({
                "sip": self.sip or "none", "layer": layer, "channels": int(self.channel_vectors[layer].shape[1]),
                "rank bound": int(spectrum.singular_values.shape[1]),
                "effective rank": median(spectrum.effective_rank),
                "top-1 energy": median(spectrum.energy_in_top(1)),
                f"top-{top} energy": median(spectrum.energy_in_top(top)),
            })
        return rows

    def arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """Flat name -> array mapping (``<prefix><layer>/<field>``), as written by ``save_npz``."""
        out = {f"{prefix}targets": self.targets.numpy()}
        for layer in self.layers:
            spectrum = self.spectra[layer]
            for key in _SPECTRUM_FIELDS:
                out[f"{prefix}{layer}/{key}"] = getattr(spectrum, key).numpy()
            out[f"{prefix}{layer}/channel_vectors"] = self.channel_vectors[layer].numpy()
        return out


def concat_analyses(parts: list[GradientAnalysis]) -> GradientAnalysis:
    """Join analyses of consecutive image batches (same layers and SIP config) into one."""
    if not parts:
        raise SipgradError("no analyses to join")
    first = parts[0]
    if any(p.layers != first.layers or p.sip != first.sip for p in parts):
        raise SipgradError("only analyses of the same layers and SIP config can be joined")
    spectra = {layer: GradientSpectrum(*(torch.cat([getattr(p.spectra[layer], key) for p in parts])
                                         for key in _SPECTRUM_FIELDS)) for layer in first.layers}
    vectors = {layer: torch.cat([p.channel_vectors[layer] for p in parts]) for layer in first.layers}
    return GradientAnalysis(spectra, vectors, torch.cat([p.targets for p in parts]),
                            [name for p in parts for name in p.names], first.layers, first.sip,
                            [image for p in parts for image in p.images])


def channel_pca(vectors: torch.Tensor | np.ndarray, components: int = 10) -> dict[str, np.ndarray]:
    """PCA across images of their channel gradient vectors (N x C), with scikit-learn.

    Returns ``explained_variance_ratio`` and ``components`` (unit channel directions).
    A few components explaining most of the variance means the images' explanations
    share a few channel directions.
    """
    from sklearn.decomposition import PCA

    data = np.asarray(vectors, dtype=np.float64)
    if data.ndim != 2 or data.shape[0] < 2:
        raise SipgradError("channel PCA needs at least two images")
    count = min(components, *data.shape)
    if not np.any(data.var(axis=0) > 0):  # identical vectors: no direction explains anything
        return {"explained_variance_ratio": np.zeros(count), "components": np.zeros((count, data.shape[1]))}
    # The full SVD, not scikit-learn's default randomized solver for larger inputs, which draws from numpy's global
    # generator: the same vectors give the same components whatever the caller's random state.
    pca = PCA(n_components=count, svd_solver="full").fit(data)
    return {"explained_variance_ratio": pca.explained_variance_ratio_, "components": pca.components_}


def analyze_gradients(model: Classifier | nn.Module, images: Any, target: TargetSpec = None,
                      layers: tuple[str, ...] | str | None = None, sip: str | SIPConfig | None = None, *,
                      layer_ratio: float | None = None, components: int = 3, centre: bool = True,
                      crop: bool = False, batch_size: int = 16,
                      progress: Callable[[int], None] | None = None, center: bool | None = None) -> GradientAnalysis:
    """Spectra of the internal gradients of many images, batch by batch (bounded memory).

    Only the spectra, the ``components`` strongest spatial maps and the channel vectors are
    kept, not the full gradients. Arguments as for ``record_gradients``; ``centre=False``
    analyses the raw gradient matrix instead of its PCA.
    """
    centre = renamed_centre(centre, center)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise SipgradError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    _, chosen_layers, engine, prepared, all_targets = _setup(model, images, target, layers, layer_ratio, sip, crop)
    parts = []
    for start in range(0, prepared.inputs.shape[0], batch_size):
        rows = torch.arange(start, min(start + batch_size, prepared.inputs.shape[0]))
        gradients, chosen, _ = _record_batch(engine, prepared.inputs[rows], all_targets[rows], chosen_layers, rows)
        spectra, vectors = {}, {}
        for name, grad in gradients.items():  # SVDs on the model's device; only results go to the CPU
            if grad.dim() != 4:  # a Linear or pooled layer: say which, rather than the spectrum's shape complaint
                raise SipgradError(f"layer {name!r} gives a {tuple(grad.shape)} gradient, not a B x C x H x W map; "
                                   f"the analysis needs convolutional layers")
            spectrum = gradient_spectrum(grad, components, centre)
            spectra[name] = GradientSpectrum(*(getattr(spectrum, key).cpu() for key in _SPECTRUM_FIELDS))
            vectors[name] = grad.mean(dim=(2, 3)).cpu()
        chunk = slice(start, start + len(rows))
        shown = [geometry.covered(image) for geometry, image in zip(prepared.geometries[chunk], prepared.images[chunk])]
        parts.append(GradientAnalysis(spectra, vectors, chosen.cpu(), prepared.names[chunk], chosen_layers,
                                      engine.sip_label, shown))
        if progress is not None:
            progress(len(rows))
    return concat_analyses(parts)


def save_analyses(path: str, analyses: list[GradientAnalysis], pca_components: int = 10) -> None:
    """Write several analyses (e.g. plain and SIP) to one npz, atomically; keys ``<sip>/<layer>/<field>``.

    With at least two images, each layer's channel PCA across images is stored as well
    (``<sip>/<layer>/pca_explained_variance_ratio``).
    """
    arrays: dict[str, np.ndarray] = {}
    for analysis in analyses:
        prefix = f"{analysis.sip or 'none'}/"
        arrays.update(analysis.arrays(prefix))
        if len(analysis.names) >= 2:
            for layer in analysis.layers:
                pca = channel_pca(analysis.channel_vectors[layer], pca_components)
                arrays[f"{prefix}{layer}/pca_explained_variance_ratio"] = pca["explained_variance_ratio"]
    if analyses:
        arrays["names"] = np.array(analyses[0].names)
        arrays["layers"] = np.array(analyses[0].layers)
    with atomic_write(path, suffix=".tmp.npz") as tmp:
        np.savez_compressed(tmp, **arrays)
