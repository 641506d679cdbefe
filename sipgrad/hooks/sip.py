"""SIP: filter the gradients inside a network so saliency maps keep what matters.

``SIP(model, "topq:0.25")`` is a context manager. Inside it, every gradient that flows
backward through the hooked conv layers is filtered per sample (see
``sipgrad.hooks.filter``), whatever computes that gradient: ``sipgrad.explain``, a
captum method, or a plain ``loss.backward()``. On exit the hooks are gone.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import Any, Sequence

import torch
from torch import nn

from sipgrad.calibration.stats import SIPStatistics
from sipgrad.errors import SipgradError
from sipgrad.hooks.core import ForwardRecord, GradientHook, HookedModel, refuse_compiled
from sipgrad.hooks.policies import POLICIES, GradientFilter
from sipgrad.models.registry import Classifier, conv_names

POLICY_NAMES = ("none", *POLICIES)
DEFAULT_FRACTION = 0.25


def _number(spec: str, argument: str) -> float:
    try:
        value = float(argument)
    except ValueError:
        raise SipgradError(f"SIP policy {spec!r}: {argument!r} is not a number") from None
    if not math.isfinite(value):
        raise SipgradError(f"SIP policy {spec!r}: {argument!r} is not a finite number")
    return value


def layer_names(layers: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """Layer names from a comma-separated string or a sequence; None stays None (the model's default layers).

    The one parser of layer lists (SIP and the gradient analysis): an empty list is an error, never a
    silent fallback to the default layers.
    """
    if layers is None:
        return None
    names = tuple(s.strip() for s in layers.split(",") if s.strip()) if isinstance(layers, str) else tuple(layers)
    if not names:
        raise SipgradError("layers must name at least one layer")
    return names


@dataclass(frozen=True)
class SIPConfig:
    """Everything that defines a SIP run, validated when constructed.

    Attributes:
        policy: a name in ``sipgrad.hooks.policies.POLICIES``: ``cls``, ``ins`` (need
            ``stats``), the data-free ``topq``/``absq``/``act``, or the rank filter ``pca``.
        fraction: share of channels data-free policies keep (``topq:0.1`` sets 0.1).
        alpha: p-value threshold of ``cls``/``ins``.
        quantile: if set, ``cls``/``ins`` keep the ``channel_count(q, C)`` smallest p-values instead of ``alpha``.
        rank: the rank K of ``pca:K``.
        shapiro_gate: ``cls``/``ins`` keep only channels whose Shapiro-Wilk p-value is below
            ``shapiro_threshold`` (the paper's normality gate); ``False`` switches the gate off.
        gamma: ``inf`` zeroes pruned channels; a finite value damps them instead.
        variance_conservation: rescale the channels that pass. For the channel policies
            the filtered channel sum then has variance Var(sum of kept) + Var(sum of pruned)
            over positions (M + N in docs/sip.md; with finite ``gamma`` the two rescaled
            parts' variances add up to it), which is the unfiltered sum's variance only when
            the kept and pruned sums are uncorrelated; ``pca`` rescales to the unfiltered
            sum's own variance. ``False``: no rescaling.
        layers: module names to hook; default: the model's recommended layers.
        layer_ratio: hook the last int(r*N) of the model's N convs instead.
        stats: calibration statistics (a path or a loaded ``SIPStatistics``).
    """

    policy: str = "topq"
    fraction: float = DEFAULT_FRACTION
    alpha: float = 0.05
    quantile: float | None = None
    rank: int = 8
    shapiro_gate: bool = True
    shapiro_threshold: float = 0.05
    gamma: float = math.inf
    variance_conservation: bool = True
    layers: tuple[str, ...] | None = None
    layer_ratio: float | None = None
    stats: str | os.PathLike | SIPStatistics | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", layer_names(self.layers))
        if self.policy not in POLICIES:
            raise SipgradError(f"unknown SIP policy {self.policy!r}; choose from {', '.join(POLICIES)}")
        checks = [
            (0 < self.fraction <= 1, f"fraction must be in (0, 1], got {self.fraction}"),
            (0 < self.alpha <= 1, f"alpha must be in (0, 1], got {self.alpha}"),
            (self.quantile is None or 0 < self.quantile <= 1, f"quantile must be in (0, 1], got {self.quantile}"),
            (isinstance(self.rank, int) and not isinstance(self.rank, bool) and self.rank >= 1,
             f"rank must be a whole number >= 1, got {self.rank!r}"),
            (0 < self.shapiro_threshold <= 1, f"shapiro_threshold must be in (0, 1], got {self.shapiro_threshold}"),
            (self.gamma > 0, f"gamma must be positive (inf zeroes pruned channels), got {self.gamma}"),
            (self.layer_ratio is None or 0 < self.layer_ratio <= 1,
             f"layer_ratio must be in (0, 1], got {self.layer_ratio}"),
        ]
        for ok, message in checks:
            if not ok:
                raise SipgradError(f"SIP {message}")
        if POLICIES[self.policy].needs_statistics and self.stats is None:
            raise SipgradError(f"SIP policy {self.policy!r} needs calibration statistics (the stats parameter: "
                               f"a file made by calibrate), or use a data-free policy such as topq:0.25")

    @classmethod
    def parse(cls, spec: "str | SIPConfig | None", **overrides: Any) -> "SIPConfig | None":
        """Build a config from a spec (``none``, ``cls``, ``ins:0.1``, ``topq:0.25``, ``pca:8``, ...).

        ``overrides`` set the other fields; ``None`` values are ignored. Returns ``None``
        for ``none`` (no SIP).
        """
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if isinstance(spec, SIPConfig):
            return replace(spec, **overrides)
        if spec is None or str(spec).strip().lower() == "none":
            return None
        name, colon, argument = str(spec).strip().lower().partition(":")
        if colon and not argument.strip():  # `topq:` is a typo, not a request for the default fraction
            raise SipgradError(f"SIP policy {spec!r}: nothing after ':'; give a value (e.g. topq:0.25, pca:8) or "
                               f"the name alone for its default")
        if name not in POLICIES:
            raise SipgradError(f"unknown SIP policy {spec!r}; choose from {', '.join(POLICY_NAMES)} "
                               f"(data-free ones take a fraction, e.g. topq:0.25; pca takes a rank, e.g. pca:8)")
        field_name = POLICIES[name].argument
        if argument:
            if field_name is None:
                raise SipgradError(f"SIP policy {name!r} takes no argument, got {spec!r}")
            value = _number(spec, argument)
            if field_name == "rank":
                if value != int(value):
                    raise SipgradError(f"SIP policy {spec!r}: the rank must be a whole number")
                value = int(value)
            overrides[field_name] = value
        try:
            return cls(policy=name, **overrides)
        except SipgradError as error:  # name the spec the value came from: "SIP policy 'topq:2': fraction ..."
            if argument and field_name in str(error):
                raise SipgradError(f"SIP policy {spec!r}: {str(error).removeprefix('SIP ')}") from None
            raise

    def validate(self) -> None:
        """Kept for compatibility: a constructed config is always valid."""

    @property
    def label(self) -> str:
        """Short name for tables and file names, e.g. ``topq:0.25``, ``cls`` or ``pca:8``."""
        field_name = POLICIES[self.policy].argument
        value = getattr(self, field_name) if field_name else None
        return self.policy if value is None else f"{self.policy}:{value:g}"


def resolve_layers(module: nn.Module, default: tuple[str, ...] | None, layers: tuple[str, ...] | None = None,
                   layer_ratio: float | None = None) -> tuple[str, ...]:
    """The conv layers to hook: explicit names, the last ``layer_ratio`` of all convs, or the default."""
    convs = conv_names(module)
    if layers:
        known = set(dict(module.named_modules()))
        unknown = [name for name in layers if name not in known]
        if unknown:
            raise SipgradError(f"no layer named {unknown[0]!r}; conv layers are e.g. {', '.join(convs[-3:])}")
        return tuple(layers)
    if layer_ratio is not None:
        count = max(1, int(layer_ratio * len(convs)))
        return tuple(convs[-count:])
    if default:
        return tuple(default)
    return tuple(convs[len(convs) // 2:])


def build_policy(config: SIPConfig, statistics: SIPStatistics | None) -> GradientFilter:
    """The registered filter of ``config.policy``, built from the config."""
    return POLICIES[config.policy].from_config(config, statistics)


class SIPHook(GradientHook):
    """Filters the gradient at each hooked conv output with one registered filter; counts its calls."""

    def __init__(self, policy: GradientFilter) -> None:
        self.policy = policy
        self.reads_output = policy.reads_activation
        self.calls = 0

    @property
    def last_keep(self) -> dict[str, torch.Tensor]:
        """The last boolean keep mask (B x C) of each layer (channel policies only)."""
        return getattr(self.policy, "last_keep", {})

    def forward(self, name: str, output: torch.Tensor, record: ForwardRecord) -> Any:
        if output.dim() != 4:
            raise SipgradError(f"SIP layer {name!r} outputs shape {tuple(output.shape)}; SIP filters the "
                               f"channels of B x C x H x W conv outputs")
        return output.detach()

    def backward(self, name: str, grad: torch.Tensor, state: Any, record: ForwardRecord) -> torch.Tensor:
        self.calls += 1
        return self.policy.apply(name, state, grad, record.targets)


class SIP(HookedModel):
    """Context manager applying SIP to a model's internal gradients.

    Any gradient computed inside the block is filtered, whoever computes it; each row's
    explained class is read from the gradient at the logits, so captum's ``target=``
    (one class or one per row) is all a class-dependent policy needs:

    >>> with SIP(classifier, "topq:0.25"):
    ...     saliency = captum.attr.Saliency(classifier.module).attribute(x, target=285)

    Args:
        model: a ``Classifier`` (its recommended layers are the default) or any ``nn.Module``.
        config: a ``SIPConfig`` or a spec string such as ``"topq:0.25"``, ``"cls"``, ``"pca:8"``.
        **overrides: ``SIPConfig`` fields, e.g. ``stats="stats.npz"``, ``gamma=2``.
    """

    def __init__(self, model: Classifier | nn.Module, config: SIPConfig | str, **overrides: Any) -> None:
        parsed = SIPConfig.parse(config, **overrides)
        if parsed is None:
            raise SipgradError("SIP needs a policy; use no SIP context for plain gradients")
        module = model.module if isinstance(model, Classifier) else model
        refuse_compiled(module)
        default = model.sip_layers if isinstance(model, Classifier) else None
        statistics = parsed.stats
        if isinstance(statistics, (str, os.PathLike)):
            statistics = SIPStatistics.load(statistics)
        if POLICIES[parsed.policy].needs_statistics:
            statistics.check_model(module, getattr(model, "name", None))
            layers = resolve_layers(module, statistics.layers, parsed.layers, parsed.layer_ratio)
            uncalibrated = [name for name in layers if name not in statistics.per_layer]
            if uncalibrated:
                raise SipgradError(f"layer {uncalibrated[0]!r} is not in the statistics file "
                                   f"(calibrated: {', '.join(statistics.layers)})")
        else:
            layers = resolve_layers(module, default, parsed.layers, parsed.layer_ratio)
        self.config = parsed
        self.layers = layers
        self.statistics = statistics if isinstance(statistics, SIPStatistics) else None
        self.hook = SIPHook(build_policy(parsed, self.statistics))
        super().__init__(module, {name: self.hook for name in layers})

    def inactive_reason(self, targets: torch.Tensor) -> str | None:
        """Why SIP changed nothing for these explained ``targets``, or ``None`` if it may have acted.

        Checked by the explain pipeline after a batch, off the hot path: no gradient reached
        a hooked layer (e.g. every SIP layer lies before Grad-CAM's layer, where its gradient never goes), or ``cls``
        statistics hold no p-values for an explained class (Welch's test needs 2 calibration images of
        the class and 2 of the others, and some variance among them).
        """
        if self.hook.calls == 0:
            return (f"no gradient reached the SIP layers ({', '.join(self.layers[:2])}...): with Grad-CAM this "
                    f"happens when every SIP layer lies before the Grad-CAM layer (SIP acts only on that layer "
                    f"and those after it, between it and the logits)")
        if self.config.policy == "cls" and self.statistics is not None:
            import numpy as np

            classes = sorted({int(t) for t in targets.reshape(-1).tolist()})
            empty = [c for c in classes
                     if all(np.isnan(self.statistics.per_layer[name].class_pvalues[:, c]).all() for name in self.layers)]
            if empty:
                return (f"the cls statistics hold no p-values for class {empty[0]} (its calibration had fewer "
                        f"than 2 images of it or of the other classes, or no variance in them), so SIP keeps "
                        f"every channel for it")
        return None
