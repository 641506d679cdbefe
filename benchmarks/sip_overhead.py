"""Cost of SIP: grad and ig with and without SIP, side by side in one run.

    python benchmarks/sip_overhead.py [--models resnet18,vgg16,efficientnet_lite0] [--rounds 3]

Target: SIP adds at most 5% at batch 16 on CPU. Random-init weights for the torchvision
models (speed does not depend on them); IG uses few steps to keep the run short (its
overhead ratio does not depend on the step count: every step is one forward+backward).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleaved, print_table, write_json  # noqa: E402

import sipgrad  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet18,vgg16,efficientnet_lite0")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--sip", default="topq:0.25", help="SIP spec to time (default: topq:0.25)")
    parser.add_argument("--ig-steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/sip_overhead.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for name in args.models.split(","):
        model = sipgrad.load_model(name, pretrained=name == "efficientnet_lite0")
        for batch in map(int, args.batches.split(",")):
            inputs = torch.randn(batch, 3, 224, 224)
            for method in ("grad", "ig"):
                options = {"ig_steps": args.ig_steps, "batch_size": batch} if method == "ig" else {"batch_size": batch}
                times = interleaved({
                    "plain": lambda: sipgrad.explain(model, inputs, method=method, **options),
                    "sip": lambda: sipgrad.explain(model, inputs, method=method, sip=args.sip, **options),
                }, rounds=args.rounds)
                row = {"model": name, "batch": batch, "method": method, "plain s": times["plain"],
                       "sip s": times["sip"], "overhead %": 100 * (times["sip"] / times["plain"] - 1)}
                rows.append(row)
                print(f"{name} b{batch} {method}: {row['overhead %']:+.1f}%", flush=True)
    print()
    print_table(rows, ["model", "batch", "method", "plain s", "sip s", "overhead %"])
    write_json(args.out, rows, sip=args.sip, ig_steps=args.ig_steps, rounds=args.rounds)


if __name__ == "__main__":
    main()
