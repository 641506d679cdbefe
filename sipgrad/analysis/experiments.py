"""The two across-example gradient experiments, whole: what `sipgrad gradients` runs, as library calls.

``spectrum_experiment`` (per-example gradient spectra over batch sizes, optionally after
some SGD steps) and ``projected_training_sweep`` (SGD, momentum and pca-sgd over label
noises and seeds) build the same JSON documents and figures the CLI writes, so the
committed ``docs/data`` files can be reproduced from Python too. They write through
``atomic_write``: a file is either whole or absent, and a sweep's ``train.json`` is
rewritten after every finished run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sipgrad.analysis.example_spectrum import spectra_over_batch_sizes, spectrum_rows
from sipgrad.analysis.gradient_plots import save_accuracy_figure, save_momentum_figure, save_spectrum_figure
from sipgrad.analysis.models import SMALL_MODELS, small_model
from sipgrad.analysis.projected_training import ProjectedTrainConfig, TrainingDiverged, summarize_runs, train_projected
from sipgrad.datasets import SmallDataset, load_dataset
from sipgrad.errors import InterruptedAfterWriting, SipgradError
from sipgrad.io.atomic import write_json

Progress = Callable[[int], None]


@dataclass(frozen=True)
class SpectrumSettings:
    """One spectrum experiment: which model and data, which batch sizes and k, and how far to train first."""

    model: str = "mlp"
    data: str = "digits"
    batch_sizes: tuple[int, ...] = (32, 64, 128, 256, 512, 1024)
    ks: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    train_steps: int = 0
    lr: float = 0.1
    seed: int = 0
    centre: bool = False
    chunk_size: int | None = None

    def __post_init__(self) -> None:
        if self.model not in SMALL_MODELS:
            raise SipgradError(f"unknown model {self.model!r}; choose from {', '.join(SMALL_MODELS)}")
        for name in ("batch_sizes", "ks"):
            values = getattr(self, name)
            if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
                raise SipgradError(f"{name} must be positive whole numbers, got {list(values)}")
        if isinstance(self.train_steps, bool) or not isinstance(self.train_steps, int) or self.train_steps < 0:
            raise SipgradError(f"train_steps must be a whole number >= 0, got {self.train_steps!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise SipgradError(f"lr must be a positive number, got {self.lr}")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise SipgradError(f"chunk_size must be at least 1, got {self.chunk_size}")


def spectrum_experiment(settings: SpectrumSettings, out: Path | None = None, training_progress: Progress | None = None,
                        spectra_progress: Progress | None = None) -> dict:
    """The spectrum document (``rows`` as ``spectrum_rows`` gives them); with ``out``, also spectrum.json and .png.

    ``training_progress(1)`` is called per SGD step of ``train_steps``; ``spectra_progress``
    as ``spectra_over_batch_sizes`` calls it (``len(set(batch_sizes)) + 1`` times).
    """
    data = load_dataset(settings.data, seed=settings.seed)
    model = small_model(settings.model, data.image_shape, data.classes, seed=settings.seed)
    params = None
    if settings.train_steps:
        config = ProjectedTrainConfig(optimizer="sgd", lr=settings.lr, steps=settings.train_steps,
                                      seed=settings.seed, eval_every=settings.train_steps)
        try:
            params = train_projected(model, data, config, settings.model, progress=training_progress).params
        except TrainingDiverged as error:  # name this experiment's settings, not the sweep's run label
            raise SipgradError(f"the train_steps training before the spectra diverged by step {error.step} "
                               f"(SGD at a learning rate of {settings.lr:g}); try a smaller one") from None
    spectra = spectra_over_batch_sizes(model, data.train.inputs, data.train.labels, tuple(settings.batch_sizes),
                                       tuple(settings.ks), params, seed=settings.seed, centre=settings.centre,
                                       chunk_size=settings.chunk_size, progress=spectra_progress)
    rows = spectrum_rows(spectra)
    document = {"command": "spectrum", "model": settings.model, "data": data.name,
                "train steps": settings.train_steps, "seed": settings.seed, "centre": settings.centre, "rows": rows}
    if out is not None:
        write_json(out / "spectrum.json", document)
        try:
            save_spectrum_figure(out / "spectrum.png", rows)
        except KeyboardInterrupt:
            raise InterruptedAfterWriting([out / "spectrum.json"]) from None
    return document


def sweep_configs(optimizers: Iterable[str], label_noises: Iterable[float], seeds: Iterable[int],
                  **settings) -> list[ProjectedTrainConfig]:
    """Every (seed, label noise, optimizer), in that nesting: runs of one seed share weights, labels and batches."""
    optimizers, label_noises = list(optimizers), list(label_noises)
    return [ProjectedTrainConfig(optimizer=optimizer, label_noise=noise, seed=seed, **settings)
            for seed in seeds for noise in label_noises for optimizer in optimizers]


@dataclass
class SweepOutcome:
    """What ``projected_training_sweep`` finished: the ``train.json`` document, and the files written.

    ``interrupted``: Ctrl-C stopped it; ``document["runs"]`` holds the runs finished before.
    """

    document: dict
    planned: int
    interrupted: bool = False
    written: list[Path] = field(default_factory=list)

    @property
    def finished(self) -> int:
        return len(self.document["runs"])


def projected_training_sweep(configs: Sequence[ProjectedTrainConfig], model: str = "mlp", data: str = "digits",
                             out: Path | None = None, progress: Progress | None = None) -> SweepOutcome:
    """Train every config in turn; the document holds the runs and ``summarize_runs``'s table.

    With ``out``, train.json is rewritten after every finished run (an interrupted sweep
    keeps what it finished), then accuracy.png and, when a momentum run is among them,
    momentum.png. Ctrl-C ends the sweep after the runs already finished (``interrupted``);
    before the first one finishes it propagates. The data set is read once per seed.
    """
    if not configs:
        raise SipgradError("no training configurations to run")
    runs: list[dict] = []
    datasets: dict[int, SmallDataset] = {}

    def document() -> dict:
        return {"command": "train", "model": model, "data": data, "runs": runs, "summary": summarize_runs(runs)}

    outcome = SweepOutcome(document(), planned=len(configs))
    try:
        for config in configs:
            if config.seed not in datasets:
                datasets[config.seed] = load_dataset(data, seed=config.seed)
            dataset = datasets[config.seed]
            network = small_model(model, dataset.image_shape, dataset.classes, seed=config.seed)
            runs.append(train_projected(network, dataset, config, model, progress=progress).to_dict())
            if out is not None:
                write_json(out / "train.json", document())
    except KeyboardInterrupt:
        if not runs:
            raise
        outcome.interrupted = True
    outcome.document = document()
    if out is not None:
        write_json(out / "train.json", outcome.document)
        outcome.written = [out / "train.json"]
        try:  # Ctrl-C while drawing: the runs are kept in train.json, and the outcome says it was interrupted
            save_accuracy_figure(out / "accuracy.png", runs)
            outcome.written.append(out / "accuracy.png")
            if save_momentum_figure(out / "momentum.png", runs):
                outcome.written.append(out / "momentum.png")
            else:  # no momentum run now: an earlier sweep's figure would sit beside a train.json without it
                (out / "momentum.png").unlink(missing_ok=True)
        except KeyboardInterrupt:
            outcome.interrupted = True
    return outcome
