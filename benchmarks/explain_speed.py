"""Images per second of each attribution method, and plain `grad` against a bare forward+backward.

    python benchmarks/explain_speed.py [--rounds 5] [--out benchmarks/results/explain_speed.json]

Models: resnet18 (random init: speed does not depend on the weights) and efficientnet_lite0,
at batch 1 and 16, on CPU, from preprocessed tensors (image decoding is not timed). The
"bare" row is one forward and one backward pass of the model itself, with nothing from
sipgrad or captum; `grad / bare` should be within 1.10.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleaved, print_table, write_json  # noqa: E402

import sipgrad  # noqa: E402

METHOD_OPTIONS = {"smoothgrad": {"smoothgrad_samples": 8}, "ig": {"ig_steps": 16}}


def bare_forward_backward(module: torch.nn.Module, inputs: torch.Tensor):
    def run():
        x = inputs.detach().requires_grad_(True)
        logits = module(x)
        chosen = logits.detach().argmax(1)
        grad, = torch.autograd.grad(logits.gather(1, chosen[:, None]).sum(), x)
        return grad.abs()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--out", default="benchmarks/results/explain_speed.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for name in ("resnet18", "efficientnet_lite0"):
        model = sipgrad.load_model(name, pretrained=name == "efficientnet_lite0")
        for batch in map(int, args.batches.split(",")):
            inputs = torch.randn(batch, 3, 224, 224)
            variants = {"bare fwd+bwd": bare_forward_backward(model.module, inputs)}
            for method in sipgrad.METHODS:
                options = METHOD_OPTIONS.get(method, {})
                variants[method] = (lambda m=method, o=options: sipgrad.explain(model, inputs, method=m,
                                                                                batch_size=batch, **o))
            times = interleaved(variants, rounds=args.rounds)
            for variant, seconds in times.items():
                rows.append({"model": name, "batch": batch, "variant": variant, "images/s": batch / seconds,
                             "s/batch": seconds, "vs bare": seconds / times["bare fwd+bwd"],
                             "options": str(METHOD_OPTIONS.get(variant, ""))})
            print(f"{name} batch {batch}: grad / bare = {times['grad'] / times['bare fwd+bwd']:.3f}")
    print()
    print_table(rows, ["model", "batch", "variant", "images/s", "s/batch", "vs bare", "options"])
    write_json(args.out, rows, rounds=args.rounds)


if __name__ == "__main__":
    main()
