"""The tensor-level attribution engine that every front end calls.

``AttributionEngine(classifier, method, sip, options)`` is built once per run: it checks
the method, parses and validates the SIP config, loads calibration statistics once and
finds Grad-CAM's layer. Calling it on a batch of *preprocessed* tensors with targets
returns the attribution, the logits on the clean inputs and the resolved targets.
``sipgrad.explain`` (files and arrays), ``sipgrad.evaluation`` (boxes) and
``sipgrad.analysis`` (internal gradients) are front ends on it, so a method, a SIP policy
or a fix lands everywhere at once.

A row's result depends only on that row: SIP filters per sample, noise is drawn per
image from (seed, image index), and the model runs in eval mode. So the maps do not
depend on the batch size (tested for every method x policy).
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Iterator, Mapping

import numpy as np
import torch

from sipgrad.attribution.methods import MethodOptions, attribute, get_method, saliency_map
from sipgrad.errors import SipgradError
from sipgrad.hooks.core import GradientHook, HookedModel
from sipgrad.hooks.sip import SIP, SIPConfig
from sipgrad.models.inference import evaluation_mode
from sipgrad.models.registry import Classifier

PREDICTED = -1


def resolve_predicted(targets: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """The one place where a negative target ("the predicted class") becomes the argmax of the logits."""
    return torch.where(targets < 0, logits.detach().argmax(dim=1), targets)


@dataclass
class BatchAttribution:
    """The engine's result for one batch.

    Attributes:
        attribution: at the model input, B x 3 x H x W (B x 1 x H x W for class activation maps).
        logits: the model's logits on the clean inputs (B x K).
        targets: the explained class of each row (B,), predicted classes resolved.
    """

    attribution: torch.Tensor
    logits: torch.Tensor
    targets: torch.Tensor

    def maps(self, reduce: str = "mean") -> torch.Tensor:
        """2-D saliency maps at input resolution (B x H x W), non-negative."""
        if self.attribution.shape[1] == 1:
            return self.attribution[:, 0].clamp_min(0)
        return saliency_map(self.attribution, reduce)


@contextlib.contextmanager
def full_precision(device: torch.device) -> Iterator[None]:
    """On CUDA: float32 convolutions without TF32 and deterministic cuDNN algorithms, for the block.

    cuDNN's default TF32 convolutions keep 10 mantissa bits: on an H200 they moved Lite0's
    gradient maps by up to 19% (max relative difference to the CPU) and made them depend on
    the batch size by up to 16% (cuDNN picks other kernels per batch size);
    ``benchmarks/cuda_checks.py`` measures it. Saliency is about which pixels matter, so
    sipgrad pays for exact float32 here. The caller's settings are restored on exit.
    """
    if torch.device(device).type != "cuda":
        yield
        return
    with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, benchmark=False, deterministic=True,
                                    allow_tf32=False):
        previous = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32 = previous


def _described(value: object) -> str:
    """A tensor's shape or another object's type, for one-line errors about what a model or caller gave."""
    return f"shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else f"a {type(value).__name__}"


def _check_input_shape(inputs: object) -> None:
    if not isinstance(inputs, torch.Tensor) or inputs.dim() != 4 or inputs.shape[0] == 0:
        raise SipgradError(f"inputs must be a B x C x H x W tensor with B >= 1, got {_described(inputs)}")
    if not inputs.is_floating_point():
        raise SipgradError(f"inputs must be floating point (preprocessed images), got {inputs.dtype}")


def _checked_values(inputs: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``inputs``, if every value is finite: a NaN would give NaN logits whose argmax is class 0."""
    finite = torch.isfinite(inputs).flatten(1).all(dim=1).cpu()
    if not bool(finite.all()):
        bad = indices[~finite].tolist()
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise SipgradError(f"input {bad[0]} holds NaN or infinite values{more}")
    return inputs


class AttributionEngine:
    """One method, one SIP configuration, one model: attributions for batches of tensors.

    Args:
        classifier: the model to explain.
        method: a name in ``sipgrad.attribution.METHODS``.
        sip: ``None``/``"none"``, a spec such as ``"topq:0.25"``, or a ``SIPConfig``.
        options: the methods' settings.
    """

    def __init__(self, classifier: Classifier, method: str, sip: str | SIPConfig | None = None,
                 options: MethodOptions | None = None) -> None:
        self.classifier = classifier
        self.method = get_method(method)
        self.options = options or MethodOptions()
        self.sip_config = SIPConfig.parse(sip)
        # Built once per run (statistics loaded, layers resolved and checked); entered per batch.
        self._sip = SIP(classifier, self.sip_config) if self.sip_config is not None else None
        self.layer_name = (self.options.gradcam_layer or classifier.gradcam_layer) if self.method.channels == 1 \
            else None
        self.layer = None
        if self.layer_name:
            self.layer = dict(classifier.module.named_modules()).get(self.layer_name)
            if self.layer is None:
                given = "gradcam_layer: " if self.options.gradcam_layer else ""  # the caller's name, or the model's
                raise SipgradError(f"{given}no layer named {self.layer_name!r} in {classifier.name}")
        pre = classifier.preprocessing
        self._pixel_range = float(np.mean([1.0 / s for s in pre.std]))
        self._warned: set[str] = set()

    @property
    def sip_label(self) -> str | None:
        return self.sip_config.label if self.sip_config else None

    def __call__(self, inputs: torch.Tensor, targets: torch.Tensor | None = None, *,
                 indices: torch.Tensor | None = None,
                 observers: Mapping[str, GradientHook] | None = None) -> BatchAttribution:
        """Attribute a batch of preprocessed ``inputs`` (B x C x H x W).

        Args:
            targets: (B,) class indices; ``-1`` (or ``targets=None``) explains the predicted class.
            indices: the rows' positions in the whole run (default 0..B-1); they seed random methods,
                so pass them when a run is split into batches.
            observers: extra gradient hooks (layer name -> hook) attached *after* SIP's, so they
                see the gradient each layer passes on (``sipgrad.analysis`` records with them).
        """
        classifier = self.classifier
        device = classifier.device
        _check_input_shape(inputs)
        batch = inputs.shape[0]
        indices = torch.arange(batch) if indices is None else torch.as_tensor(indices).reshape(-1).cpu()
        if indices.numel() != batch:
            raise SipgradError(f"{indices.numel()} image indices given for a batch of {batch}")
        inputs = _checked_values(inputs, indices).to(device=device, dtype=next(classifier.module.parameters()).dtype)
        targets = torch.full((batch,), PREDICTED, dtype=torch.long) if targets is None else targets
        targets = torch.as_tensor(targets, dtype=torch.long).reshape(-1).to(device)
        if targets.numel() != batch:
            raise SipgradError(f"{targets.numel()} targets given for a batch of {batch} inputs")
        module = classifier.module
        clean_logits: list[torch.Tensor] = []

        def run(x: torch.Tensor) -> torch.Tensor:
            return self._checked_logits(module(x), x.shape[0])

        def forward(x: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
            logits = run(x)
            if not clean_logits:
                clean_logits.append(logits.detach())
            return logits.gather(1, resolve_predicted(chosen, logits)[:, None])

        with evaluation_mode(module), full_precision(device), contextlib.ExitStack() as stack:
            if not self.method.single_pass:  # many noisy/interpolated passes: predict on the clean input first
                with torch.no_grad():
                    clean_logits.append(run(inputs))
                targets = resolve_predicted(targets, clean_logits[0])
            sip = self._sip
            if sip is not None:
                sip.hook.calls = 0
                stack.enter_context(sip)
            if observers:
                stack.enter_context(HookedModel(module, observers))
            if self.layer is not None:
                stack.callback(self.layer.register_forward_hook(self._check_layer_output).remove)
            black = classifier.preprocessing.normalize(torch.zeros(inputs.shape[1], 1, 1, device=device)) \
                if inputs.shape[1] == len(classifier.preprocessing.mean) else None
            attribution = attribute(self.method.name, forward, inputs, targets, options=self.options,
                                    layer=self.layer, pixel_range=self._pixel_range, black=black, indices=indices)
            logits = clean_logits[0]
            targets = resolve_predicted(targets, logits)
            if sip is not None:
                self._warn_if_inactive(sip, targets)
        return BatchAttribution(attribution.detach(), logits.detach(), targets)

    def _checked_logits(self, logits: object, rows: int) -> torch.Tensor:
        """The model's output, if it is the rows x K logits the classifier's K classes name."""
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != rows:
            raise SipgradError(f"{self.classifier.name} must return a B x K tensor of logits "
                               f"(B = {rows} here), got {_described(logits)}")
        if logits.shape[1] != len(self.classifier.classes):
            raise SipgradError(f"{self.classifier.name} returns {logits.shape[1]} logits per image but its "
                               f"classes name {len(self.classifier.classes)}; wrap it with classes of that length")
        return logits

    def _check_layer_output(self, module: object, args: tuple, output: object) -> None:
        if isinstance(output, (tuple, list)) and len(output) == 1:  # captum unpacks a one-element output
            output = output[0]
        if not (isinstance(output, torch.Tensor) and output.dim() == 4):
            raise SipgradError(f"Grad-CAM layer {self.layer_name!r} outputs {_described(output)}; Grad-CAM needs a "
                               f"B x C x H x W feature map")

    def _warn_if_inactive(self, sip: SIP, targets: torch.Tensor) -> None:
        """Say once per engine when SIP changed nothing (off the hot path: after the batch)."""
        reason = sip.inactive_reason(targets)
        if reason and reason not in self._warned:
            self._warned.add(reason)
            warnings.warn(f"SIP {sip.config.label} did nothing: {reason}", stacklevel=3)

