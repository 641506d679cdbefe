"""The forward-gradient experiments, whole: what `sipgrad fwdgrad` runs, as library calls.

``cosine_experiment`` (the sampler cosine table, and the gradient row-correlation figure)
and ``training_sweep`` (forward-gradient and backprop runs side by side) build the JSON
documents the CLI writes (``cosine.json``, ``forward_train.json``), so the committed
``docs/data`` files can be reproduced from Python; ``read_training_runs`` is the one reader
of ``forward_train.json`` (the CLI's ``plot``). Files are written through ``atomic_write``:
whole or absent.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sipgrad.datasets import SmallDataset
from sipgrad.engines.forward.cosine import CosineTable, cosine_table, gradient_row_correlations
from sipgrad.engines.forward.figures import save_accuracy_curves, save_row_correlations
from sipgrad.engines.forward.models import build_model
from sipgrad.engines.forward.samplers import make_sampler
from sipgrad.engines.forward.training import TrainConfig, TrainResult, train
from sipgrad.errors import InterruptedAfterWriting, SipgradError
from sipgrad.io.atomic import write_json

Curve = tuple[str, list, list]  # (label, steps, test accuracy)


def cosine_experiment(model_name: str, data: SmallDataset, batch_sizes: Sequence[int], samplers: Sequence[str],
                      directions: int, trials: int, seed: int = 0, out: Path | None = None,
                      progress: Callable[[], None] | None = None) -> tuple[dict, CosineTable]:
    """(the cosine.json document, the table) for ``model_name`` on ``data``; with ``out`` also the files.

    ``out`` receives cosine.json and gradient_row_correlation.png (each layer's weight-gradient
    row correlations on the first ``batch_sizes[0]`` training examples, at initialisation).
    Unknown sampler names fail before any work; ``progress()`` is called once per cell.
    """
    for name in samplers:
        make_sampler(name)
    if not batch_sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in batch_sizes):
        raise SipgradError(f"batch_sizes must be positive whole numbers, got {list(batch_sizes)}")
    if not samplers:
        raise SipgradError("no samplers given")
    model = build_model(model_name, data.image_shape, data.classes, seed=seed).train()
    table = cosine_table(model, data.train, list(batch_sizes), list(samplers), directions, trials, seed=seed,
                         progress=progress)
    document = {"model": model_name, "data": data.name, "trials": trials, **table.to_json()}
    if out is not None:
        write_json(out / "cosine.json", document)
        try:
            batch = data.train.subset(slice(0, batch_sizes[0]))
            correlations = gradient_row_correlations(model, batch.inputs, batch.labels)
            save_row_correlations(out / "gradient_row_correlation.png", correlations,
                                  f"{model_name} on {data.name}: row-wise correlation of each layer's weight "
                                  f"gradient (B = {batch_sizes[0]}, at initialisation)")
        except KeyboardInterrupt:
            raise InterruptedAfterWriting([out / "cosine.json"]) from None
    return document, table


def sweep_configs(model: str, gradients: Iterable[str], samplers: Sequence[str], soft: Iterable[bool] = (False,),
                  latent_bits: Iterable[int | None] = (None,), **settings) -> list[TrainConfig]:
    """Every (gradient, sampler, soft weights, latent bits), in that nesting; backprop runs once, not per sampler."""
    soft, latent_bits = list(dict.fromkeys(soft)), list(dict.fromkeys(latent_bits))
    configs = []
    for gradient in dict.fromkeys(gradients):
        for sampler in (samplers if gradient == "forward" else ["gaussian"]):
            for soft_weights in soft:
                for bits in latent_bits:
                    configs.append(TrainConfig(model=model, gradient=gradient, sampler=sampler,
                                               soft_weights=soft_weights, latent_bits=bits, **settings))
    return configs


@dataclass
class TrainingSweep:
    """What ``training_sweep`` finished: the results, the forward_train.json document, and whether Ctrl-C cut it.

    An interrupted sweep's last result is the run Ctrl-C stopped (``interrupted`` set on it).
    """

    results: list[TrainResult]
    document: dict
    planned: int
    written: list[Path] = field(default_factory=list)
    interrupted_while_drawing: bool = False  # every run finished and is in the JSON; the figure may be missing

    @property
    def interrupted(self) -> bool:
        return self.interrupted_while_drawing or any(result.interrupted for result in self.results)

    @property
    def finished(self) -> int:
        return sum(not result.interrupted for result in self.results)


def training_sweep(configs: Sequence[TrainConfig], data: SmallDataset, out: Path | None = None,
                   progress: Callable[[int], None] | None = None,
                   on_run: Callable[[TrainConfig], None] | None = None) -> TrainingSweep:
    """Train every config in turn on ``data``; each run's time is also given relative to the backprop run's.

    With ``out``, forward_train.json is rewritten after every run (so an interrupted sweep
    keeps what it finished) and forward_train.png drawn at the end. Ctrl-C stops the run in
    progress (``train`` keeps its curve so far) and the sweep. ``on_run(config)`` is called
    before each run (a progress bar's label); ``progress(1)`` after every step.
    """
    if not configs:
        raise SipgradError("no training configurations to run")
    model = configs[0].model
    results: list[TrainResult] = []
    document: dict = {"model": model, "data": data.name, "runs": []}
    for config in configs:
        if on_run is not None:
            on_run(config)
        result = train(config, data, progress=progress)
        results.append(result)
        document["runs"].append(result.to_json())
        if out is not None:
            write_json(out / "forward_train.json", document)
        if result.interrupted:
            break
    backprop = next((r for r in results if r.config.gradient == "backprop"), None)
    for run in document["runs"]:
        run["time_vs_backprop"] = run["seconds_per_step"] / backprop.seconds_per_step if backprop else None
    sweep = TrainingSweep(results, document, planned=len(configs))
    if out is not None:
        write_json(out / "forward_train.json", document)
        sweep.written = [out / "forward_train.json"]
        try:
            save_accuracy_curves(out / "forward_train.png",
                                 [(r.label, r.steps, r.test_accuracy) for r in results],
                                 f"{model} on {data.name}: test accuracy")
            sweep.written.append(out / "forward_train.png")
        except KeyboardInterrupt:
            sweep.interrupted_while_drawing = True
    return sweep


def read_training_runs(path: str | Path) -> tuple[list[Curve], str]:
    """(curves, title) from a forward_train.json; every fault is one ``SipgradError`` naming the file and run."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "no such file"
        raise SipgradError(f"{path}: {what} (give the forward_train.json that a training sweep wrote)")
    try:
        document = json.loads(path.read_text())
        curves = [(run["label"], run["steps"], run["test_accuracy"]) for run in document["runs"]]
        title = f"{document['model']} on {document['data']}: test accuracy"
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SipgradError(f"{path}: not a forward_train.json ({type(error).__name__}: {error})") from None
    for number, (label, steps, accuracy) in enumerate(curves, 1):
        where = f"{path}: run {number} ({label})"
        if not (isinstance(steps, list) and isinstance(accuracy, list)):
            raise SipgradError(f"{where}: steps and test_accuracy must be lists")
        if len(steps) != len(accuracy):
            raise SipgradError(f"{where}: {len(steps)} steps but {len(accuracy)} test_accuracy values")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (*steps, *accuracy)):
            raise SipgradError(f"{where}: steps and test_accuracy must hold numbers")
    return curves, title
