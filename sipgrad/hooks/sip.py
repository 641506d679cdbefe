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
from typing import Any

import torch
from torch import nn

from sipgrad.calibration.stats import SIPStatistics
from sipgrad.errors import SipgradError
from sipgrad.hooks.core import ForwardRecord, GradientHook, HookedModel
from sipgrad.hooks.filter import filter_gradient
from sipgrad.hooks.policies import DATA_FREE_POLICIES, STATISTICAL_POLICIES, ChannelPolicy
from sipgrad.models.registry import Classifier, conv_names

POLICY_NAMES = ("none", *STATISTICAL_POLICIES, *DATA_FREE_POLICIES)
DEFAULT_FRACTION = 0.25


@dataclass(frozen=True)
class SIPConfig:
    """Everything that defines a SIP run; the CLI's ``--sip`` options map onto these fields.

    Attributes:
        policy: ``cls``, ``ins`` (need ``stats``) or a data-free ``topq``/``absq``/``act``.
        fraction: share of channels data-free policies keep (``topq:0.1`` sets 0.1).
        alpha: p-value threshold of ``cls``/``ins``.
        quantile: if set, ``cls``/``ins`` keep the int(q*C) smallest p-values instead of ``alpha``.
        shapiro_gate: ``cls``/``ins`` keep only channels whose Shapiro-Wilk p-value is below
            ``shapiro_threshold`` (the paper's normality gate); ``False`` switches the gate off.
        gamma: ``inf`` zeroes pruned channels; a finite value damps them instead.
        variance_conservation: rescale so the summed gradient keeps its variance.
        layers: module names to hook; default: the model's recommended layers.
        layer_ratio: hook the last int(r*N) of the model's N convs instead.
        stats: calibration statistics (a path or a loaded ``SIPStatistics``).
    """

    policy: str = "topq"
    fraction: float = DEFAULT_FRACTION
    alpha: float = 0.05
    quantile: float | None = None
    shapiro_gate: bool = True
    shapiro_threshold: float = 0.05
    gamma: float = math.inf
    variance_conservation: bool = True
    layers: tuple[str, ...] | None = None
    layer_ratio: float | None = None
    stats: str | os.PathLike | SIPStatistics | None = None

    @classmethod
    def parse(cls, spec: "str | SIPConfig | None", **overrides: Any) -> "SIPConfig | None":
        """Build a config from a CLI-style spec (``none``, ``cls``, ``ins``, ``topq:0.25``, ...).

        ``overrides`` set the other fields; ``None`` values are ignored. Returns ``None``
        for ``none`` (no SIP).
        """
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if isinstance(spec, SIPConfig):
            return replace(spec, **overrides)
        if spec is None or str(spec).strip().lower() == "none":
            return None
        name, _, argument = str(spec).strip().lower().partition(":")
        if name not in POLICY_NAMES:
            raise SipgradError(f"unknown SIP policy {spec!r}; choose from {', '.join(POLICY_NAMES)} "
                               f"(data-free ones take a fraction, e.g. topq:0.25)")
        if argument:
            try:
                value = float(argument)
            except ValueError:
                raise SipgradError(f"SIP policy {spec!r}: {argument!r} is not a number") from None
            key = "fraction" if name in DATA_FREE_POLICIES else "quantile"
            overrides.setdefault(key, value)
        if "layers" in overrides and isinstance(overrides["layers"], str):
            overrides["layers"] = tuple(s.strip() for s in overrides["layers"].split(",") if s.strip())
        config = cls(policy=name, **overrides)
        config.validate()
        return config

    def validate(self) -> None:
        if self.policy in DATA_FREE_POLICIES and not 0 < self.fraction <= 1:
            raise SipgradError(f"SIP fraction must be in (0, 1], got {self.fraction}")
        if self.quantile is not None and not 0 < self.quantile <= 1:
            raise SipgradError(f"SIP quantile must be in (0, 1], got {self.quantile}")
        if self.gamma <= 0:
            raise SipgradError(f"SIP gamma must be positive, got {self.gamma}")
        if self.layer_ratio is not None and not 0 < self.layer_ratio <= 1:
            raise SipgradError(f"--layer-ratio must be in (0, 1], got {self.layer_ratio}")
        if self.policy in STATISTICAL_POLICIES and self.stats is None:
            raise SipgradError(f"SIP policy {self.policy!r} needs calibration statistics: pass --stats FILE "
                               f"(made by `sipgrad calibrate`), or use a data-free policy such as topq:0.25")

    @property
    def label(self) -> str:
        """Short name for tables and file names, e.g. ``topq:0.25`` or ``cls``."""
        if self.policy in DATA_FREE_POLICIES:
            return f"{self.policy}:{self.fraction:g}"
        return self.policy if self.quantile is None else f"{self.policy}:{self.quantile:g}"


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


def build_policy(config: SIPConfig, statistics: SIPStatistics | None) -> ChannelPolicy:
    if config.policy in DATA_FREE_POLICIES:
        return DATA_FREE_POLICIES[config.policy](config.fraction)
    return STATISTICAL_POLICIES[config.policy](statistics, alpha=config.alpha, quantile=config.quantile,
                                               shapiro_threshold=config.shapiro_threshold if config.shapiro_gate else None)


class SIPHook(GradientHook):
    """Filters the gradient at one conv output according to a channel policy."""

    def __init__(self, policy: ChannelPolicy, gamma: float, variance_conservation: bool) -> None:
        self.policy = policy
        self.gamma = gamma
        self.variance_conservation = variance_conservation
        self.last_keep: dict[str, torch.Tensor] = {}

    def backward(self, name: str, grad: torch.Tensor, state: Any, record: ForwardRecord) -> torch.Tensor:
        keep = self.policy.keep_mask(name, state, grad, record.targets)
        self.last_keep[name] = keep
        return filter_gradient(grad, keep, self.gamma, self.variance_conservation)


class SIP(HookedModel):
    """Context manager applying SIP to a model's internal gradients.

    >>> with SIP(classifier, "topq:0.25") as sip:
    ...     saliency = captum.attr.Saliency(classifier.module).attribute(x, target=285)

    Args:
        model: a ``Classifier`` (its recommended layers are the default) or any ``nn.Module``.
        config: a ``SIPConfig`` or a spec string such as ``"topq:0.25"``, ``"cls"``.
        **overrides: ``SIPConfig`` fields, e.g. ``stats="stats.npz"``, ``gamma=2``.
    """

    def __init__(self, model: Classifier | nn.Module, config: SIPConfig | str, **overrides: Any) -> None:
        parsed = SIPConfig.parse(config, **overrides)
        if parsed is None:
            raise SipgradError("SIP needs a policy; use no SIP context for plain gradients")
        module = model.module if isinstance(model, Classifier) else model
        default = model.sip_layers if isinstance(model, Classifier) else None
        statistics = parsed.stats
        if isinstance(statistics, (str, os.PathLike)):
            statistics = SIPStatistics.load(statistics)
        if parsed.policy in STATISTICAL_POLICIES:
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
        self.hook = SIPHook(build_policy(parsed, statistics), parsed.gamma, parsed.variance_conservation)
        super().__init__(module, {name: self.hook for name in layers})
