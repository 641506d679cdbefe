"""Reverse vs forward mode hypergradients: time and peak memory as the unroll grows.

    python benchmarks/hypergradient_modes.py [--steps 10,50,200] [--hidden 128]

Problem: an MLP (64 -> hidden -> 10) on scikit-learn's digits, SGD with momentum and
weight decay unrolled for T steps on mini-batches of 64, validation loss on held-out
digits; hypergradients w.r.t. lr, momentum and weight decay. Each (mode, T) runs in a fresh
process, so its peak resident memory is its own. Reverse mode keeps the whole unrolled
graph (memory grows with T) and needs one pass; forward mode keeps nothing across steps
but needs one pass per hyperparameter (3 here).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import print_table, write_json  # noqa: E402

CHILD = r"""
import json, resource, sys, time
import torch, torch.nn.functional as F
from sklearn.datasets import load_digits
from sipgrad.engines import hypergradient, module_losses
mode, steps, hidden = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
features, labels = load_digits(return_X_y=True)
x, y = torch.tensor(features / 16.0, dtype=torch.float32), torch.tensor(labels)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 10))
batches = [(x[i:i + 64], y[i:i + 64]) for i in range(0, 1280, 64)]
train_loss, val_loss, params = module_losses(model, F.cross_entropy, batches, (x[1280:], y[1280:]))
hyper = {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4}
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
began = time.perf_counter()
result = hypergradient(train_loss, val_loss, params, hyper, steps, mode=mode)
seconds = time.perf_counter() - began
peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps({"seconds": seconds, "peak": peak, "val_loss": result.val_loss, "grads": result.grads}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default="10,50,200")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--out", default="benchmarks/results/hypergradient_modes.json")
    args = parser.parse_args()
    rows = []
    for steps in map(int, args.steps.split(",")):
        results = {}
        for mode in ("reverse", "forward"):
            done = subprocess.run([sys.executable, "-c", CHILD, mode, str(steps), str(args.hidden)],
                                  check=True, capture_output=True, text=True)
            results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
        gap = max(abs(results["forward"]["grads"][k] - results["reverse"]["grads"][k]) /
                  max(abs(results["reverse"]["grads"][k]), 1e-12) for k in results["reverse"]["grads"])
        for mode, result in results.items():
            rows.append({"steps": steps, "mode": mode, "seconds": result["seconds"], "peak MiB": result["peak"],
                         "val loss": result["val_loss"], "d/d lr": result["grads"]["lr"],
                         "max rel. gap fwd/rev": gap})
            print(f"T={steps} {mode}: {result['seconds']:.2f}s, {result['peak']:.0f} MiB", flush=True)
    print()
    print_table(rows, ["steps", "mode", "seconds", "peak MiB", "val loss", "d/d lr", "max rel. gap fwd/rev"])
    write_json(args.out, rows, hidden=args.hidden)


if __name__ == "__main__":
    main()
