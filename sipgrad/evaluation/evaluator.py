"""Scoring explanations against boxes: every method x SIP config on each batch in one pass."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from sipgrad.attribution.explain import evaluation_mode, explain
from sipgrad.attribution.methods import METHODS
from sipgrad.errors import SipgradError
from sipgrad.evaluation import metrics
from sipgrad.evaluation.cases import Case, boxes_to_input, pad_boxes
from sipgrad.evaluation.predictor import PerturbationPredictor
from sipgrad.hooks.sip import SIPConfig
from sipgrad.models.registry import Classifier

PERTURBATION_METRICS = ("deletion_auc", "deletion_aopc", "deletion_lerf_auc", "insertion_auc", "insertion_lerf_auc")
BOX_METRICS = ("pointing", "centre", "energy", "mu_in", "mu_in_w")


@dataclass(frozen=True)
class EvalConfig:
    """One explanation configuration: a method and an optional SIP setting."""

    method: str
    sip: SIPConfig | None

    @property
    def key(self) -> str:
        return f"{self.method}/{self.sip.label if self.sip else 'none'}"


@dataclass(frozen=True)
class EvalSettings:
    """What to compute; ``describe()`` is what a resumed run must agree with."""

    methods: tuple[str, ...] = ("grad",)
    sips: tuple[str, ...] = ("none",)
    sip_options: dict = field(default_factory=dict)
    tolerance: float | None = None  # pointing-game radius in px; None: 15 px at a 224-px input, scaled
    steps: int = 10  # deletion/insertion steps; 0 switches them off
    crop: bool = False
    method_options: dict = field(default_factory=dict)
    compile: bool = False  # torch.compile the perturbation passes; changes speed only, so not in describe()

    def configs(self) -> list[EvalConfig]:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise SipgradError(f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}")
        sips = [SIPConfig.parse(spec, **self.sip_options) for spec in self.sips]
        configs = [EvalConfig(method, sip) for method in self.methods for sip in sips]
        keys = [c.key for c in configs]
        if len(set(keys)) != len(keys):
            raise SipgradError("the same method and SIP config is listed twice")
        return configs

    def describe(self) -> dict[str, Any]:
        options = {k: str(v) for k, v in self.sip_options.items() if v is not None}
        return {"configs": [c.key for c in self.configs()], "sip_options": options, "tolerance": self.tolerance,
                "steps": self.steps, "crop": self.crop,
                "method_options": {k: v for k, v in sorted(self.method_options.items()) if v is not None}}


class Evaluator:
    """Explains batches of cases under every config and scores the maps against the boxes."""

    def __init__(self, classifier: Classifier, settings: EvalSettings) -> None:
        if settings.tolerance is None:  # TorchRay's 15 px is for 224-px inputs; keep the same share of the image
            settings = replace(settings, tolerance=15.0 * classifier.preprocessing.input_size / 224)
        self.classifier = classifier
        self.settings = settings
        self.configs = settings.configs()
        self._predictor_cache: PerturbationPredictor | None = None

    def prepare(self, cases: list[Case]) -> tuple[torch.Tensor, list, torch.Tensor, torch.Tensor]:
        pre = self.classifier.preprocessing
        tensors, geometries = [], []
        for case in cases:
            tensor, geometry = pre.prepare(case.load(), crop=self.settings.crop)
            tensors.append(tensor)
            geometries.append(geometry)
        boxes, valid = pad_boxes([boxes_to_input(case.boxes, g) for case, g in zip(cases, geometries)])
        return torch.stack(tensors), geometries, boxes, valid

    def explain(self, inputs: torch.Tensor, targets: torch.Tensor, config: EvalConfig):
        """The ``Explanation`` of prepared ``inputs`` for ``targets`` under ``config``."""
        return explain(self.classifier, inputs, target=targets, method=config.method, sip=config.sip,
                       batch_size=inputs.shape[0], **self.settings.method_options)

    def evaluate(self, cases: list[Case], configs: list[EvalConfig] | None = None,
                 keep_maps: bool = False) -> list[dict[str, Any]]:
        """Records (one per case and config) for a batch of cases."""
        inputs, _, boxes, valid = self.prepare(cases)
        device = self.classifier.device
        inputs, boxes, valid = inputs.to(device), boxes.to(device), valid.to(device)
        targets = torch.tensor([case.target for case in cases], device=device)
        height, width = inputs.shape[-2:]
        mask = metrics.box_mask(boxes, valid, height, width)
        box_fraction = mask.float().mean(dim=(1, 2))
        centre = metrics.centre_baseline(boxes, valid, height, width, self.settings.tolerance)
        records = []
        for config in configs or self.configs:
            began = time.perf_counter()
            result = self.explain(inputs, targets, config)
            maps = result.input_saliency.to(device)
            scores = {"pointing": metrics.pointing_game(maps, boxes, valid, self.settings.tolerance).float(),
                      "centre": centre.float(), "energy": metrics.energy_pointing_game(maps, mask)}
            scores["mu_in"], scores["mu_in_w"] = metrics.mu_in(maps, mask)
            if self.settings.steps > 0:
                scores.update(self._perturbation_scores(inputs, maps, targets))
            seconds = (time.perf_counter() - began) / len(cases)
            columns = {name: value.detach().cpu().tolist() for name, value in scores.items()}
            for i, case in enumerate(cases):
                record = {"case": case.case_id, "image": str(case.image) if case.image else case.case_id,
                          "target": case.target, "target_name": self.classifier.classes[case.target],
                          "config": config.key, "method": config.method,
                          "sip": config.sip.label if config.sip else "none",
                          "prob": float(result.probabilities[i, case.target]),
                          "predicted": int(result.probabilities[i].argmax()),
                          "box_fraction": float(box_fraction[i]), "seconds": seconds,
                          **{name: float(values[i]) for name, values in columns.items()}}
                if keep_maps:
                    record["_map"] = maps[i].cpu().numpy().astype(np.float32)
                records.append(record)
        return records

    def _predictor(self, example: torch.Tensor) -> PerturbationPredictor:
        """The forward-only model of the perturbation passes (BatchNorm folded, chunked), made once."""
        if self._predictor_cache is None:
            self._predictor_cache = PerturbationPredictor(self.classifier.module, example, self.settings.compile)
        return self._predictor_cache

    def _perturbation_scores(self, inputs: torch.Tensor, maps: torch.Tensor,
                             targets: torch.Tensor) -> dict[str, torch.Tensor]:
        predict = self._predictor(inputs)
        steps, chunk, module = self.settings.steps, predict.chunk, predict.module
        with torch.inference_mode(), evaluation_mode(module):
            curves = metrics.perturbation_curve_set(predict, inputs, maps, targets, steps=steps, chunk=chunk)
        return {"deletion_auc": metrics.curve_auc(curves["deletion"]), "deletion_aopc": metrics.aopc(curves["deletion"]),
                "deletion_lerf_auc": metrics.curve_auc(curves["deletion_lerf"]),
                "insertion_auc": metrics.curve_auc(curves["insertion"]),
                "insertion_lerf_auc": metrics.curve_auc(curves["insertion_lerf"])}
