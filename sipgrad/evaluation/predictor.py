"""The model as the perturbation metrics call it: forward only, fast, in fixed-size chunks.

Deletion/insertion curves push thousands of perturbed copies through the model and never
backpropagate, so they can use a faster model than explanations can:

* an eval-mode copy with BatchNorm folded into the convs (``fold_batchnorm``);
* on CPU, rows in channels-last layout, 4 per pass (measured best on a 2-core CPU); on CUDA,
  64 per pass;
* optionally ``torch.compile`` (``compile=True``). Compiling takes about 30 s the first
  time on a machine (inductor caches it), and the curves then run about 20% faster on a
  2-core CPU (``benchmarks/evaluate_speed.py``), so it pays for long runs only. Every call
  is padded to the full chunk, so the compiled graph sees one input shape and compiles
  once. If compiling fails (no C++ compiler, an unsupported op), the run warns once and
  goes on uncompiled.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch import nn

from sipgrad.models.inference import fold_batchnorm

CPU_CHUNK = 4
CUDA_CHUNK = 64


class PerturbationPredictor:
    """Callable ``rows -> logits`` for ``metrics.perturbation_curve_set``; ``chunk`` rows per call."""

    def __init__(self, module: nn.Module, example: torch.Tensor, compile: bool = False) -> None:
        with torch.inference_mode(False), torch.no_grad():
            self.module = fold_batchnorm(module, example[:2].clone())
        on_gpu = example.device.type == "cuda"
        self.chunk = CUDA_CHUNK if on_gpu else CPU_CHUNK
        self.memory_format = torch.contiguous_format if on_gpu else torch.channels_last
        self._compiled: Callable[[torch.Tensor], torch.Tensor] | None = (
            torch.compile(self.module, dynamic=False) if compile else None)

    @property
    def compiled(self) -> bool:
        """Whether calls go through ``torch.compile`` (false after a failed compile)."""
        return self._compiled is not None

    def _run(self, rows: torch.Tensor) -> torch.Tensor:
        if self._compiled is None:
            return self.module(rows)
        try:
            return self._compiled(rows)
        except Exception as error:  # compiler missing or op unsupported: fall back, once
            warnings.warn(f"torch.compile failed ({type(error).__name__}: {str(error).splitlines()[0][:200]}); "
                          f"running the perturbation passes uncompiled", RuntimeWarning, stacklevel=2)
            self._compiled = None
            return self.module(rows)

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        count = rows.shape[0]
        if self._compiled is not None and count < self.chunk:  # one shape for the compiled graph
            rows = torch.cat([rows, rows.new_zeros((self.chunk - count, *rows.shape[1:]))])
        return self._run(rows.contiguous(memory_format=self.memory_format))[:count]
