"""Scoring explanations against boxes: every method x SIP config on each batch in one pass."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np
import torch

from sipgrad.attribution.engine import AttributionEngine
from sipgrad.attribution.methods import MethodOptions, get_method
from sipgrad.errors import SipgradError
from sipgrad.evaluation import metrics
from sipgrad.evaluation.cases import Case, boxes_to_input, pad_boxes
from sipgrad.evaluation.catalog import BOX_METRICS, METRICS, PERTURBATION_METRICS, ScoringInputs  # noqa: F401
from sipgrad.evaluation.predictor import PerturbationPredictor
from sipgrad.hooks.sip import SIPConfig
from sipgrad.models.inference import evaluation_mode
from sipgrad.models.registry import Classifier


@dataclass(frozen=True)
class EvalConfig:
    """One explanation configuration: a method and an optional SIP setting."""

    method: str
    sip: SIPConfig | None

    @property
    def key(self) -> str:
        return f"{self.method}/{self.sip.label if self.sip else 'none'}"


# The method options an evaluation runs with unless told otherwise. Fewer IG steps and SmoothGrad samples than a
# single explanation's (MethodOptions: 50 and 25), because every case runs under every config. They are always
# recorded in a run's identity (with the seed), as the CLI has recorded them from the start.
EVALUATION_METHOD_DEFAULTS: Mapping[str, Any] = MappingProxyType({"ig_steps": 32, "smoothgrad_samples": 16, "seed": 0})


@dataclass(frozen=True)
class EvalSettings:
    """What to compute, validated and parsed once on construction; ``describe()`` is what a
    resumed run must agree with.

    ``method_options`` are ``MethodOptions`` fields; those it does not give come from
    ``EVALUATION_METHOD_DEFAULTS`` (IG steps, SmoothGrad samples, seed), then from
    ``MethodOptions``: the Python call and `sipgrad evaluate` compute the same maps.
    """

    methods: tuple[str, ...] = ("grad",)
    sips: tuple[str, ...] = ("none",)
    sip_options: Mapping[str, Any] = field(default_factory=dict)
    tolerance: float | None = None  # pointing-game radius in px; None: 15 px at a 224-px input, scaled
    steps: int = 10  # deletion/insertion steps; 0 switches them off
    crop: bool = False
    method_options: Mapping[str, Any] = field(default_factory=dict)
    compile: bool = False  # torch.compile the perturbation passes; changes speed only, so not in describe()

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", tuple(self.methods))
        object.__setattr__(self, "sips", tuple(self.sips))
        # Read-only copies: describe() (a run's identity on disk) must keep matching what the engines were built
        # with, so neither the caller's dicts nor these can change the settings after construction.
        object.__setattr__(self, "sip_options", MappingProxyType(dict(self.sip_options)))
        object.__setattr__(self, "method_options",
                           MappingProxyType({**EVALUATION_METHOD_DEFAULTS, **dict(self.method_options)}))
        for method in self.methods:
            get_method(method)
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise SipgradError(f"steps must be a whole number >= 0, got {self.steps!r}")
        if self.tolerance is not None and not (math.isfinite(self.tolerance) and self.tolerance >= 0):
            raise SipgradError(f"tolerance must be a finite number >= 0, got {self.tolerance!r}")
        object.__setattr__(self, "_options", MethodOptions(**self.method_options))
        sips = [SIPConfig.parse(spec, **self.sip_options) for spec in self.sips]
        configs = tuple(EvalConfig(method, sip) for method in self.methods for sip in sips)
        keys = [c.key for c in configs]
        if len(set(keys)) != len(keys):
            raise SipgradError("the same method and SIP config is listed twice")
        object.__setattr__(self, "_configs", configs)

    @property
    def options(self) -> MethodOptions:
        """The methods' settings, parsed once."""
        return self._options  # type: ignore[attr-defined]

    def configs(self) -> list[EvalConfig]:
        return list(self._configs)  # type: ignore[attr-defined]

    def describe(self) -> dict[str, Any]:
        options = {k: str(v) for k, v in self.sip_options.items() if v is not None}
        described = {"configs": [c.key for c in self.configs()], "sip_options": options, "tolerance": self.tolerance,
                     "steps": self.steps, "crop": self.crop,
                     "method_options": {k: v for k, v in sorted(self.method_options.items()) if v is not None}}
        if self.draws_noise:  # runs made before noise came from case ids lack the key: see runner.RUN_FILE_DEFAULTS
            described["noise"] = NOISE_SEEDING
        return described

    @property
    def draws_noise(self) -> bool:
        """Whether a method draws random noise (SmoothGrad, IG with a noise baseline), so records depend on it."""
        return any(get_method(method).draws_noise(self.options) for method in self.methods)


# How random methods seed each case's noise (``Case.noise_index``); recorded in a run's identity.
NOISE_SEEDING = "seed and case id"


@dataclass
class PreparedCases:
    """A batch of cases loaded and preprocessed once, shared by every config.

    ``cases`` are the readable ones (in order); ``failed`` maps the unreadable ones' ids to
    their one-line error.
    """

    cases: list[Case]
    inputs: torch.Tensor
    boxes: torch.Tensor
    valid: torch.Tensor
    failed: dict[str, str] = field(default_factory=dict)


class Evaluator:
    """Explains batches of cases under every config and scores the maps against the boxes."""

    def __init__(self, classifier: Classifier, settings: EvalSettings) -> None:
        if settings.tolerance is None:  # TorchRay's 15 px is for 224-px inputs; keep the same share of the image
            settings = replace(settings, tolerance=15.0 * classifier.preprocessing.input_size / 224)
        self.classifier = classifier
        self.settings = settings
        self.configs = settings.configs()
        # One engine per config, built once: SIP statistics loaded and layers checked once per run.
        self.engines = {config.key: AttributionEngine(classifier, config.method, config.sip, settings.options)
                        for config in self.configs}
        self._predictor_cache: PerturbationPredictor | None = None

    def prepare(self, cases: list[Case]) -> PreparedCases:
        """Load and preprocess each case once; unreadable images are set aside with their error."""
        pre = self.classifier.preprocessing
        tensors, geometries, readable, failed = [], [], [], {}
        for case in cases:
            try:
                tensor, geometry = pre.prepare(case.load(), crop=self.settings.crop)
            except SipgradError as error:
                failed[case.case_id] = str(error)
                continue
            tensors.append(tensor)
            geometries.append(geometry)
            readable.append(case)
        if not readable:
            empty = torch.zeros(0)
            return PreparedCases([], empty, empty, empty, failed)
        boxes, valid = pad_boxes([boxes_to_input(case.boxes, g) for case, g in zip(readable, geometries)])
        return PreparedCases(readable, torch.stack(tensors), boxes, valid, failed)

    def maps(self, prepared: PreparedCases, config: EvalConfig) -> torch.Tensor:
        """Saliency maps (B x H x W, input resolution) of the ``prepared`` cases under ``config``: the maps that
        ``evaluate`` scores, random methods included (each case's noise comes from its id)."""
        device = self.classifier.device
        targets = torch.tensor([case.target for case in prepared.cases], device=device)
        return self.engines[config.key](prepared.inputs.to(device), targets, indices=_noise_indices(prepared.cases)
                                        ).maps()

    def evaluate(self, cases: list[Case] | PreparedCases, configs: list[EvalConfig] | None = None,
                 keep_maps: bool = False, skip: set[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
        """Records (one per case and config) for a batch of cases, each image prepared once.

        ``skip`` holds (case id, config key) pairs already done. An unreadable image gives,
        per config, a record with its ``error`` instead of scores, and so does a map holding
        NaN or inf (scored, NaN would pass as a miss and an energy of 0).
        """
        prepared = cases if isinstance(cases, PreparedCases) else self.prepare(cases)
        skip = skip or set()
        configs = configs or self.configs
        records = [{"case": case_id, "config": config.key, "method": config.method,
                    "sip": config.sip.label if config.sip else "none", "error": error}
                   for case_id, error in prepared.failed.items() for config in configs
                   if (case_id, config.key) not in skip]
        if not prepared.cases:
            return records
        device = self.classifier.device
        inputs, boxes, valid = prepared.inputs.to(device), prepared.boxes.to(device), prepared.valid.to(device)
        targets = torch.tensor([case.target for case in prepared.cases], device=device)
        height, width = inputs.shape[-2:]
        mask = metrics.box_mask(boxes, valid, height, width)
        box_fraction = mask.float().mean(dim=(1, 2))
        families = ("box", "perturbation") if self.settings.steps > 0 else ("box",)
        for config in configs:
            rows = [i for i, case in enumerate(prepared.cases) if (case.case_id, config.key) not in skip]
            if not rows:
                continue
            index = torch.tensor(rows, device=device)
            began = time.perf_counter()
            result = self.engines[config.key](inputs[index], targets[index],
                                              indices=_noise_indices([prepared.cases[i] for i in rows]))
            maps = result.maps().to(device)
            curves = self._perturbation_curves(inputs[index], maps, targets[index]) if self.settings.steps > 0 \
                else None
            scoring = ScoringInputs(maps, boxes[index], valid[index], mask[index], self.settings.tolerance, curves)
            # Every catalog entry of the families this run computes, in catalog order: adding a metric is one entry.
            scores = {name: entry.compute(scoring) for name, entry in METRICS.items() if entry.family in families}
            seconds = (time.perf_counter() - began) / len(rows)
            columns = {name: value.detach().cpu().tolist() for name, value in scores.items()}
            probabilities = result.logits.float().softmax(dim=1).cpu()
            finite = torch.isfinite(maps).flatten(1).all(dim=1).tolist()  # one check per batch, not per row
            for j, i in enumerate(rows):
                case = prepared.cases[i]
                if not finite[j]:  # NaN would score as a miss or an energy of 0, inf as NaN: not a result
                    records.append({"case": case.case_id, "config": config.key, "method": config.method,
                                    "sip": config.sip.label if config.sip else "none",
                                    "error": "the map holds NaN or inf values, so it was not scored"})
                    continue
                record = {"case": case.case_id, "image": str(case.image) if case.image else case.case_id,
                          "target": case.target, "target_name": self.classifier.classes[case.target],
                          "config": config.key, "method": config.method,
                          "sip": config.sip.label if config.sip else "none",
                          "prob": float(probabilities[j, case.target]),
                          "predicted": int(probabilities[j].argmax()),
                          "box_fraction": float(box_fraction[i]), "seconds": seconds,
                          **{name: float(values[j]) for name, values in columns.items()}}
                if keep_maps:
                    record["_map"] = maps[j].cpu().numpy().astype(np.float32)
                records.append(record)
        return records

    def _predictor(self, example: torch.Tensor) -> PerturbationPredictor:
        """The forward-only model of the perturbation passes (BatchNorm folded, chunked), made once."""
        if self._predictor_cache is None:
            self._predictor_cache = PerturbationPredictor(self.classifier.module, example, self.settings.compile)
        return self._predictor_cache

    def _perturbation_curves(self, inputs: torch.Tensor, maps: torch.Tensor,
                             targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """The deletion/insertion probability curves (name -> B x (steps + 1)) that perturbation metrics read."""
        predict = self._predictor(inputs)
        steps, chunk, module = self.settings.steps, predict.chunk, predict.module
        with torch.inference_mode(), evaluation_mode(module):
            return metrics.perturbation_curve_set(predict, inputs, maps, targets, steps=steps, chunk=chunk)


def _noise_indices(cases: list[Case]) -> torch.Tensor:
    """The engine's per-row seed indices: each case's own (``Case.noise_index``), not its row in the batch."""
    return torch.tensor([case.noise_index for case in cases], dtype=torch.int64)
