"""RFHO's per-step report: what ``all_methods_on_mnist.py`` printed, for each outer step and mode.

Fields, in the seed's order: step, mode, test / validation / training accuracy, validation
error, memory usage of the method (MiB, from the tensors it keeps), number of weights,
hyperparameters and iterations, each hyperparameter as ``name: [value, hypergradient]``,
elapsed seconds; and the process's peak resident memory.

As in the seed, ``value`` is the hyperparameter *after* that step's Adam update, while the
hypergradient and the accuracies belong to the run with the value before it (so step 0
shows eta 0.011 for a run at eta 0.01). ``training accuracy`` is on the whole training
split (RFHO printed it on one mini-batch of 200), ``seconds`` is cumulative per mode and
counts the hypergradients and updates, not the accuracy evaluations.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch

from sipgrad.engines.hypergrad.outer import (
    AdamConfig,
    OuterStep,
    optimize_hyperparameters,
)
from sipgrad.engines.hypergrad.problem import ClassificationProblem

Value = float | list[float]


def peak_process_mib() -> float:
    """The process's peak resident memory so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2 ** 20 if sys.platform == "darwin" else peak / 1024


@dataclass(frozen=True)
class StepReport:
    step: int
    mode: str
    test_accuracy: float
    validation_accuracy: float
    training_accuracy: float
    validation_error: float
    state_mib: float
    weights: int
    iterations: int
    seconds: float
    hyperparameters: dict[str, tuple[Value, Value]]
    peak_process_mib: float
    device: str = "cpu"  # where both modes ran; the peak process memory is the host's either way

    def to_json(self) -> dict:
        return {
            "step": self.step, "mode": self.mode, "test_accuracy": self.test_accuracy,
            "validation_accuracy": self.validation_accuracy, "training_accuracy": self.training_accuracy,
            "validation_error": self.validation_error, "state_mib": self.state_mib, "weights": self.weights,
            "iterations": self.iterations, "seconds": self.seconds,
            "hyperparameters": {name: {"value": value, "hypergradient": g}
                                for name, (value, g) in self.hyperparameters.items()},
            "peak_process_mib": self.peak_process_mib, "device": self.device,
        }

    def format(self) -> str:
        """The seed's text block (``memory usage`` in MiB, which is what RFHO's "mb" were)."""
        count = sum(len(v) if isinstance(v, list) else 1 for v, _ in self.hyperparameters.values())
        lines = [f"step: {self.step}", f"mode: {self.mode}", f"test accuracy: {self.test_accuracy:.6g}",
                 f"validation accuracy: {self.validation_accuracy:.6g}",
                 f"training accuracy: {self.training_accuracy:.6g}", f"validation error: {self.validation_error:.6g}",
                 f"memory usage (MiB): {self.state_mib:.6f}", f"# weights: {self.weights}",
                 f"# hyperparameters: {count}", f"# iterations: {self.iterations}"]
        lines += [f"{name}: [{_fmt(value)}, {_fmt(g)}]" for name, (value, g) in self.hyperparameters.items()]
        lines += [f"Elapsed time (sec): {self.seconds:.1f}", f"peak process memory (MiB): {self.peak_process_mib:.0f}",
                  f"device: {self.device}"]
        return "\n".join(lines)


def _fmt(value: Value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(map(_fmt, value)) + "]"
    text = f"{value:.8g}"
    return text if any(c in text for c in ".eni") else text + ".0"


def _plain(tensor: torch.Tensor) -> Value:
    return float(tensor) if tensor.dim() == 0 else [float(v) for v in tensor.reshape(-1)]


def step_report(problem: ClassificationProblem, outer: OuterStep, mode: str, seconds: float) -> StepReport:
    weights = outer.result.weights
    data = problem.data
    return StepReport(
        step=outer.step, mode=mode, test_accuracy=problem.accuracy(weights, data.test),
        validation_accuracy=problem.accuracy(weights, data.validation),
        training_accuracy=problem.accuracy(weights, data.train),
        validation_error=outer.result.validation_loss, state_mib=outer.result.state_mib,
        weights=problem.inner.weight_count, iterations=problem.inner.steps, seconds=seconds,
        hyperparameters={name: (_plain(outer.updated[name]), _plain(outer.result.hypergradient[name]))
                         for name in outer.result.hypergradient},
        peak_process_mib=peak_process_mib(), device=str(problem.inner.device))


def run_experiment(problem: ClassificationProblem, hyper: Mapping[str, torch.Tensor], outer_steps: int,
                   modes: Sequence[str] = ("forward", "reverse"), adam: AdamConfig | None = None,
                   mode_options: Mapping[str, dict] | None = None,
                   on_step: Callable[[StepReport], None] | None = None) -> Iterator[StepReport]:
    """RFHO's experiment: for each mode its own outer loop, interleaved step by step.

    The arguments of every mode are checked here, at the call (the steps are then yielded lazily).
    """
    loops = {mode: optimize_hyperparameters(problem.inner, hyper, outer_steps, mode, adam=adam or AdamConfig(),
                                            **(mode_options or {}).get(mode, {}))
             for mode in modes}
    return _interleaved(problem, loops, outer_steps, on_step)


def _interleaved(problem: ClassificationProblem, loops: dict[str, Iterator], outer_steps: int,
                 on_step: Callable[[StepReport], None] | None) -> Iterator[StepReport]:
    elapsed = dict.fromkeys(loops, 0.0)
    for _ in range(outer_steps):
        for mode, loop in loops.items():
            began = time.perf_counter()
            outer = next(loop)
            elapsed[mode] += time.perf_counter() - began
            report = step_report(problem, outer, mode, elapsed[mode])
            if on_step is not None:
                on_step(report)
            yield report
