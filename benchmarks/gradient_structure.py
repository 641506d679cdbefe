"""Per-example gradients: torch.func (vmap over grad) vs a Python loop, and the Frequent Directions update.

    python benchmarks/gradient_structure.py [--batch-sizes 64,256] [--rounds 7] [--out FILE]

For the small models of ``sipgrad.analysis.models`` on digits-shaped inputs (1 x 8 x 8),
each batch size times, side by side in interleaved rounds (median over rounds):

* ``vmap``: ``sipgrad.analysis.per_example.per_example_gradients`` (one vectorised pass);
* ``loop``: one forward and backward per example, gradients copied out (the reference
  the tests compare against);
* ``fd``: one ``LayerwiseSketch.update`` with the batch's gradients (k = 16, sketch 32 rows
  per layer), the streaming-PCA cost pca-sgd adds per step.

The numbers agree (checked here once per row, max abs difference printed) before timing.

A second table checks Frequent Directions on real gradients: the per-example gradients of
1,024 digits (MLP at initialisation, seed 0), streamed in batches of 64 into a sketch of 2k
rows, against the exact top-k of the full 1024 x P matrix, per layer: the largest principal
angle, and the share of the optimal rank-k energy ||A V_k||_F^2 / ||A_k||_F^2 that the sketch's
directions capture (angles are only meaningful where the spectrum has a gap at k; the energy
share always is).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleaved, print_table, write_json  # noqa: E402

from sipgrad.analysis.models import small_model  # noqa: E402
from sipgrad.analysis.per_example import LayerLayout, per_example_gradients  # noqa: E402
from sipgrad.analysis.streaming_pca import FrequentDirections, LayerwiseSketch, principal_angles  # noqa: E402
from sipgrad.datasets import load_digits  # noqa: E402


def loop_gradients(model, inputs, labels) -> dict[str, torch.Tensor]:
    rows = []
    for x, y in zip(inputs, labels):
        model.zero_grad()
        F.cross_entropy(model(x[None]), y[None]).backward()
        rows.append([p.grad.clone() for p in model.parameters()])
    return {name: torch.stack([row[i] for row in rows]) for i, (name, _) in enumerate(model.named_parameters())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", default="64,256")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", default="benchmarks/results/gradient_structure.json")
    args = parser.parse_args()
    rows = []
    for name in ("mlp", "cnn"):
        model = small_model(name, (1, 8, 8))
        for batch in map(int, args.batch_sizes.split(",")):
            generator = torch.Generator().manual_seed(batch)
            inputs, labels = torch.rand(batch, 1, 8, 8, generator=generator), torch.randint(0, 10, (batch,),
                                                                                           generator=generator)
            vectorised, _ = per_example_gradients(model, inputs, labels)
            looped = loop_gradients(model, inputs, labels)
            gap = max(float((vectorised[k] - looped[k]).abs().max()) for k in looped)
            layout = LayerLayout.of(dict(model.named_parameters()))
            layer_rows = layout.flatten(vectorised, batch_dims=1)
            sketch = LayerwiseSketch({layer: layout.size(layer) for layer in layout.layers}, k=16)
            seconds = interleaved({
                "vmap": lambda: per_example_gradients(model, inputs, labels),
                "loop": lambda: loop_gradients(model, inputs, labels),
                "fd": lambda: sketch.update(layer_rows),
            }, rounds=args.rounds)
            rows.append({"model": name, "parameters": sum(p.numel() for p in model.parameters()), "batch": batch,
                         "vmap ms": 1000 * seconds["vmap"], "loop ms": 1000 * seconds["loop"],
                         "speed-up": seconds["loop"] / seconds["vmap"], "fd update ms": 1000 * seconds["fd"],
                         "max abs diff": gap})
    print_table(rows, ["model", "parameters", "batch", "vmap ms", "loop ms", "speed-up", "fd update ms",
                       "max abs diff"])
    accuracy = sketch_accuracy()
    print()
    print_table(accuracy, ["layer", "parameters", "k", "sketch rows", "largest angle (rad)", "energy share"])
    write_json(args.out, rows, rounds=args.rounds, command=" ".join(["python", *sys.argv]), sketch_accuracy=accuracy)


def sketch_accuracy(ks: tuple[int, ...] = (10, 16), examples: int = 1024, batch: int = 64) -> list[dict]:
    data = load_digits(seed=0)
    model = small_model("mlp", data.image_shape, seed=0)
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[:examples]
    gradients, _ = per_example_gradients(model, data.train.inputs[order], data.train.labels[order])
    layout = LayerLayout.of(dict(model.named_parameters()))
    out = []
    for layer, matrix in layout.flatten(gradients, batch_dims=1).items():
        matrix = matrix.double()
        exact = torch.linalg.svd(matrix, full_matrices=False)
        for k in ks:
            sketch = FrequentDirections(matrix.shape[1], 2 * k)
            for start in range(0, examples, batch):
                sketch.update(matrix[start:start + batch])
            directions = sketch.components(k)
            optimal = float(exact.S[:k].square().sum())
            out.append({"layer": layer, "parameters": matrix.shape[1], "k": k, "sketch rows": 2 * k,
                        "largest angle (rad)": float(principal_angles(directions, exact.Vh[:k]).max()),
                        "energy share": float((matrix @ directions.T).square().sum()) / optimal})
    return out


if __name__ == "__main__":
    main()
